package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/plugvault/plugvault/service/e2e/agentproto"
)

// VMConfig describes one guest boot.
type VMConfig struct {
	Image *Image
	// Share is the host directory shared over 9p: it holds guestagent and overlay/.
	Share string
	// Dir holds the run's sockets and the serial console log.
	Dir string
	// Log receives the harness's progress lines.
	Log io.Writer
	// BootTimeout bounds kernel start to the agent's hello (generous: TCG on shared cores).
	BootTimeout time.Duration
}

// VM is a running guest.
type VM struct {
	cfg     VMConfig
	cmd     *exec.Cmd
	QMP     *QMP
	Agent   *Agent
	Console string // path of the serial console log
	Boot    *agentproto.BootInfo
	Booted  time.Duration // qemu start to the agent's hello

	exited  chan struct{}
	waitErr error

	mu      sync.Mutex
	offset  time.Duration // guest clock minus host clock
	lastSeq uint64
	plugged map[string]*Stick
	nextDev int
}

// KernelArgs is the guest kernel command line. usb-storage.delay_use=0 drops the 1 s the
// driver otherwise waits before scanning a new stick; plugvault.e2e=1 enables the agent unit.
const KernelArgs = "root=/dev/vda rw console=ttyS0 panic=1 usb-storage.delay_use=0 plugvault.e2e=1 systemd.show_status=0"

