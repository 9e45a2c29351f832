package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/apitest"
)

// fixedNow is the clock of every test run, so ages are computed from known times.
var fixedNow = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// env is a private bus with the fake plugvaultd (apitest.FakeService stands for the daemon).
type env struct {
	t    *testing.T
	bus  *apitest.Bus
	fake *apitest.FakeService
	// sysRoot, udevDir and devRoot hold a fake sysfs tree for enroll (see addFakeDisk).
	sysRoot, udevDir, devRoot string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	_, err := exec.LookPath("dbus-daemon")
	apitest.Require(t, err == nil, "dbus-daemon is not installed")
	bus := apitest.StartBus(t, apitest.BusOptions{})
	dir := t.TempDir()
	e := &env{t: t, bus: bus, fake: apitest.StartFakeService(t, bus),
		sysRoot: filepath.Join(dir, "sys"), udevDir: filepath.Join(dir, "udev"), devRoot: filepath.Join(dir, "dev")}
	for _, d := range []string{e.sysRoot, e.udevDir, e.devRoot} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// app builds an app wired to the private bus and the fake sysfs tree.
func (e *env) app(stdin io.Reader, stdout, stderr io.Writer) *app {
	a := newApp(stdin, stdout, stderr)
	a.connect = func(ctx context.Context) (*api.Client, error) {
		return api.NewClient(e.bus.Conn(e.t)), nil
	}
	a.sysRoot, a.udevDataDir, a.devRoot = e.sysRoot, e.udevDir, e.devRoot
	a.now = func() time.Time { return fixedNow }
	return a
}

// run runs the CLI with stdin and returns the exit code, stdout and stderr.
func (e *env) run(stdin string, args ...string) (int, string, string) {
	e.t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := e.app(strings.NewReader(stdin), &out, &errb).run(ctx, args)
	return code, out.String(), errb.String()
}

// lastCall returns the last call of method, failing if there is none.
func (e *env) lastCall(method string) apitest.Call {
	e.t.Helper()
	calls := e.fake.Calls()
	for i := len(calls) - 1; i >= 0; i-- {
		if calls[i].Method == method {
			return calls[i]
		}
	}
	e.t.Fatalf("no %s call; calls: %v", method, calls)
	return apitest.Call{}
}

func (e *env) called(method string) bool {
	for _, c := range e.fake.Calls() {
		if c.Method == method {
			return true
		}
	}
	return false
}

// callOpts returns the a{sv} options of a recorded call (always its last argument).
func callOpts(t *testing.T, c apitest.Call) map[string]any {
	t.Helper()
	m, ok := c.Args[len(c.Args)-1].(map[string]dbus.Variant)
	if !ok {
		t.Fatalf("%v: last argument is %T, not options", c, c.Args[len(c.Args)-1])
	}
	out := map[string]any{}
	for k, v := range m {
		out[k] = v.Value()
	}
	return out
}

// addFakeDisk creates a fake sysfs entry, udev database entries and a device node stand-in for
// a disk with one partition, as the kernel and udev would show a USB stick.
func (e *env) addFakeDisk(name string, removable bool, bus string) string {
	e.t.Helper()
	write := func(path, content string) {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			e.t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			e.t.Fatal(err)
		}
	}
	disk := filepath.Join(e.sysRoot, "class", "block", name)
	rem := "0"
	if removable {
		rem = "1"
	}
	write(filepath.Join(disk, "dev"), "8:208\n")
	write(filepath.Join(disk, "size"), "60062500\n") // sectors of 512 bytes
	write(filepath.Join(disk, "removable"), rem+"\n")
	write(filepath.Join(disk, "device", "vendor"), "SanDisk \n")
	write(filepath.Join(disk, "device", "model"), "Ultra           \n")
	write(filepath.Join(disk, name+"1", "partition"), "1\n")
	write(filepath.Join(disk, name+"1", "dev"), "8:209\n")
	write(filepath.Join(disk, name+"1", "size"), "60060000\n")
	write(filepath.Join(e.udevDir, "b8:208"), "S:disk/by-id/usb-SanDisk_Ultra\nE:ID_BUS="+bus+"\nE:ID_SERIAL_SHORT=4C530001\n")
	write(filepath.Join(e.udevDir, "b8:209"), "E:ID_FS_TYPE=vfat\nE:ID_FS_LABEL=MYSTICK\n")
	// The kernel lists partitions in /sys/class/block too.
	if err := os.Symlink(filepath.Join(name, name+"1"), filepath.Join(e.sysRoot, "class", "block", name+"1")); err != nil {
		e.t.Fatal(err)
	}
	write(filepath.Join(e.devRoot, name), "")
	write(filepath.Join(e.devRoot, name+"1"), "")
	return filepath.Join(e.devRoot, name)
}

