// Command guestagent runs inside the e2e test VM and lets the host harness drive it. It is
// built static (CGO_ENABLED=0), shared into the guest over 9p and started by
// plugvault-e2e-agent.service, which the guest image enables only when the kernel command line
// carries plugvault.e2e=1, so it can never run on a real machine by accident.
//
// At start it starts watching udev and plugvaultd's D-Bus signals, copies the test overlay
// (configuration, keys, alice's home) onto the root filesystem, installs the plugvault Debian
// package with dpkg -i (its postinst enables and starts plugvaultd), waits for the boot to settle and says hello
// on the virtio-serial port. Then it serves requests (see service/e2e/agentproto) until the VM
// stops. One boot serves many scenarios; the host keeps QMP for plugging, pulling and power.
//
// "guestagent -call" is the same binary re-executed with a test user's credentials: it makes
// one plugvaultd call as that user and prints the Response on stdout.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/plugvault/plugvault/service/e2e/agentproto"
)

// shareDir is where the unit mounts the host's 9p share.
const shareDir = "/run/plugvault-e2e"

// installedMarker records on the root disk that this VM's install is done.
const installedMarker = "/var/lib/plugvault-e2e-installed"

func main() {
	call := flag.Bool("call", false, "make one plugvaultd call described by the JSON request on stdin (used for other users)")
	flag.Parse()
	log.SetFlags(0)
	if *call {
		os.Exit(runCallChild())
	}
	if err := run(); err != nil {
		log.Fatalf("guestagent: %v", err)
	}
}

// agent is the running agent: the event log and the port writer.
type agent struct {
	out   *json.Encoder
	outMu sync.Mutex

	mu      sync.Mutex
	events  []agentproto.Event
	changed chan struct{} // closed and replaced on every new event
	states  map[string]string
}

func run() error {
	a := &agent{changed: make(chan struct{}), states: map[string]string{}}
	var bootLog strings.Builder
	logf := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		log.Print(msg)
		bootLog.WriteString(msg + "\n")
	}
	ctx := context.Background()

	// Watch first, then install and start the daemon, so that nothing it does is missed.
	if err := a.watchUdev(ctx); err != nil {
		return err
	}
	go a.watchBus(ctx, logf)
	go a.watchJournal(ctx, logf)
	installed := install(ctx, logf)

	port, err := openPort()
	if err != nil {
		return err
	}
	a.out = json.NewEncoder(port)

	state := settle(ctx)
	boot := &agentproto.BootInfo{SystemState: state, Installed: installed, Log: bootLog.String()}
	boot.BootID = readTrim("/proc/sys/kernel/random/boot_id")
	boot.Kernel = readTrim("/proc/sys/kernel/osrelease")
	boot.Uptime = readTrim("/proc/uptime")
	a.send(agentproto.Response{Op: agentproto.OpHello, Boot: boot})
	return a.serve(ctx, port)
}

func readTrim(path string) string {
	b, _ := os.ReadFile(path)
	return strings.TrimSpace(string(b))
}