// StartVM boots the guest under QEMU TCG and waits for the agent's hello.
func StartVM(ctx context.Context, cfg VMConfig) (*VM, error) {
	if cfg.BootTimeout == 0 {
		cfg.BootTimeout = 5 * time.Minute
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	qmpSock := filepath.Join(cfg.Dir, "qmp.sock")
	agentSock := filepath.Join(cfg.Dir, "agent.sock")
	vm := &VM{cfg: cfg, Console: filepath.Join(cfg.Dir, "console.log"), exited: make(chan struct{}),
		plugged: map[string]*Stick{}}
	args := []string{
		// KVM does not work on this kind of host (nested PVM): TCG with every host thread.
		"-accel", "tcg,thread=multi", "-cpu", "max", "-smp", "2", "-m", "2048",
		"-nodefaults", "-nic", "none", "-display", "none", "-no-user-config",
		// A guest reboot ends qemu, so a guest that panics or reboots fails fast.
		"-no-reboot",
		"-kernel", cfg.Image.Kernel, "-initrd", cfg.Image.Initrd, "-append", KernelArgs,
		// snapshot=on: the cached image never changes; writes live until qemu exits.
		"-drive", "file=" + cfg.Image.Root + ",if=virtio,format=raw,snapshot=on",
		"-device", "qemu-xhci,id=xhci",
		"-qmp", "unix:" + qmpSock + ",server=on,wait=off",
		"-chardev", "socket,id=agent,path=" + agentSock + ",server=on,wait=off",
		"-device", "virtio-serial-pci",
		"-device", "virtserialport,chardev=agent,name=" + agentproto.PortName,
		"-virtfs", "local,path=" + cfg.Share + ",mount_tag=host0,security_model=none,id=share",
		"-serial", "file:" + vm.Console,
	}
	vm.cmd = exec.Command("qemu-system-x86_64", args...)
	var stderr strings.Builder
	vm.cmd.Stdout, vm.cmd.Stderr = &stderr, &stderr
	start := time.Now()
	if err := vm.cmd.Start(); err != nil {
		return nil, fmt.Errorf("cannot start qemu: %w", err)
	}
	go func() {
		vm.waitErr = vm.cmd.Wait()
		if stderr.Len() > 0 {
			vm.waitErr = fmt.Errorf("%v: %s", vm.waitErr, strings.TrimSpace(stderr.String()))
		}
		close(vm.exited)
	}()
	fail := func(err error) (*VM, error) {
		vm.Kill()
		return nil, err
	}
	var err error
	if vm.QMP, err = DialQMP(qmpSock, 30*time.Second); err != nil {
		return fail(err)
	}
	conn, err := dialRetry(agentSock, 30*time.Second)
	if err != nil {
		return fail(fmt.Errorf("cannot connect to the agent socket: %w", err))
	}
	vm.Agent = newAgent(conn)
	bootCtx, cancel := context.WithTimeout(ctx, cfg.BootTimeout)
	defer cancel()
	select {
	case <-vm.exited:
		return fail(fmt.Errorf("qemu exited during boot: %v (console: %s)", vm.waitErr, tail(vm.Console, 30)))
	case <-bootCtx.Done():
		return fail(fmt.Errorf("the guest did not boot within %v (console: %s)", cfg.BootTimeout, tail(vm.Console, 30)))
	case boot := <-vm.Agent.hellos:
		vm.Boot = boot
	}
	vm.Booted = time.Since(start)
	if err := vm.syncClock(ctx); err != nil {
		return fail(err)
	}
	return vm, nil
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (vm *VM) syncClock(ctx context.Context) error {
	off, err := vm.Agent.clockOffset(ctx)
	if err != nil {
		return err
	}
	vm.mu.Lock()
	vm.offset = off
	vm.mu.Unlock()
	return nil
}

// HostTime converts a guest timestamp (Unix ns) to host time.
func (vm *VM) HostTime(guestNS int64) time.Time {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return time.Unix(0, guestNS).Add(-vm.offset)
}

// Exec runs argv in the guest as root; a non-zero exit is an error carrying stderr.
func (vm *VM) Exec(ctx context.Context, argv ...string) (string, error) {
	return vm.ExecAs(ctx, 0, nil, argv...)
}

// Shell runs a shell script in the guest as root.
func (vm *VM) Shell(ctx context.Context, script string) (string, error) {
	return vm.Exec(ctx, "/bin/sh", "-ec", script)
}

// ExecAs runs argv as uid with stdin.
func (vm *VM) ExecAs(ctx context.Context, uid int, stdin []byte, argv ...string) (string, error) {
	resp, err := vm.Agent.Do(ctx, agentproto.Request{Op: agentproto.OpExec, Argv: argv, UID: uid, Stdin: stdin,
		TimeoutMS: deadlineMS(ctx, 2*time.Minute)})
	if err != nil {
		return "", err
	}
	if resp.Error != "" || resp.Exit != 0 {
		return string(resp.Stdout), fmt.Errorf("guest: %s: exit %d %s: %s", strings.Join(argv, " "), resp.Exit, resp.Error,
			strings.TrimSpace(string(resp.Stderr)))
	}
	return string(resp.Stdout), nil
}

func deadlineMS(ctx context.Context, def time.Duration) int64 {
	if dl, ok := ctx.Deadline(); ok {
		return time.Until(dl).Milliseconds()
	}
	return def.Milliseconds()
}

// Mark returns the sequence number of the newest event the guest has logged: waits after it
// see only what happens next.
func (vm *VM) Mark(ctx context.Context) (uint64, error) {
	vm.mu.Lock()
	since := vm.lastSeq
	vm.mu.Unlock()
	resp, err := vm.Agent.Do(ctx, agentproto.Request{Op: agentproto.OpEvents, Since: since})
	if err != nil {
		return 0, err
	}
	vm.mu.Lock()
	defer vm.mu.Unlock()
	for _, ev := range resp.Events {
		if ev.Seq > vm.lastSeq {
			vm.lastSeq = ev.Seq
		}
	}
	return vm.lastSeq, nil
}

// Events returns every event logged after since.
func (vm *VM) Events(ctx context.Context, since uint64) ([]agentproto.Event, error) {
	resp, err := vm.Agent.Do(ctx, agentproto.Request{Op: agentproto.OpEvents, Since: since})
	return resp.Events, err
}

// Wait returns the first event after since of kind (and drive path, when given) whose
// properties match; a match value may list alternatives separated by "|". For drive events the
// key "State" matches only events that change State (or the daemon's initial state report).
func (vm *VM) Wait(ctx context.Context, since uint64, kind, path string, match map[string]string, timeout time.Duration) (agentproto.Event, error) {
	resp, err := vm.Agent.Do(ctx, agentproto.Request{Op: agentproto.OpWait, Since: since, Kind: kind, Path: path,
		Match: match, TimeoutMS: timeout.Milliseconds()})
	if err != nil {
		return agentproto.Event{}, err
	}
	if resp.Error != "" {
		return agentproto.Event{}, fmt.Errorf("%s (events seen: %s)", resp.Error, summarize(resp.Events))
	}
	return *resp.Event, nil
}

// summarize renders events briefly for error messages.
func summarize(evs []agentproto.Event) string {
	var parts []string
	for _, ev := range evs {
		switch ev.Kind {
		case agentproto.KindUdev:
			parts = append(parts, fmt.Sprintf("udev %s %s %s", ev.Props["ACTION"], ev.Props["DEVNAME"], ev.Props["ID_FS_TYPE"]))
		case agentproto.KindDrive:
			parts = append(parts, fmt.Sprintf("drive %s state=%s", filepath.Base(ev.Path), ev.State))
		default:
			parts = append(parts, fmt.Sprintf("%s %v", ev.Kind, ev.Props))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "; ")
}

// CallResult is the outcome of a plugvaultd call made in the guest.
type CallResult struct {
	Err       error  // nil on success
	ErrorName string // the D-Bus error name on failure
	JSON      []byte // the result, JSON-encoded
}

// Call makes one plugvaultd call in the guest as uid (0 = root) through service/api, without
// interactive authorization. args is Unlock's passphrase or Verify's snapshot name.
func (vm *VM) Call(ctx context.Context, uid int, method, drive string, args []byte) (CallResult, error) {
	return vm.CallWith(ctx, uid, agentproto.Request{Method: method, Drive: drive, Args: args})
}

// CallWith is Call with every argument of the request (Strings, Options) as req has them.
func (vm *VM) CallWith(ctx context.Context, uid int, req agentproto.Request) (CallResult, error) {
	req.Op, req.UID, req.TimeoutMS = agentproto.OpCall, uid, deadlineMS(ctx, 2*time.Minute)
	resp, err := vm.Agent.Do(ctx, req)
	if err != nil {
		return CallResult{}, err
	}
	res := CallResult{ErrorName: resp.ErrorName, JSON: resp.Status}
	if resp.Error != "" {
		res.Err = errors.New(resp.Error)
	}
	return res, nil
}

// Manifest describes every entry below root in the guest.
func (vm *VM) Manifest(ctx context.Context, root string, extents bool) ([]agentproto.Entry, error) {
	resp, err := vm.Agent.Do(ctx, agentproto.Request{Op: agentproto.OpManifest, Root: root, Extents: extents})
	if err != nil {
		return nil, err
	}
	if resp.Error != "" {
		return resp.Entries, errors.New(resp.Error)
	}
	return resp.Entries, nil
}

// Plug attaches stick as a USB mass-storage device on the xHCI controller and returns when
// QEMU has added it (the guest's udev event follows; wait for it). It returns the host time of
// the plug.
func (vm *VM) Plug(ctx context.Context, s *Stick) (time.Time, error) {
	if err := vm.syncClock(ctx); err != nil {
		return time.Time{}, err
	}
	vm.mu.Lock()
	if _, ok := vm.plugged[s.Name]; ok {
		vm.mu.Unlock()
		return time.Time{}, fmt.Errorf("stick %s is already plugged", s.Name)
	}
	vm.nextDev++
	node, dev := fmt.Sprintf("stick%d", vm.nextDev), fmt.Sprintf("usb%d", vm.nextDev)
	s.node, s.dev = node, dev
	vm.plugged[s.Name] = s
	vm.mu.Unlock()
	if _, err := vm.QMP.Execute("blockdev-add", map[string]any{
		"driver": "raw", "node-name": node,
		"file": map[string]any{"driver": "file", "filename": s.Path},
	}); err != nil {
		return time.Time{}, err
	}
	at := time.Now()
	if _, err := vm.QMP.Execute("device_add", map[string]any{
		"driver": "usb-storage", "bus": "xhci.0", "id": dev, "drive": node,
		"serial": s.Serial, "removable": true,
	}); err != nil {
		vm.QMP.Execute("blockdev-del", map[string]any{"node-name": node})
		return time.Time{}, err
	}
	return at, nil
}

// Pull yanks the stick: device_del is a surprise removal for USB. It returns once QEMU reports
// the device gone and the block node is released, with the host time of the pull.
func (vm *VM) Pull(ctx context.Context, s *Stick) (time.Time, error) {
	vm.mu.Lock()
	_, ok := vm.plugged[s.Name]
	delete(vm.plugged, s.Name)
	vm.mu.Unlock()
	if !ok {
		return time.Time{}, fmt.Errorf("stick %s is not plugged", s.Name)
	}
	deleted := vm.QMP.Expect("DEVICE_DELETED", func(data json.RawMessage) bool {
		var d struct {
			Device string `json:"device"`
		}
		return json.Unmarshal(data, &d) == nil && d.Device == s.dev
	})
	at := time.Now()
	if _, err := vm.QMP.Execute("device_del", map[string]any{"id": s.dev}); err != nil {
		return at, err
	}
	select {
	case <-deleted:
	case <-ctx.Done():
		return at, fmt.Errorf("QEMU never reported %s deleted: %w", s.dev, ctx.Err())
	case <-time.After(time.Minute):
		return at, fmt.Errorf("QEMU never reported %s deleted", s.dev)
	}
	_, err := vm.QMP.Execute("blockdev-del", map[string]any{"node-name": s.node})
	return at, err
}

// PowerCut resets the machine as if its power failed (system_reset: no shutdown in the guest;
// what the guest had not written is lost, what reached the disks stays, the sticks stay
// plugged) and waits for the guest to boot again.
func (vm *VM) PowerCut(ctx context.Context) (*agentproto.BootInfo, error) {
	// -no-reboot would turn the reset into qemu exiting; this one reset must reboot.
	if _, err := vm.QMP.Execute("set-action", map[string]any{"reboot": "reset"}); err != nil {
		return nil, err
	}
	if _, err := vm.QMP.Execute("system_reset", nil); err != nil {
		return nil, err
	}
	bootCtx, cancel := context.WithTimeout(ctx, vm.cfg.BootTimeout)
	defer cancel()
	boot, err := vm.Agent.Hello(bootCtx)
	if err != nil {
		return nil, err
	}
	vm.mu.Lock()
	vm.Boot, vm.lastSeq = boot, 0
	vm.mu.Unlock()
	if _, err := vm.QMP.Execute("set-action", map[string]any{"reboot": "shutdown"}); err != nil {
		return nil, err
	}
	return boot, vm.syncClock(ctx)
}

// Journal returns the guest's journal of this boot, from since on (the zero time: all of it).
func (vm *VM) Journal(ctx context.Context, since time.Time) string {
	argv := []string{"journalctl", "-b", "--no-pager", "-o", "short-precise"}
	if !since.IsZero() {
		vm.mu.Lock()
		guest := since.Add(vm.offset)
		vm.mu.Unlock()
		argv = append(argv, fmt.Sprintf("--since=@%d", guest.Unix()-1))
	}
	out, err := vm.Exec(ctx, argv...)
	if err != nil {
		return fmt.Sprintf("cannot read the journal: %v\n%s", err, out)
	}
	return out
}

// Stop powers the guest off through QMP and waits for qemu to exit.
func (vm *VM) Stop() error {
	if vm.QMP != nil {
		vm.QMP.Execute("quit", nil)
	}
	select {
	case <-vm.exited:
		return nil
	case <-time.After(30 * time.Second):
		vm.Kill()
		return errors.New("qemu did not quit; killed it")
	}
}

// Kill ends qemu at once.
func (vm *VM) Kill() {
	if vm.cmd != nil && vm.cmd.Process != nil {
		vm.cmd.Process.Kill()
		<-vm.exited
	}
}
