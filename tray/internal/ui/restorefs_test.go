package ui

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/plugvault/plugvault/service/api"
)

// snapshotTree makes MOUNT/plugvault/HOST/SNAP/... for each snapshot with the given files
// (relative path -> content) and returns the mount and the snapshots, newest first.
func snapshotTree(t *testing.T, files map[string]map[string]string, order []string) (string, []api.Snapshot) {
	t.Helper()
	mount := t.TempDir()
	var snaps []api.Snapshot
	for i, name := range order {
		dir := filepath.Join(mount, "plugvault", "host", name)
		if err := os.MkdirAll(filepath.Join(dir, snapshotMeta), 0o755); err != nil {
			t.Fatal(err)
		}
		for rel, content := range files[name] {
			p := filepath.Join(dir, rel)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			// The engine keeps modification times: same content, same time.
			mt := time.Unix(1_700_000_000+int64(len(content)), 0)
			if err := os.Chtimes(p, mt, mt); err != nil {
				t.Fatal(err)
			}
		}
		snaps = append(snaps, api.Snapshot{Name: name, Created: int64(1000 - i), Status: api.SnapshotComplete})
	}
	return mount, snaps
}

func TestRestoreFiles(t *testing.T) {
	files := map[string]map[string]string{
		"3": {"home/a/report.txt": "third version", "home/a/notes.md": "n"},
		"2": {"home/a/report.txt": "second", "home/a/notes.md": "n"},
		"1": {"home/a/report.txt": "second", "home/a/Reports/old.txt": "x"},
	}
	mount, snaps := snapshotTree(t, files, []string{"3", "2", "1"})
	if err := os.Symlink("/etc", filepath.Join(mount, "plugvault", "host", "3", "home", "a", "link")); err != nil {
		t.Fatal(err)
	}
	base, err := hostDir(mount, "3")
	if err != nil || base != filepath.Join(mount, "plugvault", "host") {
		t.Fatalf("hostDir = %q, %v", base, err)
	}
	if _, err := hostDir(mount, "9"); err == nil {
		t.Error("hostDir found a snapshot that is not there")
	}
	top, _ := children(filepath.Join(base, "3"), "")
	if !slices.Equal(top, []string{"home"}) {
		t.Errorf("snapshot root lists %v, want [home] (no %s)", top, snapshotMeta)
	}
	ids, dirs := children(filepath.Join(base, "3"), "home/a")
	if !slices.Equal(ids, []string{"home/a/link", "home/a/notes.md", "home/a/report.txt"}) || dirs["home/a/link"] {
		t.Errorf("children = %v %v; a symbolic link is listed, never a directory", ids, dirs)
	}
	if got := search(filepath.Join(base, "1"), "REPORT"); !slices.Equal(got, []string{"home/a/Reports", "home/a/report.txt"}) {
		t.Errorf("search = %v", got)
	}
	if got := search(filepath.Join(base, "3"), "plugvault"); len(got) != 0 {
		t.Errorf("search finds the engine's metadata: %v", got)
	}
	vs := versions(base, snaps, "home/a/report.txt")
	if len(vs) != 2 || vs[0].snap.Name != "3" || vs[1].snap.Name != "1" || vs[1].size != int64(len("second")) {
		t.Errorf("versions = %+v, want 3 (third version) and 1 (second, unchanged in 2)", vs)
	}
	if vs := versions(base, snaps, "home/a/notes.md"); len(vs) != 1 || vs[0].snap.Name != "2" {
		t.Errorf("versions of notes.md = %+v, want one, since snapshot 2", vs)
	}

	dir := t.TempDir()
	for _, n := range []string{"a", "b"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := moveNoReplace(filepath.Join(dir, "a"), filepath.Join(dir, "b")); err == nil {
		t.Error("moveNoReplace replaced an existing file")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "b")); string(b) != "b" {
		t.Errorf("b holds %q", b)
	}
	if err := moveNoReplace(filepath.Join(dir, "a"), filepath.Join(dir, "c")); err != nil {
		t.Error(err)
	}
}
