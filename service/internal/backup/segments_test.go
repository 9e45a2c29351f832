package backup

import (
	"bytes"
	"crypto/sha256"
	"os"
	"path/filepath"
	"reflect"
	"strings"
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
		stale, err := writeMeta(fd, es, Stats{}, Result{}, -1, true, nil)
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
	if _, err := writeMeta(fd, first, Stats{}, Result{}, -1, false, nil); err != nil {
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

// TestUnchangedDirectoriesKeepTheirSegments: a directory whose scan has the signature its
// segment was written with is kept without being read; the others are read.
func TestUnchangedDirectoriesKeepTheirSegments(t *testing.T) {
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, metaDir), 0o700); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	hash := strings.Repeat("ab", sha256.Size)
	stored := entries("d a", "f a/x", "f a/y", "d b", "f b/z", "f b/w flags=x", "f top")
	for _, e := range stored {
		if e.Type == 'f' {
			e.Hash = hash
		}
	}
	if _, err := writeMeta(fd, stored, Stats{}, Result{}, -1, true, nil); err != nil {
		t.Fatal(err)
	}
	// The scan: a/x grew; b/w is flagged in the manifest (its owner was not kept); the
	// snapshot root is as it was.
	scan := &scanResult{entries: entries("d a", "f a/x size=11", "f a/y", "d b", "f b/z", "f b/w", "f top"), dirSigs: map[string]string{}}
	byDir := map[string][]*Entry{}
	for _, s := range scan.entries {
		byDir[parentOf(s.Path)] = append(byDir[parentOf(s.Path)], s)
	}
	for d, children := range byDir {
		scan.dirSigs[d], _ = dirSig(children, nil)
	}
	newEngine := func() *engine {
		e := &engine{dest: btrfsDest{}, destFd: fd, known: map[string]*Entry{}}
		e.dest.load(e, "")
		if !e.sidecar || e.base == nil {
			t.Fatalf("the manifest was not opened with its sidecar (sidecar %v)", e.sidecar)
		}
		e.resolveBase(scan)
		return e
	}
	e := newEngine()
	defer e.closeBase()
	if len(e.kept) != 1 || e.kept[""].name == "" {
		t.Fatalf("kept %v, want the snapshot root only", e.kept)
	}
	top := scan.entries[len(scan.entries)-1]
	if len(e.known) != len(stored) || e.known["top"] != top || e.known["a/y"].Hash != hash {
		t.Fatalf("known: %d entries, top %p (scan's %p), a/y hash %q", len(e.known), e.known["top"], top, e.known["a/y"].Hash)
	}
	e2 := newEngine() // for the write below, before the manifest changes
	defer e2.closeBase()
	// Written with the root kept, the manifest still holds the root's stored lines.
	if _, err := writeMeta(fd, scan.entries, Stats{}, Result{}, -1, true, e.kept); err != nil {
		t.Fatal(err)
	}
	got, err := readManifestAt(fd, metaDir+"/manifest")
	if err != nil || got["top"] == nil || got["top"].Hash != hash {
		t.Fatalf("after writing with the root kept: %v, top %+v", err, got["top"])
	}
	// A run that writes in a kept directory after all gets the kept entries' hashes back.
	e2.out = map[string]*Entry{}
	for _, s := range scan.entries {
		e2.out[s.Path] = s
	}
	if err := e2.fillKept(&plan{writes: map[string][]action{"": nil}}, scan); err != nil {
		t.Fatal(err)
	}
	if len(e2.kept) != 0 || top.Hash != hash {
		t.Errorf("after a write in the kept root: kept %v, top's hash %q", e2.kept, top.Hash)
	}
	// A sidecar goes with its own index only.
	side, _ := os.ReadFile(filepath.Join(root, metaDir, dirsFile))
	index, _ := os.ReadFile(filepath.Join(root, metaDir, "manifest"))
	n := bytes.Count(index, []byte{'\n'}) - 1
	if parseDirs(side, index, n) == nil {
		t.Error("the sidecar does not go with the index it was written with")
	}
	if parseDirs(side, append(index, index[len(index)-65:]...), n+1) != nil {
		t.Error("a sidecar was taken for another index")
	}
}
