package udev

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/plugvault/plugvault/service/api/apitest"
)

// lockedBuffer collects log output from the monitor goroutine.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func ucredOOB(uid uint32) []byte {
	return unix.UnixCredentials(&unix.Ucred{Pid: int32(os.Getpid()), Uid: uid, Gid: uid})
}

var group2 = &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1 << (udevGroup - 1)}

// TestReceiveTrustChecks tests the check function with synthesized credentials and sender
// addresses (the cases the socket test below cannot produce on every machine).
func TestReceiveTrustChecks(t *testing.T) {
	msg := buildMessage("block", "disk", usbDiskAdd)
	if _, err := receive(msg, false, 0, group2, ucredOOB(0)); err != nil {
		t.Fatalf("a valid message from root was dropped: %v", err)
	}
	cases := map[string]struct {
		overflow bool
		flags    int
		from     unix.Sockaddr
		oob      []byte
	}{
		"no credentials":     {from: group2},
		"uid 65534":          {from: group2, oob: ucredOOB(65534)},
		"unicast":            {from: &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: 4242}, oob: ucredOOB(0)},
		"kernel group":       {from: &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1, Pid: 4242}, oob: ucredOOB(0)},
		"truncated":          {flags: unix.MSG_TRUNC, from: group2, oob: ucredOOB(0)},
		"overflowing buffer": {overflow: true, from: group2, oob: ucredOOB(0)},
		"truncated cmsg":     {flags: unix.MSG_CTRUNC, from: group2, oob: ucredOOB(0)},
		"not netlink":        {from: &unix.SockaddrUnix{Name: "x"}, oob: ucredOOB(0)},
		"rights not creds":   {from: group2, oob: unix.UnixRights(0)},
	}
	for name, c := range cases {
		_, err := receive(msg, c.overflow, c.flags, c.from, c.oob)
		if !errors.Is(err, errUntrusted) {
			t.Errorf("%s: want an untrusted drop, got %v", name, err)
		}
	}
	if _, err := receive(msg[:20], false, 0, group2, ucredOOB(0)); err == nil || errors.Is(err, errUntrusted) {
		t.Errorf("a short message from root must fail parsing: %v", err)
	}
}

const childEnv = "PLUGVAULT_UDEV_TEST_SEND_AS_NOBODY"

// TestMain lets the socket test re-run this binary as a sender child (setuid 65534).
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(sendAsChild())
	}
	os.Exit(m.Run())
}

// sendAsChild tries to send a udev message to group 2 and reports the errno: 0 sent, else errno.
func sendAsChild() int {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		fmt.Println("socket:", err)
		return 100
	}
	err = unix.Sendmsg(fd, buildMessage("block", "disk", withProps(usbDiskAdd, "ID_MODEL=FORGED")), nil, group2, 0)
	if err == nil {
		return 0
	}
	fmt.Println("sendmsg:", err)
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return int(errno)
	}
	return 101
}

// TestMonitorSocket runs the real monitor in a fresh network namespace (so no other process on
// the machine sees the forged messages) and sends to group 2 as root. Root (CAP_SETUID) may
// attach any uid in SCM_CREDENTIALS, which is how a message "from uid 65534" is produced at the
// socket level. A child really running as uid 65534 is also tried: the kernel refuses its send
// with EPERM (no CAP_NET_ADMIN), which the test asserts; if a kernel ever allowed it, the
// monitor would have to drop it and the test checks that instead.
func TestMonitorSocket(t *testing.T) {
	apitest.RequireRoot(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		// This thread enters a new netns and is never returned to the scheduler's pool
		// (no UnlockOSThread), so it dies with the goroutine.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("cannot unshare the network namespace: %v", err)
			return
		}
		monitorSocketTest(t)
	}()
	<-done
}