// openPort finds the virtio-serial port by name. The virtio_console module was loaded by the
// unit just before, so the port normally exists already; the bounded retry covers udev still
// creating the device node.
func openPort() (*os.File, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		names, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
		for _, n := range names {
			if readTrim(n) == agentproto.PortName {
				dev := "/dev/" + filepath.Base(filepath.Dir(n))
				f, err := os.OpenFile(dev, os.O_RDWR, 0)
				if err == nil {
					return f, nil
				}
				if time.Now().After(deadline) {
					return nil, fmt.Errorf("cannot open %s: %w", dev, err)
				}
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("cannot find the virtio-serial port %s", agentproto.PortName)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// install copies the overlay (the test configuration, keys and alice's home) onto the root
// filesystem, then installs the plugvault package with dpkg -i, whose maintainer scripts
// reload the bus policy, enable and start the service. It reports whether plugvaultd was
// installed.
func install(ctx context.Context, logf func(string, ...any)) bool {
	overlay := filepath.Join(shareDir, "overlay")
	if _, err := os.Stat(overlay); err != nil {
		logf("no install overlay: %v", err)
		return false
	}
	// The root disk outlives a guest reset (the power-cut scenario): install once per VM, or
	// the copy would rewrite alice's home while the daemon backs it up after the reboot.
	if _, err := os.Stat(installedMarker); err == nil {
		_, err := os.Stat("/usr/lib/systemd/system/plugvaultd.service")
		logf("installed by an earlier boot of this VM")
		return err == nil
	}
	// Bounded generously: over 9p on loaded shared cores the copy took more than 2 minutes.
	if out, err := runCmd(ctx, 10*time.Minute, "cp", "-a", overlay+"/.", "/"); err != nil {
		logf("cannot copy the install overlay: %v: %s", err, out)
		return false
	}
	logf("install overlay copied")
	deb := filepath.Join(shareDir, agentproto.DebCurrent)
	if _, err := os.Stat(deb); err != nil {
		logf("no plugvault package in the share; not installing it")
		os.WriteFile(installedMarker, nil, 0o644)
		return false
	}
	// The image carries every dependency, so dpkg -i never leaves the package half-configured.
	if out, err := runCmd(ctx, 3*time.Minute, "dpkg", "-i", deb); err != nil {
		logf("dpkg -i %s: %v: %s", agentproto.DebCurrent, err, out)
		return false
	}
	if out, err := runCmd(ctx, time.Minute, "systemctl", "is-active", "plugvaultd.service"); err != nil {
		logf("plugvaultd is not active after dpkg -i: %v: %s", err, out)
		return false
	}
	logf("plugvault package installed; plugvaultd enabled and started by its postinst")
	if err := os.WriteFile(installedMarker, nil, 0o644); err != nil {
		logf("cannot mark the install done: %v", err)
	}
	return true
}

// settle waits until systemd has finished booting and returns the system state.
func settle(ctx context.Context) string {
	out, _ := runCmd(ctx, 3*time.Minute, "systemctl", "is-system-running", "--wait")
	return strings.TrimSpace(out)
}

func runCmd(ctx context.Context, timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// record appends an event to the log and wakes every waiter.
func (a *agent) record(ev agentproto.Event) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ev.Seq = uint64(len(a.events)) + 1
	ev.Time = time.Now().UnixNano()
	if ev.Kind == agentproto.KindDrive {
		if s, ok := ev.Props["State"]; ok {
			a.states[ev.Path] = s
		}
		ev.State = a.states[ev.Path]
	}
	a.events = append(a.events, ev)
	close(a.changed)
	a.changed = make(chan struct{})
}

// watchUdev runs udevadm monitor and records every processed block event with its
// properties. It returns once the monitor is listening.
func (a *agent) watchUdev(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, "udevadm", "monitor", "--udev", "--property", "--subsystem-match=block")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("cannot start udevadm monitor: %w", err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		var props map[string]string
		readyOnce := sync.OnceFunc(func() { close(ready) })
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "UDEV - the event"):
				readyOnce()
			case strings.HasPrefix(line, "UDEV "):
				props = map[string]string{}
			case line == "":
				if props != nil {
					a.record(agentproto.Event{Kind: agentproto.KindUdev, Props: props})
					props = nil
				}
			case props != nil:
				if k, v, ok := strings.Cut(line, "="); ok {
					props[k] = v
				}
			}
		}
		readyOnce()
		log.Printf("udevadm monitor ended: %v", cmd.Wait())
	}()
	select {
	case <-ready:
		return nil
	case <-time.After(30 * time.Second):
		return errors.New("cannot start udevadm monitor: it never said it was listening")
	}
}

