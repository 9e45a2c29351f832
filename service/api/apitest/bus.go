// Package apitest helps test clients of the contract (the CLI, the tray) and the daemon itself:
// a private dbus-daemon that behaves like the system bus, a fake plugvaultd that implements
// the contract in memory and records every call, the checks that hold a service (the daemon
// or the fake) to the contract (CheckMethods, CheckProperties), and the one rule for tests
// that need something from the machine (Require, RequireRoot, RequireTool: skip on a laptop, fail under
// CI=true).
//
// It starts a real dbus-daemon binary, so it imports os/exec; it is test support and is never
// linked into a shipped binary (the dependency test checks that).
package apitest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

// Bus is a private dbus-daemon.
type Bus struct {
	// Address is the bus address, for DBUS_SYSTEM_BUS_ADDRESS or dbus.Connect.
	Address string
	// Dir is the daemon's temporary directory (socket and config).
	Dir string

	bin, conf string
	cmd       *exec.Cmd
}

// busConfig makes a system-type bus that lets everyone own and send: tests that need the real
// policy include it with ExtraConfig.
const busConfig = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>%s</type>
  <listen>unix:path=%s</listen>
  <auth>EXTERNAL</auth>
  %s
</busconfig>
`

const openPolicy = `<policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>`

// BusOptions tunes StartBus.
type BusOptions struct {
	// Type is "system" (default) or "session".
	Type string
	// Policy replaces the open default policy (everyone may own and send) with these
	// busconfig elements, for example `<include>/path/to/org.plugvault.PlugVault1.conf</include>`
	// plus a default policy.
	Policy string
}

// StartBus starts a private dbus-daemon for the test and stops it at cleanup. The caller
// decides whether a missing dbus-daemon skips or fails (see Require and RequireTool); this
// function fails the test.
func StartBus(t testing.TB, opts BusOptions) *Bus {
	t.Helper()
	bin, err := exec.LookPath("dbus-daemon")
	if err != nil {
		t.Fatalf("dbus-daemon is not installed: %v", err)
	}
	if opts.Type == "" {
		opts.Type = "system"
	}
	if opts.Policy == "" {
		opts.Policy = openPolicy
	}
	// Unix socket paths are limited to 108 bytes; t.TempDir() can be longer.
	dir, err := os.MkdirTemp("", "pvbus")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	conf := filepath.Join(dir, "bus.conf")
	sock := filepath.Join(dir, "bus")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(busConfig, opts.Type, sock, opts.Policy)), 0o644); err != nil {
		t.Fatal(err)
	}
	b := &Bus{Dir: dir, bin: bin, conf: conf}
	b.start(t)
	return b
}

// start starts the daemon and sets Address; it is stopped at cleanup.
func (b *Bus) start(t testing.TB) {
	t.Helper()
	cmd := exec.Command(b.bin, "--config-file="+b.conf, "--nofork", "--nopidfile", "--print-address=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("cannot start dbus-daemon: %v", err)
	}
	b.cmd = cmd
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	addrCh := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		addrCh <- strings.TrimSpace(line)
	}()
	select {
	case addr := <-addrCh:
		if addr == "" {
			t.Fatal("dbus-daemon printed no address")
		}
		b.Address = addr
	case <-time.After(10 * time.Second):
		t.Fatal("dbus-daemon did not start within 10 s")
	}
}

// Restart stops the daemon, which drops every connection, and starts a new one that listens
// on the same socket: a bus restarted under its clients, as a desktop session's bus is when
// its service manager restarts it. Address changes only in its guid.
func (b *Bus) Restart(t testing.TB) {
	t.Helper()
	_ = b.cmd.Process.Kill()
	_ = b.cmd.Wait()
	b.start(t)
}

// Conn opens a new connection to the bus, closed at cleanup.
func (b *Bus) Conn(t testing.TB) *dbus.Conn {
	t.Helper()
	conn, err := dbus.Connect(b.Address)
	if err != nil {
		t.Fatalf("cannot connect to the private bus: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
