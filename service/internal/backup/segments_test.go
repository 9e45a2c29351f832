package backup

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
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

// segTree is a directory with a .plugvault/ in which tests write and read manifests.
type segTree struct {
	t    *testing.T
	root string
	fd   int
}

func newSegTree(t *testing.T) *segTree {
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, metaDir), 0o700); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return &segTree{t, root, fd}
}

// write writes es as a segmented manifest, removes what it left stale, and checks that it
// reads back as es.
func (tr *segTree) write(es []*Entry) {
	tr.t.Helper()
	stale, err := writeMeta(tr.fd, es, Stats{}, Result{}, -1, true, nil)
	if err != nil {
		tr.t.Fatal(err)
	}
	removeSegments(tr.fd, stale)
	got, err := readManifestAt(tr.fd, metaDir+"/manifest")
	if err != nil {
		tr.t.Fatal(err)
	}
	want := map[string]*Entry{}
	for _, e := range es {
		want[e.Path] = e
	}
	if !reflect.DeepEqual(got, want) {
		tr.t.Fatalf("read back %v, want %v", keys(got), keys(want))
	}
}

// index is the index in place.
func (tr *segTree) index() []segRef {
	tr.t.Helper()
	data, err := os.ReadFile(filepath.Join(tr.root, metaDir, "manifest"))
	if err != nil {
		tr.t.Fatal(err)
	}
	refs := indexRefs(data)
	if refs == nil {
		tr.t.Fatalf("not a segmented index: %q", data)
	}
	return refs
}

// files is the segment directory's files.
func (tr *segTree) files() map[string]bool {
	tr.t.Helper()
	return segmentNames(tr.t, tr.root)
}

func TestSegmentedManifestSharesUnchangedDirectories(t *testing.T) {
	tr := newSegTree(t)
	first := entries("d a", "f a/x", "f a/y", "d b", "f b/z", "d b/c", "f b/c/w", "l b/l")
	tr.write(first)
	before := tr.index()
	if len(before) != 4 { // "", a, b, b/c
		t.Fatalf("%d segments for 4 directories: %v", len(before), before)
	}
	// The four segments are one pack, the pack is the only file.
	if files := tr.files(); len(files) != 1 || !files[before[0].pack] {
		t.Fatalf("files %v for the index %v", files, before)
	}
	for _, r := range before {
		if r.pack != before[0].pack || !strings.HasPrefix(r.pack, packPrefix) {
			t.Fatalf("segments not in one pack: %v", before)
		}
	}
	// One file changes in b/c: only b/c's segment is new, in a pack of its own; the others
	// stay where they were.
	second := entries("d a", "f a/x", "f a/y", "d b", "f b/z", "d b/c", "f b/c/w mtime=9", "l b/l")
	tr.write(second)
	after := tr.index()
	var moved []int
	for i := range after {
		if after[i] != before[i] {
			moved = append(moved, i)
		}
	}
	if len(moved) != 1 || moved[0] != 3 || after[3].pack == before[3].pack {
		t.Errorf("after a change in b/c: index %v, was %v", after, before)
	}
	if files := tr.files(); len(files) != 2 {
		t.Errorf("after a change in b/c: files %v, want the two packs", files)
	}
	// A flat (format 1) manifest is still read.
	if _, err := writeMeta(tr.fd, first, Stats{}, Result{}, -1, false, nil); err != nil {
		t.Fatal(err)
	}
	got, err := readManifestAt(tr.fd, metaDir+"/manifest")
	if err != nil || len(got) != len(first) {
		t.Fatalf("flat manifest read back %d entries (%v), want %d", len(got), err, len(first))
	}
}

// TestDamagedSegmentsAreRefused: a segment whose bytes do not have its name, and an index
// line that does not parse, are refused, not half read.
func TestDamagedSegmentsAreRefused(t *testing.T) {
	tr := newSegTree(t)
	tr.write(entries("d a", "f a/x", "f a/y", "d b", "f b/z"))
	pack := filepath.Join(tr.root, metaDir, segmentDir, tr.index()[0].pack)
	data, _ := os.ReadFile(pack)
	bad := bytes.Replace(data, []byte("a/x"), []byte("a/q"), 1)
	if err := os.WriteFile(pack, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readManifestAt(tr.fd, metaDir+"/manifest"); err == nil {
		t.Error("a damaged segment was read")
	}
	os.WriteFile(pack, data[:len(data)-1], 0o600)
	if _, err := readManifestAt(tr.fd, metaDir+"/manifest"); err == nil {
		t.Error("a short pack was read")
	}
	// A length no pack holds is refused before a buffer for it is allocated.
	sfd, err := unix.Open(filepath.Join(tr.root, metaDir, segmentDir), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	x := &segIndex{sfd: sfd}
	defer x.close()
	ref := tr.index()[0]
	for _, r := range []segRef{{name: ref.name, pack: ref.pack, n: maxSegment}, {name: ref.name, pack: ref.pack, off: 1 << 40, n: 1}} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := x.bytes(r)
		runtime.ReadMemStats(&after)
		if err == nil || !strings.Contains(err.Error(), "shorter than its index says") {
			t.Errorf("%d bytes at %d of a %d-byte pack: %v", r.n, r.off, len(data)-1, err)
		}
		if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
			t.Errorf("%d bytes at %d of a %d-byte pack: %d bytes allocated to refuse it", r.n, r.off, len(data)-1, got)
		}
	}
	name := strings.Repeat("ab", sha256.Size)
	for _, line := range []string{
		name + " ../x 0 1",
		name + " " + packPrefix + name + " -1 1",
		name + " " + packPrefix + name + " 0",
		name + " " + packPrefix + name + " 0 1 2",
		name + " " + packPrefix + name + " 0 2000000000",
		"../" + name[3:],
	} {
		if _, err := parseIndex([]byte(line + "\n")); err == nil {
			t.Errorf("index line %q was taken", line)
		}
	}
}

