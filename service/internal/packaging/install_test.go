package packaging

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plugvault/plugvault/service/api/apitest"
)

// TestMakeInstall runs `make install` into a DESTDIR with stub binaries and checks every file
// lands where the unit, the activation file and the documentation say, with its mode, and
// that an administrator's existing config.toml is left alone.
func TestMakeInstall(t *testing.T) {
	mk := apitest.RequireTool(t, "make")
	root := repoRoot(t)
	bin := t.TempDir()
	for _, name := range []string{"plugvaultd", "plugvault-engine", "plugvault", "plugvault-tray"} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dest := t.TempDir()
	adminConf := []byte("# mine, do not touch\nversion = 1\n")
	if err := os.MkdirAll(filepath.Join(dest, "etc", "plugvault"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dest, "etc", "plugvault", "config.toml"), adminConf, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := makeCmd(mk, root, "-s", "install", "DESTDIR="+dest, "PREFIX=/usr", "BIN="+bin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}

	want := map[string]fs.FileMode{
		"usr/libexec/plugvault/plugvaultd":                                  0o755,
		"usr/libexec/plugvault/plugvault-engine":                            0o755,
		"usr/bin/plugvault":                                                 0o755,
		"usr/bin/plugvault-tray":                                            0o755,
		"usr/lib/systemd/system/plugvaultd.service":                         0o644,
		"usr/lib/systemd/catalog/plugvault.catalog":                         0o644,
		"usr/share/dbus-1/system.d/org.plugvault.PlugVault1.conf":           0o644,
		"usr/share/dbus-1/system-services/org.plugvault.PlugVault1.service": 0o644,
		"usr/share/polkit-1/actions/org.plugvault.policy":                   0o644,
		"usr/share/doc/plugvault/config.toml.example":                       0o644,
		"usr/share/doc/plugvault/README.md":                                 0o644,
		"usr/share/bash-completion/completions/plugvault":                   0o644,
		"etc/plugvault/keys":                                                fs.ModeDir | 0o700,
		"etc/plugvault/config.toml":                                         0o600, // the administrator's, untouched
		"etc/xdg/autostart/plugvault-tray.desktop":                          0o644,
		"usr/share/applications/plugvault.desktop":                          0o644,
	}
	for rel, mode := range want {
		fi, err := os.Stat(filepath.Join(dest, rel))
		if err != nil {
			t.Errorf("make install did not create %s: %v", rel, err)
			continue
		}
		if got := fi.Mode() & (fs.ModeDir | fs.ModePerm); got != mode {
			t.Errorf("%s has mode %v, want %v", rel, got, mode)
		}
	}
	// Nothing else is installed that this test does not know about (icons aside).
	err := filepath.WalkDir(dest, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dest, p)
		if _, ok := want[rel]; !ok && !isUnder(rel, "usr/share/icons") {
			t.Errorf("make install installed %s, which this test does not expect", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dest, "etc", "plugvault", "config.toml")); !bytes.Equal(got, adminConf) {
		t.Errorf("make install changed the existing config.toml:\n%s", got)
	}
	example, _ := os.ReadFile(filepath.Join(root, "service", "internal", "config", "example.toml"))
	if got, _ := os.ReadFile(filepath.Join(dest, "usr", "share", "doc", "plugvault", "config.toml.example")); !bytes.Equal(got, example) {
		t.Error("config.toml.example is not service/internal/config/example.toml")
	}
}

func isUnder(rel, dir string) bool {
	r, err := filepath.Rel(dir, rel)
	return err == nil && r != ".." && !filepath.IsAbs(r) && (len(r) < 3 || r[:3] != "../")
}

// makeCmd runs make in the repository with the Makefile's own defaults: under `make test` the
// outer make's variables travel in MAKEFLAGS, and this run must not see them.
func makeCmd(mk, root string, args ...string) *exec.Cmd {
	cmd := exec.Command(mk, args...)
	cmd.Dir = root
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k != "MAKEFLAGS" && k != "MFLAGS" && k != "MAKELEVEL" {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	return cmd
}
