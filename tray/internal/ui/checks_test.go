package ui

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestRestoreChecksFile(t *testing.T) {
	state := t.TempDir()
	t.Setenv("XDG_STATE_HOME", state)
	path, err := checksFile(restoreChecksName)
	if err != nil || path != filepath.Join(state, "plugvault", "restore-checks.json") {
		t.Fatalf("checksFile = %q, %v", path, err)
	}
	if pass, err := checksFile(passChecksName); err != nil || pass != filepath.Join(state, "plugvault", "passphrase-checks.json") {
		t.Errorf("checksFile(passChecksName) = %q, %v", pass, err)
	}
	if m, err := loadChecks(path); err != nil || len(m) != 0 {
		t.Errorf("missing file: %v, %v", m, err)
	}
	at := time.Date(2026, 11, 26, 8, 31, 0, 0, time.UTC)
	if err := saveChecks(path, map[string]time.Time{"uuid-1": at}); err != nil {
		t.Fatal(err)
	}
	m, err := loadChecks(path)
	if err != nil || !m["uuid-1"].Equal(at) || len(m) != 1 {
		t.Errorf("read back %v, %v", m, err)
	}
	if fi, err := os.Stat(filepath.Dir(path)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state directory: %v %v", fi.Mode(), err)
	}
	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadChecks(path); err == nil {
		t.Error("a broken file was read without an error")
	}
}
