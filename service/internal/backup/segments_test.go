package backup

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/plugvault/plugvault/service/api/apitest"
)

func segmentNames(t *testing.T, root string) map[string]bool {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(root, metaDir, segmentDir))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, e := range ents {
		out[e.Name()] = true
	}
	return out
}

func TestSegmentedManifestSharesUnchangedDirectories(t *testing.T) {
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, metaDir), 0o700); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	first := entries("d a", "f a/x", "f a/y", "d b", "f b/z", "d b/c", "f b/c/w", "l b/l")
	write := func(es []*Entry) {
		t.Helper()
		stale, err := writeMeta(fd, es, Stats{}, Result{}, -1, true)
		if err != nil {
			t.Fatal(err)
		}
		removeSegments(fd, stale)
		got, err := readManifestAt(fd, metaDir+"/manifest")
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]*Entry{}
		for _, e := range es {
			want[e.Path] = e
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("read back %v, want %v", keys(got), keys(want))
		}
	}
	write(first)
	before := segmentNames(t, root)
	if len(before) != 4 { // "", a, b, b/c
		t.Fatalf("%d segments for 4 directories: %v", len(before), before)
	}
	// One file changes in b/c: only b/c's segment is new, the others stay as they were.
	second := entries("d a", "f a/x", "f a/y", "d b", "f b/z", "d b/c", "f b/c/w mtime=9", "l b/l")
	write(second)
	after := segmentNames(t, root)
	var added, kept int
	for n := range after {
		if before[n] {
			kept++
		} else {
			added++
		}
	}
	if added != 1 || kept != 3 || len(after) != 4 {
		t.Errorf("after a change in one directory: %d segments added, %d kept, %d in all; want 1, 3, 4", added, kept, len(after))
	}
	// A flat (format 1) manifest is still read.
	if _, err := writeMeta(fd, first, Stats{}, Result{}, -1, false); err != nil {
		t.Fatal(err)
	}
	got, err := readManifestAt(fd, metaDir+"/manifest")
	if err != nil || len(got) != len(first) {
		t.Fatalf("flat manifest read back %d entries (%v), want %d", len(got), err, len(first))
	}
	// A damaged segment is refused, not half read.
	write(second)
	for n := range segmentNames(t, root) {
		os.WriteFile(filepath.Join(root, metaDir, segmentDir, n), []byte("f 644 0 0 1 1 1 1 1 1 0 - - \"a/q\"\n"), 0o600)
		break
	}
	if _, err := readManifestAt(fd, metaDir+"/manifest"); err == nil {
		t.Error("a damaged segment was read")
	}
}

// TestRootChownSegments: segments change hands with the engine's user, and the segment
// directory, handed over last, says when there is nothing to do.
func TestRootChownSegments(t *testing.T) {
	apitest.RequireRoot(t)
	root := t.TempDir()
	seg := filepath.Join(root, segmentDir)
	os.Mkdir(seg, 0o700)
	for _, n := range []string{"s1", "s2"} {
		os.WriteFile(filepath.Join(seg, n), nil, 0o600)
	}
	owner := func(p string) uint32 {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st.Uid
	}
	mfd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(mfd)
	chownSegments(mfd, 65534, 65534)
	for _, p := range []string{seg, filepath.Join(seg, "s1"), filepath.Join(seg, "s2")} {
		if owner(p) != 65534 {
			t.Errorf("%s still belongs to uid %d", p, owner(p))
		}
	}
	// The directory is the user's already: its segments are taken as handed over.
	os.Lchown(filepath.Join(seg, "s1"), 0, 0)
	chownSegments(mfd, 65534, 65534)
	if owner(filepath.Join(seg, "s1")) != 0 {
		t.Error("segments were walked although their directory was the user's already")
	}
}
