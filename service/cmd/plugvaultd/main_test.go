package main

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/apitest"
	"github.com/plugvault/plugvault/service/internal/buildinfo"
)

func runCmd(args ...string) (int, string, string) {
	var out, errOut strings.Builder
	code := run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestVersion(t *testing.T) {
	code, out, _ := runCmd("--version")
	if code != 0 || out != "plugvaultd "+buildinfo.Version+"\n" {
		t.Errorf("--version: %d %q", code, out)
	}
	if code, _, _ := runCmd("--nope"); code != 2 {
		t.Errorf("unknown flag: exit %d, want 2", code)
	}
}

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.toml")
	for _, args := range [][]string{{"--check-config", missing}, {"--check-config=" + missing}} {
		if code, out, _ := runCmd(args...); code != 0 || !strings.Contains(out, "ok") {
			t.Errorf("%v: %d %q, want 0 (a missing file means defaults)", args, code, out)
		}
	}
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("version = 2\nno_such_key = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runCmd("--check-config", bad)
	if code != 1 || !strings.Contains(errOut, bad) {
		t.Errorf("bad config: %d %q, want 1 and the problems", code, errOut)
	}
}

// serve owns the name before READY=1, sends WATCHDOG=1 when asked to, and STOPPING=1 on the
// way out.
func TestServeNotifiesSystemd(t *testing.T) {
	apitest.RequireTool(t, "dbus-daemon")
	bus := apitest.StartBus(t, apitest.BusOptions{})
	sockDir, err := os.MkdirTemp("", "pvnotify")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "notify")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "100000")
	t.Setenv("WATCHDOG_PID", "")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		errc <- serve(ctx, slog.New(slog.DiscardHandler), filepath.Join(sockDir, "missing.toml"), bus.Address, "")
	}()
	next := func(want string) {
		t.Helper()
		buf := make([]byte, 512)
		_ = l.SetReadDeadline(time.Now().Add(time.Minute))
		for {
			n, err := l.Read(buf)
			if err != nil {
				t.Fatalf("waiting for %s: %v", want, err)
			}
			if string(buf[:n]) == want {
				return
			}
		}
	}
	next("READY=1")
	client := api.NewClient(bus.Conn(t))
	if v, err := client.Version(ctx); err != nil || v != buildinfo.Version {
		t.Errorf("after READY=1: Version = %q, %v", v, err)
	}
	next("WATCHDOG=1")
	cancel()
	next("STOPPING=1")
	if err := <-errc; err != nil {
		t.Errorf("serve: %v", err)
	}
}

// serve returns its error when the daemon cannot start (another process owns the name) rather
// than waiting forever for the drive manager, which only stops when told to.
func TestServeReturnsWhenTheNameIsTaken(t *testing.T) {
	apitest.RequireTool(t, "dbus-daemon")
	bus := apitest.StartBus(t, apitest.BusOptions{})
	other := bus.Conn(t)
	if reply, err := other.RequestName(api.BusName, 0); err != nil || reply != 1 {
		t.Fatalf("cannot own %s for the test: %v %v", api.BusName, reply, err)
	}
	errc := make(chan error, 1)
	go func() {
		errc <- serve(context.Background(), slog.New(slog.DiscardHandler), filepath.Join(t.TempDir(), "missing.toml"), bus.Address, "")
	}()
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), "another process owns it") {
			t.Errorf("serve = %v, want the name conflict", err)
		}
	case <-time.After(2 * time.Minute): // a hang detector, not a timing requirement
		t.Fatal("serve did not return after failing to own the bus name")
	}
}
