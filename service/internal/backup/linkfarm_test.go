package backup

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// farmFixture is a first ext4 snapshot of a rich source, its manifest, and a fresh directory
// beside it to link into.
type farmFixture struct {
	src, prevDir, destDir string
	prefix                string // the source's path in a snapshot
	prevFd, destFd        int
	prev                  map[string]*Entry
}

func newFarmFixture(t *testing.T) *farmFixture {
	t.Helper()
	src := buildRich(t)
	tr := tree{t, src}
	tr.file("sub/inner/f", "inner", 0o644)
	// A set-group-ID directory with an xattr and an old mtime: the farm must give the copy
	// all three, after it linked what is inside.
	if err := unix.Chmod(filepath.Join(src, "sub"), 0o2750); err != nil {
		t.Fatal(err)
	}
	hasXattr := unix.Setxattr(filepath.Join(src, "sub"), "user.plugvault-test", []byte("v"), 0) == nil
	old := unix.NsecToTimespec(1_000_000_000_123)
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(src, "sub"), []unix.Timespec{old, old}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatal(err)
	}
	job := newJob(t, src, "ext4")
	first := mustRun(t, job)
	host := filepath.Join(job.Target, rootDir, job.Host)
	f := &farmFixture{src: src, prevDir: filepath.Join(host, first.Snapshot), destDir: filepath.Join(host, "farm-test"),
		prefix: strings.TrimPrefix(src, "/")}
	if hasXattr && !strings.Contains(xattrString(filepath.Join(f.prevDir, f.prefix, "sub")), "plugvault-test") {
		t.Fatal("the first snapshot lost the directory's xattr")
	}
	if err := os.Mkdir(f.destDir, 0o755); err != nil {
		t.Fatal(err)
	}
	var err error
	if f.prevFd, err = openDirPath(f.prevDir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(f.prevFd) })
	if f.destFd, err = openDirPath(f.destDir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(f.destFd) })
	if f.prev, err = readManifestAt(f.prevFd, metaDir+"/manifest"); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *farmFixture) link(t *testing.T, ctx context.Context, guard *guardGate, wanted func(string) bool) (map[string]*Entry, bool) {
	t.Helper()
	placed, strays := linkPrevious(ctx, guard, f.destFd, f.prevFd, f.prev, wanted, 4)
	m := map[string]*Entry{}
	for _, en := range placed {
		if m[en.Path] != nil {
			t.Errorf("%s placed twice", en.Path)
		}
		m[en.Path] = en
	}
	return m, strays
}

func all(string) bool { return true }

func TestLinkPreviousPlacesThePreviousSnapshot(t *testing.T) {
	f := newFarmFixture(t)
	placed, strays := f.link(t, context.Background(), &guardGate{}, all)
	if strays {
		t.Error("a complete farm reported strays")
	}
	for p, en := range f.prev {
		linkable := en.Type == 'd' || en.Type == 'f' || en.Type == 'l'
		if (placed[p] != nil) != linkable {
			t.Errorf("%s (type %c): placed %v", p, en.Type, placed[p] != nil)
		}
		var x, y unix.Stat_t
		errPrev := unix.Lstat(filepath.Join(f.prevDir, p), &x)
		errDest := unix.Lstat(filepath.Join(f.destDir, p), &y)
		if !linkable {
			if errDest == nil {
				t.Errorf("%s (type %c) was made: the plan creates special files", p, en.Type)
			}
			continue
		}
		if errPrev != nil || errDest != nil {
			t.Errorf("%s: %v / %v", p, errPrev, errDest)
			continue
		}
		switch en.Type {
		case 'f', 'l':
			if x.Ino != y.Ino {
				t.Errorf("%s was not hard-linked", p)
			}
		case 'd':
			if y.Mode&0o7777 != en.Mode || y.Uid != en.UID || y.Gid != en.GID || y.Mtim.Nano() != en.Mtime {
				t.Errorf("%s: mode %o uid %d gid %d mtime %d, want %o %d %d %d", p, y.Mode&0o7777, y.Uid, y.Gid, y.Mtim.Nano(), en.Mode, en.UID, en.GID, en.Mtime)
			}
			if a, b := xattrString(filepath.Join(f.prevDir, p)), xattrString(filepath.Join(f.destDir, p)); a != b {
				t.Errorf("%s: xattrs %q, want %q", p, b, a)
			}
		}
	}
	if en := placed[f.prefix+"/sub"]; en == nil || en.Mode != 0o2750 {
		t.Errorf("the set-group-ID directory was placed as %+v", en)
	}
}

