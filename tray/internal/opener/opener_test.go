package opener

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestXDGRefusesUncleanPaths(t *testing.T) {
	for _, dir := range []string{"relative", "-option", "/a/../b", "/a/", "file:///etc"} {
		if err := (XDG{}).Open(context.Background(), dir); err == nil {
			t.Errorf("%q accepted", dir)
		}
	}
}

// TestXDGRunsXdgOpen: the directory reaches xdg-open as its only argument.
func TestXDGRunsXdgOpen(t *testing.T) {
	bin := t.TempDir()
	out := filepath.Join(bin, "out")
	script := "#!/bin/sh\nprintf '%s|' \"$@\" > " + out + ".tmp && mv " + out + ".tmp " + out + "\n"
	if err := os.WriteFile(filepath.Join(bin, "xdg-open"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+":/usr/bin:/bin")
	if err := (XDG{}).Open(context.Background(), "/run/plugvault/browse/x y"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second) // only turns a hang into a failure
	for {
		b, err := os.ReadFile(out)
		if err == nil {
			if got := string(b); got != "/run/plugvault/browse/x y|" {
				t.Errorf("xdg-open got %q", got)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("xdg-open never ran")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestXDGMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if err := (XDG{}).Open(context.Background(), "/tmp"); err == nil || !strings.Contains(err.Error(), "xdg-open is not installed") {
		t.Errorf("%v", err)
	}
}