// TestPacksAreCompacted: a pack less than half of which is still used is rewritten into the
// run's own, and there are never more than maxPacks.
func TestPacksAreCompacted(t *testing.T) {
	tr := newSegTree(t)
	var specs []string
	for d := range 8 {
		specs = append(specs, fmt.Sprintf("d d%d", d), fmt.Sprintf("f d%d/x", d))
		for f := range 5 {
			specs = append(specs, fmt.Sprintf("f d%d/f%d", d, f))
		}
	}
	tr.write(entries(specs...))
	first := tr.index()[0].pack
	// Five of the eight directories change: the first pack is less than half used, and what
	// is left of it moves into the new one.
	for d := range 5 {
		specs[7*d+1] = fmt.Sprintf("f d%d/x mtime=2", d)
	}
	tr.write(entries(specs...))
	packs := map[string]bool{}
	for _, r := range tr.index() {
		packs[r.pack] = true
	}
	if len(packs) != 1 || packs[first] {
		t.Errorf("after most directories changed: packs %v (the first %s)", packs, first)
	}
	if files := tr.files(); len(files) != 1 {
		t.Errorf("after most directories changed: files %v", files)
	}
	// Runs that each change another directory leave a small pack each, and the first one
	// stays more than half used for a while: the smallest packs are merged at maxPacks.
	tr = newSegTree(t)
	specs = nil
	for d := range 3 * maxPacks {
		specs = append(specs, fmt.Sprintf("d d%02d", d), fmt.Sprintf("f d%02d/x", d))
	}
	tr.write(entries(specs...))
	most := 0
	for d := range 3 * maxPacks {
		specs[2*d+1] = fmt.Sprintf("f d%02d/x mtime=2", d)
		tr.write(entries(specs...))
		most = max(most, len(tr.files()))
	}
	if most != maxPacks {
		t.Errorf("at most %d packs after a run, want %d", most, maxPacks)
	}
}

// TestFormat2ManifestsAreReadAndCarriedOver: an index of loose segments (format 2, written
// by earlier versions) is read; a run keeps the loose segments of unchanged directories and
// puts the changed ones in a pack.
func TestFormat2ManifestsAreReadAndCarriedOver(t *testing.T) {
	tr := newSegTree(t)
	es := entries("d a", "f a/x", "d b", "f b/y")
	if err := os.Mkdir(filepath.Join(tr.root, metaDir, segmentDir), 0o700); err != nil {
		t.Fatal(err)
	}
	index := manifestHeaderV2 + "\n"
	groups := map[string][]*Entry{}
	for _, e := range es {
		groups[parentOf(e.Path)] = append(groups[parentOf(e.Path)], e)
	}
	for _, d := range []string{"", "a", "b"} {
		var data []byte
		for _, e := range groups[d] {
			data = appendEntry(data, e)
		}
		sum := sha256.Sum256(data)
		name := hex.EncodeToString(sum[:])
		if err := os.WriteFile(filepath.Join(tr.root, metaDir, segmentDir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
		index += name + "\n"
	}
	if err := os.WriteFile(filepath.Join(tr.root, metaDir, "manifest"), []byte(index), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := readManifestAt(tr.fd, metaDir+"/manifest")
	if err != nil || !reflect.DeepEqual(got, byPath("d a", "f a/x", "d b", "f b/y")) {
		t.Fatalf("format 2 read back %v (%v)", keys(got), err)
	}
	old := tr.index()
	tr.write(entries("d a", "f a/x", "d b", "f b/y mtime=5"))
	now := tr.index()
	if now[0] != old[0] || now[1] != old[1] || now[2].pack == "" {
		t.Errorf("after a change in b: index %v, was %v", now, old)
	}
	if files := tr.files(); len(files) != 3 || files[old[2].name] {
		t.Errorf("after a change in b: files %v", files)
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
	if len(e.kept) != 1 || e.kept[""].ref.name == "" {
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
