package main

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestCheckUser(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	if err := checkUser(0, "", logger); err == nil || !strings.Contains(err.Error(), "cannot run as root") {
		t.Errorf("root: %v", err)
	}
	if err := checkUser(1000, "", logger); err != nil || buf.Len() != 0 {
		t.Errorf("a user: %v %q", err, buf.String())
	}
	if err := checkUser(1000, "alice", logger); err != nil || !strings.Contains(buf.String(), "started under sudo") {
		t.Errorf("under sudo: %v %q", err, buf.String())
	}
}

// TestBinaryRefusesRoot: the real binary, started as root, exits 1 before it touches any bus.
// Only root can run it; everyone else is covered by TestCheckUser.
func TestBinaryRefusesRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root can check that the binary refuses root (TestCheckUser covers the logic)")
	}
	bin := buildTray(t)
	cmd := exec.Command(bin)
	cmd.Env = []string{"PATH=/usr/bin:/bin"} // no bus, no display: the check comes first
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out), "cannot run as root") {
		t.Errorf("as root: %v\n%s", err, out)
	}
}

// TestNoLocaleErrorUnderC: under LANG=C.UTF-8, the default of many containers and minimal
// systems, fyne prints nothing about the locale when it initialises (before main), and it
// initialises whatever main then does; the session bus here does not exist, so main ends at
// once.
func TestNoLocaleErrorUnderC(t *testing.T) {
	bin := buildTray(t)
	for _, lang := range []string{"C.UTF-8", "C"} {
		cmd := exec.Command(bin)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=" + lang, "DBUS_SESSION_BUS_ADDRESS=unix:path=/nonexistent/bus"}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "plugvault-tray:") {
			t.Fatalf("LANG=%s: the tray did not stop on the missing bus: %v\n%s", lang, err, out)
		}
		if strings.Contains(string(out), "locale") {
			t.Errorf("LANG=%s: output mentions the locale:\n%s", lang, out)
		}
	}
}