// TestLinkPreviousLeavesNothingUnlisted: what cannot be placed (gone from the previous
// snapshot, or not wanted) leaves nothing in the tree, so the plan needs no cleaning.
func TestLinkPreviousLeavesNothingUnlisted(t *testing.T) {
	f := newFarmFixture(t)
	ghost, phantom := f.prefix+"/ghost", f.prefix+"/phantom"
	f.prev[ghost] = &Entry{Path: ghost, Type: 'd', Mode: 0o755}
	f.prev[ghost+"/f"] = &Entry{Path: ghost + "/f", Type: 'f', Mode: 0o644}
	f.prev[phantom] = &Entry{Path: phantom, Type: 'f', Mode: 0o644}
	skipped := f.prefix + "/dir"
	placed, strays := f.link(t, context.Background(), &guardGate{}, func(p string) bool {
		return p != skipped && !strings.HasPrefix(p, skipped+"/")
	})
	if strays {
		t.Error("strays reported although everything made is listed or removed")
	}
	for _, p := range []string{ghost, ghost + "/f", phantom, skipped, skipped + "/exec.sh"} {
		if placed[p] != nil {
			t.Errorf("%s was placed", p)
		}
		if _, err := os.Lstat(filepath.Join(f.destDir, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is in the tree: %v", p, err)
		}
	}
	if placed[f.prefix+"/a.txt"] == nil || placed[f.prefix+"/sub/inner/f"] == nil {
		t.Error("the rest was not placed")
	}
	// Every name in the tree is listed.
	err := filepath.Walk(filepath.Join(f.destDir, f.prefix), func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(f.destDir, p)
		if placed[rel] == nil {
			t.Errorf("%s is in the tree and not listed", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestLinkPreviousStopsWithStrays: a cancelled run or a drive the guard no longer vouches for
// stops the farm, and what it made is then reported as possibly unlisted.
func TestLinkPreviousStopsWithStrays(t *testing.T) {
	t.Run("cancelled", func(t *testing.T) {
		f := newFarmFixture(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if placed, strays := f.link(t, ctx, &guardGate{}, all); !strays || len(placed) != 0 {
			t.Errorf("a cancelled farm placed %d entries, strays %v", len(placed), strays)
		}
	})
	t.Run("guard", func(t *testing.T) {
		old := guardEvery
		guardEvery = 1
		t.Cleanup(func() { guardEvery = old })
		f := newFarmFixture(t)
		calls := 0
		guard := &guardGate{fn: func() error {
			if calls++; calls > 3 {
				return errors.New("not the drive")
			}
			return nil
		}}
		placed, strays := f.link(t, context.Background(), guard, all)
		if !strays || len(placed) >= len(f.prev) {
			t.Errorf("the farm went on after the guard failed: %d of %d placed, strays %v", len(placed), len(f.prev), strays)
		}
	})
}

// TestExt4IncrementalOverLinkedSnapshot changes a tree in every way the plan must undo in a
// tree the farm filled (types changed, a subtree removed, a hard link group rewritten, a
// directory's mode changed) and checks the new snapshot is the source and the first one is
// untouched.
func TestExt4IncrementalOverLinkedSnapshot(t *testing.T) {
	src := buildRich(t)
	job := newJob(t, src, "ext4")
	first := mustRun(t, job)
	firstPath := snapPath(job, first.Snapshot, src)
	before := scanTree(t, firstPath, false)

	tr := tree{t, src}
	if err := os.RemoveAll(filepath.Join(src, "deep")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(src, "emptydir")); err != nil {
		t.Fatal(err)
	}
	tr.file("emptydir", "now a file", 0o644)
	if err := os.Remove(filepath.Join(src, "link-rel")); err != nil {
		t.Fatal(err)
	}
	tr.file("link-rel/inside", "now a directory", 0o600)
	tr.file("a.txt", "hello, rewritten in place", 0o644) // its hard link group follows
	if err := unix.Chmod(filepath.Join(src, "dir"), 0o2770); err != nil {
		t.Fatal(err)
	}
	second := mustRun(t, job)
	compareSnapshot(t, job, src)
	after := scanTree(t, firstPath, false)
	if len(after) != len(before) {
		t.Errorf("the first snapshot holds %d entries, %d before", len(after), len(before))
	}
	for p, n := range before {
		if brief(after[p]) != brief(n) || string(after[p].data) != string(n.data) {
			t.Errorf("first snapshot, %s: %s, was %s", p, brief(after[p]), brief(n))
		}
	}
	var a, b unix.Stat_t
	if unix.Lstat(filepath.Join(firstPath, "dir/exec.sh"), &a) != nil ||
		unix.Lstat(filepath.Join(snapPath(job, second.Snapshot, src), "dir/exec.sh"), &b) != nil || a.Ino != b.Ino {
		t.Error("an unchanged file is not shared with the first snapshot")
	}
}

// TestExt4StraysAreCleaned: a directory the farm made but could not finish is not listed, and
// the plan cleans the tree of it when the source no longer has it.
func TestExt4StraysAreCleaned(t *testing.T) {
	src := buildRich(t)
	tr := tree{t, src}
	tr.file("gone/inside", "x", 0o644)
	job := newJob(t, src, "ext4")
	mustRun(t, job)
	gone := strings.TrimPrefix(src, "/") + "/gone"
	farmMetaFails = func(p string) bool { return p == gone }
	t.Cleanup(func() { farmMetaFails = nil })
	if err := os.RemoveAll(filepath.Join(src, "gone")); err != nil {
		t.Fatal(err)
	}
	mustRun(t, job)
	compareSnapshot(t, job, src)
}