// waitEvent returns the first event after since that matches, or an error at the deadline.
func (a *agent) waitEvent(ctx context.Context, req agentproto.Request) (agentproto.Event, error) {
	timeout := time.Duration(req.TimeoutMS) * time.Millisecond
	if timeout <= 0 {
		timeout = time.Minute
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	next := req.Since
	for {
		a.mu.Lock()
		for ; next < uint64(len(a.events)); next++ {
			ev := a.events[next]
			if matches(ev, req) {
				a.mu.Unlock()
				return ev, nil
			}
		}
		ch := a.changed
		a.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			return agentproto.Event{}, fmt.Errorf("no %s event matching %v after event %d within %v", req.Kind, req.Match, req.Since, timeout)
		case <-ctx.Done():
			return agentproto.Event{}, ctx.Err()
		}
	}
}

func matches(ev agentproto.Event, req agentproto.Request) bool {
	return agentproto.Matches(ev, req.Kind, req.Path, req.Match)
}

func (a *agent) eventsSince(since uint64) []agentproto.Event {
	a.mu.Lock()
	defer a.mu.Unlock()
	if since >= uint64(len(a.events)) {
		return nil
	}
	return append([]agentproto.Event(nil), a.events[since:]...)
}

func (a *agent) send(r agentproto.Response) {
	a.outMu.Lock()
	defer a.outMu.Unlock()
	if err := a.out.Encode(r); err != nil {
		log.Printf("cannot answer request %d: %v", r.ID, err)
	}
}

// serve reads requests until the port fails. A read of 0 bytes means the host side is not
// connected (virtio-serial returns EOF then); the agent waits for it to come back.
func (a *agent) serve(ctx context.Context, port *os.File) error {
	r := bufio.NewReaderSize(port, 1<<20)
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			var req agentproto.Request
			if jerr := json.Unmarshal(line, &req); jerr != nil {
				a.send(agentproto.Response{Error: "cannot parse request: " + jerr.Error()})
			} else {
				go a.handle(ctx, req)
			}
			continue
		}
		if errors.Is(err, io.EOF) {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		if err != nil {
			return fmt.Errorf("cannot read the port: %w", err)
		}
	}
}

func (a *agent) handle(ctx context.Context, req agentproto.Request) {
	resp := agentproto.Response{ID: req.ID, Op: req.Op}
	switch req.Op {
	case agentproto.OpNow:
		resp.Time = time.Now().UnixNano()
	case agentproto.OpExec:
		execute(ctx, req, &resp)
	case agentproto.OpWait:
		ev, err := a.waitEvent(ctx, req)
		if err != nil {
			resp.Error = err.Error()
			resp.Events = a.eventsSince(req.Since)
		} else {
			resp.Event = &ev
		}
	case agentproto.OpEvents:
		resp.Events = a.eventsSince(req.Since)
	case agentproto.OpCall:
		if req.UID > 0 {
			callAs(ctx, req, &resp)
		} else {
			call(ctx, req, &resp)
		}
	case agentproto.OpManifest:
		entries, err := manifest(req.Root, req.Extents)
		resp.Entries = entries
		if err != nil {
			resp.Error = err.Error()
		}
	default:
		resp.Error = "unknown op " + req.Op
	}
	resp.Time = time.Now().UnixNano()
	a.send(resp)
}

// execute runs req.Argv, as req.UID when it is not root.
func execute(ctx context.Context, req agentproto.Request, resp *agentproto.Response) {
	if len(req.Argv) == 0 {
		resp.Error = "exec: empty argv"
		return
	}
	timeout := time.Duration(req.TimeoutMS) * time.Millisecond
	if timeout <= 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, req.Argv[0], req.Argv[1:]...)
	cmd.Stdin = strings.NewReader(string(req.Stdin))
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if req.UID > 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(req.UID), Gid: uint32(req.UID)}}
		cmd.Dir = "/"
	}
	err := cmd.Run()
	resp.Stdout, resp.Stderr = []byte(stdout.String()), []byte(stderr.String())
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		resp.Exit = ee.ExitCode()
		if ctx.Err() != nil {
			resp.Error = fmt.Sprintf("%s timed out after %v", req.Argv[0], timeout)
		}
	case err != nil:
		resp.Error = err.Error()
		resp.Exit = -1
	}
}
