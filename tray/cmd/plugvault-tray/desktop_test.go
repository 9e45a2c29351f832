package main

import (
	"bufio"
	"fmt"
	"github.com/plugvault/plugvault/service/api/apitest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plugvault/plugvault/tray/internal/icons"
)

const desktopDir = "../../../desktop"

// TestDesktopFilesValidate runs desktop-file-validate (desktop-file-utils) on the autostart and
// application entries, and checks that what they name exists: the binary this package builds
// and the icon in every hicolor size.
func TestDesktopFilesValidate(t *testing.T) {
	validate := apitest.RequireTool(t, "desktop-file-validate")
	for _, name := range []string{"plugvault-tray.desktop", "plugvault.desktop"} {
		path := filepath.Join(desktopDir, name)
		out, err := exec.Command(validate, path).CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("desktop-file-validate %s: %v\n%s", name, err, out)
		}
		keys := readEntry(t, path)
		if keys["Exec"] != "plugvault-tray" {
			t.Errorf("%s: Exec=%q, want plugvault-tray", name, keys["Exec"])
		}
		for _, size := range icons.Sizes {
			icon := filepath.Join(desktopDir, "icons/hicolor", sizeDir(size), "apps", keys["Icon"]+".png")
			if _, err := os.Stat(icon); err != nil {
				t.Errorf("%s: Icon=%q: %v", name, keys["Icon"], err)
			}
		}
	}
}

// TestInstallPlacesDesktopFiles: make install puts the autostart entry where XDG autostart
// looks (/etc/xdg/autostart) and the application entry and icons under $(PREFIX)/share.
func TestInstallPlacesDesktopFiles(t *testing.T) {
	makeBin := apitest.RequireTool(t, "make")
	cmd := exec.Command(makeBin, "-n", "-C", "../../..", "install", "DESTDIR=/dest", "PREFIX=/usr", "SYSCONFDIR=/etc")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make -n install: %v\n%s", err, out)
	}
	for _, want := range []string{
		"desktop/plugvault-tray.desktop /dest/etc/xdg/autostart/plugvault-tray.desktop",
		"desktop/plugvault.desktop /dest/usr/share/applications/plugvault.desktop",
		"desktop/icons/hicolor/*/apps/*.png",
		"/dest/usr/share/icons/",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("make install does not do %q:\n%s", want, out)
		}
	}
}

func sizeDir(n int) string { return fmt.Sprintf("%dx%d", n, n) }

func readEntry(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	keys := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			keys[k] = v
		}
	}
	return keys
}