func monitorSocketTest(t *testing.T) {
	logs := &lockedBuffer{}
	mon, err := NewMonitorAt(slog.New(slog.NewTextHandler(logs, nil)), "/sys", t.TempDir())
	if err != nil {
		t.Error(err)
		return
	}
	defer mon.Close()
	// Enumerate uses the monitor's roots: real sysfs, an empty udev database here.
	if evs, err := mon.Enumerate(context.Background()); err != nil || len(evs) != 0 {
		t.Errorf("Enumerate with an empty database = %+v, %v", evs, err)
	}

	sender, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		t.Error(err)
		return
	}
	defer unix.Close(sender)
	send := func(to unix.Sockaddr, oob []byte, msg []byte) {
		t.Helper()
		if err := unix.Sendmsg(sender, msg, oob, to, 0); err != nil {
			t.Errorf("sendmsg: %v", err)
		}
	}
	// next waits for the next delivered event (the guard only keeps a broken test from hanging).
	next := func() (Event, bool) {
		select {
		case ev := <-mon.Events():
			return ev, true
		case <-time.After(30 * time.Second):
			t.Error("no event delivered")
			return Event{}, false
		}
	}
	marker := 0
	// expectOnlyMarker sends a valid event and checks it is the next one delivered, so whatever
	// was sent before it was dropped.
	expectOnlyMarker := func(what string) {
		t.Helper()
		marker++
		m := fmt.Sprintf("MARKER=%d", marker)
		send(group2, ucredOOB(0), buildMessage("block", "disk", withProps(usbDiskAdd, m)))
		ev, ok := next()
		if ok && ev.Prop("MARKER") != fmt.Sprint(marker) {
			t.Errorf("%s was delivered: %+v", what, ev.Props)
		}
	}

	// A genuine event from root arrives, parsed.
	send(group2, ucredOOB(0), buildMessage("block", "disk", usbDiskAdd))
	if ev, ok := next(); ok && (ev.DevName != "/dev/sdb" || ev.Prop("ID_FS_TYPE") != "crypto_LUKS") {
		t.Errorf("bad event: %+v", ev)
	}

	// Forged credentials: dropped by the uid check, and logged.
	send(group2, ucredOOB(65534), buildMessage("block", "disk", withProps(usbDiskAdd, "ID_MODEL=FORGED")))
	expectOnlyMarker("a message with uid 65534")
	if !strings.Contains(logs.String(), "sender uid 65534 is not 0") {
		t.Errorf("the forged message was not dropped by the uid check; log: %s", logs.String())
	}

	// Unicast straight to the monitor's port: dropped.
	var port uint32
	rc, _ := mon.file.SyscallConn()
	_ = rc.Control(func(fd uintptr) {
		if sa, err := unix.Getsockname(int(fd)); err == nil {
			port = sa.(*unix.SockaddrNetlink).Pid
		}
	})
	send(&unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: port}, ucredOOB(0), buildMessage("block", "disk", withProps(usbDiskAdd, "ID_MODEL=UNICAST")))
	expectOnlyMarker("a unicast message")
	if !strings.Contains(logs.String(), "unicast message") {
		t.Errorf("unicast not dropped by the unicast check; log: %s", logs.String())
	}

	// The BPF filter drops other subsystems and kernel-format messages before they reach us.
	before := logs.String()
	send(group2, ucredOOB(0), buildMessage("usb", "usb_device", withProps(usbDiskAdd, "SUBSYSTEM=usb")))
	send(group2, ucredOOB(0), []byte("add@/devices/virtual/block/loop0\x00ACTION=add\x00DEVPATH=/devices/virtual/block/loop0\x00SUBSYSTEM=block\x00MAJOR=7\x00MINOR=0\x00"))
	// A message with a good header but broken properties passes the filter and fails parsing.
	bad := buildMessage("block", "disk", usbDiskAdd)
	send(group2, ucredOOB(0), bad[:len(bad)-3])
	expectOnlyMarker("a filtered message")
	after := strings.TrimPrefix(logs.String(), before)
	if strings.Count(after, "dropped udev message") != 1 || !strings.Contains(after, "cannot parse udev message") {
		t.Errorf("want exactly one drop (the broken one) after the filter; log: %s", after)
	}

	// A real unprivileged sender (a child running as uid 65534).
	// The go test build directory is private to root: run a world-readable copy.
	exe := copyExecutable(t)
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		// Sent: the monitor must have dropped it.
		t.Log("uid 65534 could send to group 2; the monitor dropped it")
		expectOnlyMarker("a message sent by uid 65534")
	case errors.As(err, &ee) && ee.ExitCode() == int(unix.EPERM):
		// The kernel refused it: nothing reaches the monitor.
		t.Log("uid 65534 cannot send to group 2 (EPERM)")
		expectOnlyMarker("after a refused send")
	default:
		t.Errorf("child sender: %v: %s", err, out)
	}

	// Close ends delivery and closes the channel.
	if err := mon.Close(); err != nil {
		t.Error(err)
	}
	for range mon.Events() {
	}
}

// copyExecutable copies the test binary into a directory uid 65534 can traverse.
func copyExecutable(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} { // t.TempDir's parent is 0700 too
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	exe := dir + "/udev.test"
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return exe
}
