package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/e2e/agentproto"
)

// watchBus records plugvaultd's signals (through the same api.Client.Watch the tray uses) as
// events. When the daemon (re)appears it records every drive's full state, so a wait for a
// state that is already reached still matches.
func (a *agent) watchBus(ctx context.Context, logf func(string, ...any)) {
	var c *api.Client
	for {
		var err error
		if c, err = api.Connect(ctx); err == nil {
			break
		}
		// The unit is ordered after dbus.service; this only covers a bus that is still starting.
		logf("cannot connect to the system bus yet: %v", err)
		time.Sleep(time.Second)
	}
	events, err := c.Watch(ctx)
	if err != nil {
		logf("cannot watch plugvaultd: %v", err)
		return
	}
	for ev := range events {
		switch ev.Kind {
		case api.EventServiceUp:
			a.record(agentproto.Event{Kind: agentproto.KindService, Props: map[string]string{"up": "true"}})
			a.recordAllDrives(ctx, c)
		case api.EventServiceDown:
			a.record(agentproto.Event{Kind: agentproto.KindService, Props: map[string]string{"up": "false"}})
		case api.EventDriveChanged:
			a.record(agentproto.Event{Kind: agentproto.KindDrive, Path: string(ev.Drive), Props: stringify(ev.Changed)})
		case api.EventDriveAdded, api.EventDriveRemoved:
			a.record(agentproto.Event{Kind: agentproto.KindDrive, Path: string(ev.Drive),
				Props: map[string]string{"event": map[bool]string{true: "added", false: "removed"}[ev.Kind == api.EventDriveAdded]}})
		}
	}
}

func (a *agent) recordAllDrives(ctx context.Context, c *api.Client) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	drives, err := c.ListDrives(ctx)
	if err != nil {
		a.record(agentproto.Event{Kind: agentproto.KindService, Props: map[string]string{"error": err.Error()}})
		return
	}
	for _, d := range drives {
		st, err := c.DriveStatus(ctx, d)
		if err != nil {
			continue
		}
		props := map[string]string{"initial": "true"}
		for k, v := range st.Props() {
			props[k] = fmt.Sprint(v)
		}
		a.record(agentproto.Event{Kind: agentproto.KindDrive, Path: string(d), Props: props})
	}
}

func stringify(m map[string]dbus.Variant) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = fmt.Sprint(v.Value())
	}
	return out
}

// call makes one plugvaultd call as root (the agent's own credentials).
func call(ctx context.Context, req agentproto.Request, resp *agentproto.Response) {
	ctx, cancel := context.WithTimeout(ctx, timeoutOf(req))
	defer cancel()
	c, err := api.Connect(ctx)
	if err != nil {
		resp.Error = err.Error()
		return
	}
	defer c.Close()
	result, err := dispatch(ctx, c, req)
	if err != nil {
		resp.Error = err.Error()
		resp.ErrorName = api.ErrorName(err)
		var derr dbus.Error
		if errors.As(err, &derr) {
			resp.ErrorName = derr.Name
		}
		return
	}
	if result != nil {
		resp.Status, _ = json.Marshal(result)
	}
}

func timeoutOf(req agentproto.Request) time.Duration {
	if req.TimeoutMS > 0 {
		return time.Duration(req.TimeoutMS) * time.Millisecond
	}
	return 2 * time.Minute
}

// VerifyResult is the JSON result of a Verify call.
type VerifyResult struct {
	Checked  uint64   `json:"checked"`
	Problems []string `json:"problems"`
}

func dispatch(ctx context.Context, c *api.Client, req agentproto.Request) (any, error) {
	opts := api.Options{api.OptNoUserInteraction: true}
	for k, v := range req.Options {
		opts[k] = v
	}
	drive := dbus.ObjectPath(req.Drive)
	switch req.Method {
	case "ListDrives":
		return c.ListDrives(ctx)
	case "Version":
		return c.Version(ctx)
	case "DriveStatus":
		return c.DriveStatus(ctx, drive)
	case "ListSnapshots":
		return c.ListSnapshots(ctx, drive)
	case api.MethodBackupNow:
		return nil, c.BackupNow(ctx, drive, opts)
	case api.MethodCancel:
		return nil, c.Cancel(ctx, drive, opts)
	case api.MethodEject:
		return nil, c.Eject(ctx, drive, opts)
	case api.MethodBrowse:
		return c.Browse(ctx, drive, opts)
	case api.MethodUnlock:
		pass := append([]byte(nil), req.Args...)
		defer clear(pass)
		return nil, c.Unlock(ctx, drive, pass, opts)
	case api.MethodEnroll:
		// As the tray's "Set up a new drive…" calls it: the passphrase and a name, no header
		// backup.
		if len(req.Strings) != 2 {
			return nil, errors.New("enroll takes a device and a name")
		}
		pass := append([]byte(nil), req.Args...)
		defer clear(pass)
		opts[api.OptName] = req.Strings[1]
		p, _, err := c.Enroll(ctx, req.Strings[0], pass, opts)
		return p, err
	case api.MethodRestore:
		if len(req.Strings) != 3 {
			return nil, errors.New("restore takes a snapshot, a path and a destination")
		}
		return nil, c.Restore(ctx, drive, req.Strings[0], req.Strings[1], req.Strings[2], opts)
	case api.MethodCheckPassphrase:
		pass := append([]byte(nil), req.Args...)
		defer clear(pass)
		return nil, c.CheckPassphrase(ctx, drive, pass, opts)
	case api.MethodVerify:
		checked, problems, err := c.Verify(ctx, drive, string(req.Args), opts)
		return VerifyResult{Checked: checked, Problems: problems}, err
	}
	return nil, fmt.Errorf("unknown method %q", req.Method)
}

// callAs re-executes the agent with -call under req.UID, so the daemon sees a caller that is
// really that user (polkit looks at the caller's bus connection credentials).
func callAs(ctx context.Context, req agentproto.Request, resp *agentproto.Response) {
	self, err := os.Executable()
	if err != nil {
		resp.Error = err.Error()
		return
	}
	in, _ := json.Marshal(req)
	ctx, cancel := context.WithTimeout(ctx, timeoutOf(req)+10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, self, "-call")
	cmd.Stdin = strings.NewReader(string(in))
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(req.UID), Gid: uint32(req.UID)}}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		resp.Error = fmt.Sprintf("cannot run the call as uid %d: %v: %s", req.UID, err, stderr.String())
		return
	}
	var child agentproto.Response
	if err := json.Unmarshal(out, &child); err != nil {
		resp.Error = fmt.Sprintf("cannot read the call's answer: %v", err)
		return
	}
	resp.Error, resp.ErrorName, resp.Status = child.Error, child.ErrorName, child.Status
}

// runCallChild is the -call mode: one call as whoever we run as, the answer on stdout.
func runCallChild() int {
	var req agentproto.Request
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fmt.Fprintf(os.Stderr, "cannot read the request: %v\n", err)
		return 2
	}
	var resp agentproto.Response
	call(context.Background(), req, &resp)
	if err := json.NewEncoder(os.Stdout).Encode(resp); err != nil {
		return 1
	}
	return 0
}
