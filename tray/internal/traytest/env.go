// Package traytest is test support for the tray: a private X server, and fakes of
// the desktop's D-Bus services the tray talks to: the StatusNotifierWatcher of a panel and an
// org.freedesktop.Notifications server. It starts programs, so it imports os/exec; it is never
// linked into the tray binary (the dependency test checks that).
package traytest

import (
	"bufio"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/plugvault/plugvault/service/api/apitest"
)

// StartXvfb starts a private X server and returns its DISPLAY (":N"); it is stopped at
// cleanup. Xvfb picks a free display number and writes it to fd 3 (-displayfd).
func StartXvfb(t testing.TB) string {
	t.Helper()
	bin := apitest.RequireTool(t, "Xvfb")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(bin, "-displayfd", "3", "-screen", "0", "1024x768x24", "-nolisten", "tcp")
	cmd.ExtraFiles = []*os.File{w} // fd 3
	if err := cmd.Start(); err != nil {
		w.Close()
		t.Fatalf("cannot start Xvfb: %v", err)
	}
	w.Close()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	ch := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(r).ReadString('\n')
		ch <- strings.TrimSpace(line)
	}()
	select {
	case n := <-ch:
		if n == "" {
			t.Fatal("Xvfb printed no display number")
		}
		return ":" + n
	case <-time.After(30 * time.Second):
		t.Fatal("Xvfb did not start within 30 s")
	}
	return ""
}

// ArtifactDir returns where tests save screenshots: $PLUGVAULT_TEST_ARTIFACTS, or a new
// temporary directory that outlives the test (its path is logged).
func ArtifactDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("PLUGVAULT_TEST_ARTIFACTS")
	if dir == "" {
		d, err := os.MkdirTemp("", "plugvault-tray-artifacts")
		if err != nil {
			t.Fatal(err)
		}
		dir = d
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("artifacts in %s", dir)
	return dir
}

// OpenPolicy is an apitest.BusOptions.Policy that lets every user connect, own and send:
// the tray under test runs as an unprivileged user when the tests run as root.
const OpenPolicy = `<policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>`