// syncBuffer is a writer tests can read while the CLI writes; it signals every write.
type syncBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	wrote chan struct{}
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{wrote: make(chan struct{}, 1)} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	select {
	case b.wrote <- struct{}{}:
	default:
	}
	return n, err
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor blocks until the buffer contains s (at the n-th occurrence), failing after a generous
// safety limit so a broken CLI does not hang the test run.
func (b *syncBuffer) waitFor(t *testing.T, s string, n int) {
	t.Helper()
	limit := time.After(20 * time.Second)
	for strings.Count(b.String(), s) < n {
		select {
		case <-b.wrote:
		case <-limit:
			t.Fatalf("never saw %q (x%d); output so far: %q", s, n, b.String())
		}
	}
}

// openPTY opens a pseudo-terminal pair through /dev/ptmx (no cgo, no third-party module).
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	apitest.Require(t, err == nil, fmt.Sprintf("cannot open /dev/ptmx: %v", err))
	fd := int(m.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("cannot unlock the pty: %v", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("cannot get the pty number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("cannot open the pty slave: %v", err)
	}
	t.Cleanup(func() { s.Close(); m.Close() })
	return m, s
}

// echoed returns what the terminal echoed so far: it writes a marker to the slave side (output
// towards the master) and reads the master up to it.
func echoed(t *testing.T, master, slave *os.File) string {
	t.Helper()
	const marker = "--END-OF-ECHO--"
	if _, err := slave.Write([]byte(marker)); err != nil {
		t.Fatal(err)
	}
	var got []byte
	buf := make([]byte, 256)
	for !bytes.Contains(got, []byte(marker)) {
		n, err := master.Read(buf)
		if err != nil {
			t.Fatalf("cannot read the pty master: %v", err)
		}
		got = append(got, buf[:n]...)
	}
	return strings.TrimSuffix(string(got), marker)
}

// typeLine types line on the terminal and reads it back on the slave side as a program would.
// The terminal echoes input while it processes it, before a read can return it, so the echo is
// then complete and echoed's marker cannot land in the middle of it.
func typeLine(t *testing.T, master, slave *os.File, line string) {
	t.Helper()
	if _, err := master.Write([]byte(line)); err != nil {
		t.Fatal(err)
	}
	var got []byte
	buf := make([]byte, 256)
	for len(got) < len(line) {
		n, err := slave.Read(buf)
		if err != nil {
			t.Fatalf("cannot read the pty slave: %v", err)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != line {
		t.Fatalf("the terminal passed on %q, want %q", got, line)
	}
}

// runAsync runs the CLI in the background and returns a channel with its exit code.
func (e *env) runAsync(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer, args ...string) <-chan int {
	done := make(chan int, 1)
	a := e.app(stdin, stdout, stderr)
	go func() { done <- a.run(ctx, args) }()
	return done
}

func waitCode(t *testing.T, done <-chan int) int {
	t.Helper()
	select {
	case c := <-done:
		return c
	case <-time.After(30 * time.Second):
		t.Fatal("the CLI did not finish")
	}
	return -1
}

func slicesContain(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

type dbusPath = dbus.ObjectPath
