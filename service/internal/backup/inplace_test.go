package backup

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRootBtrfsSmallChangesRewrittenInPlace checks that on btrfs a small changed file keeps
// its inode in the working subvolume (no new inode, no rename) while the snapshot taken before
// keeps the old content, and that files the tree cannot rewrite in place (extended attributes,
// hard links) are still replaced whole, without keeping what the source no longer has.
func TestRootBtrfsSmallChangesRewrittenInPlace(t *testing.T) {
	src := t.TempDir()
	tr := tree{t, src}
	tr.file("small", "version one", 0o644)
	tr.file("shrinks", strings.Repeat("s", 9000), 0o600)
	tr.file("tagged", "with an attribute", 0o644)
	tr.file("linked", "a hard link pair", 0o644)
	must(t, os.Link(filepath.Join(src, "linked"), filepath.Join(src, "linked2")))
	must(t, unix.Setxattr(filepath.Join(src, "tagged"), "user.tag", []byte("old"), 0))
	job := rootJob(t, src, "btrfs")
	first := runGuarded(t, job)

	rel := strings.TrimPrefix(src, "/")
	working := filepath.Join(job.Target, rootDir, job.Host, workingDir, rel)
	inode := func(name string) uint64 {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(working, name), &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	before := map[string]uint64{}
	for _, n := range []string{"small", "shrinks", "tagged", "linked"} {
		before[n] = inode(n)
	}
	tr.file("small", "version two, longer", 0o640)
	tr.file("shrinks", "s", 0o600)
	must(t, unix.Removexattr(filepath.Join(src, "tagged"), "user.tag"))
	must(t, os.WriteFile(filepath.Join(src, "tagged"), []byte("changed too"), 0o644))
	must(t, os.WriteFile(filepath.Join(src, "linked"), []byte("both names change"), 0o644))
	second := runGuarded(t, job)
	compareSnapshot(t, job, src)

	for name, same := range map[string]bool{"small": true, "shrinks": true, "tagged": false, "linked": false} {
		if got := inode(name) == before[name]; got != same {
			t.Errorf("%s: rewritten in its inode %v, want %v", name, got, same)
		}
	}
	old, err := os.ReadFile(filepath.Join(snapPath(job, first.Snapshot, src), "small"))
	if err != nil || string(old) != "version one" {
		t.Errorf("the snapshot taken before holds %q (%v), want the old version", old, err)
	}
	for _, snap := range []string{first.Snapshot, second.Snapshot} {
		if _, problems, err := Verify(t.Context(), job.Target, job.Host, snap, nil); err != nil || len(problems) > 0 {
			t.Errorf("verify %s: %v %q", snap, err, problems)
		}
	}
}

// TestRootBtrfsFailedRewriteLeavesNameOut checks that an in-place rewrite that fails after it
// began leaves the file out of the snapshot (with a warning) instead of storing a half-written
// file as the previous version, and that the next run copies it again.
func TestRootBtrfsFailedRewriteLeavesNameOut(t *testing.T) {
	src := t.TempDir()
	tr := tree{t, src}
	tr.file("victim", "version one", 0o644)
	tr.file("other", "unchanged", 0o644)
	job := rootJob(t, src, "btrfs")
	first := runGuarded(t, job)
	tr.file("victim", "version two", 0o644)
	victim := strings.TrimPrefix(src, "/") + "/victim"
	afterRewrite = func(path string) error {
		if path == victim {
			return errors.New("injected failure")
		}
		return nil
	}
	t.Cleanup(func() { afterRewrite = nil })
	second := runGuarded(t, job)
	afterRewrite = nil
	if !strings.Contains(strings.Join(second.Warnings, "\n"), "injected failure; it is left out of this snapshot") {
		t.Errorf("no warning about the lost file: %q", second.Warnings)
	}
	m, err := readManifestFile(filepath.Join(job.Target, rootDir, job.Host, second.Snapshot, metaDir, "manifest"))
	if err != nil {
		t.Fatal(err)
	}
	if m[victim] != nil {
		t.Errorf("the half-rewritten file is in the manifest: %+v", m[victim])
	}
	if _, err := os.Lstat(filepath.Join(snapPath(job, second.Snapshot, src), "victim")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the half-rewritten file is in the snapshot: %v", err)
	}
	if old, err := os.ReadFile(filepath.Join(snapPath(job, first.Snapshot, src), "victim")); err != nil || string(old) != "version one" {
		t.Errorf("the snapshot taken before holds %q (%v)", old, err)
	}
	third := runGuarded(t, job)
	compareSnapshot(t, job, src)
	for _, snap := range []string{first.Snapshot, second.Snapshot, third.Snapshot} {
		if _, problems, err := Verify(t.Context(), job.Target, job.Host, snap, nil); err != nil || len(problems) > 0 {
			t.Errorf("verify %s: %v %q", snap, err, problems)
		}
	}
	if got, _ := os.ReadFile(filepath.Join(snapPath(job, third.Snapshot, src), "victim")); !bytes.Equal(got, []byte("version two")) {
		t.Errorf("the next run stored %q", got)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestRootBtrfsAppendToSmallFileWritesTheTail checks that a small file that grew by an append
// gets only its new bytes written (its old content is the known version), while a file changed
// in the middle is written whole.
func TestRootBtrfsAppendToSmallFileWritesTheTail(t *testing.T) {
	src := t.TempDir()
	tr := tree{t, src}
	logData := pattern(200<<10, 3)
	tr.file("log", string(logData), 0o644)
	tr.file("edited", string(pattern(50<<10, 4)), 0o644)
	job := rootJob(t, src, "btrfs")
	runGuarded(t, job)

	f, err := os.OpenFile(filepath.Join(src, "log"), os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	_, err = f.Write(bytes.Repeat([]byte("z"), 100))
	must(t, err)
	must(t, f.Close())
	second := runGuarded(t, job)
	compareSnapshot(t, job, src)
	if st := readStatsFile(t, job, second.Snapshot); st.BytesWritten != 100 {
		t.Errorf("a 100-byte append to a %d-byte file wrote %d bytes", len(logData), st.BytesWritten)
	}

	edited := pattern(50<<10, 4)
	edited[10] ^= 0xff
	tr.file("edited", string(edited), 0o644)
	third := runGuarded(t, job)
	compareSnapshot(t, job, src)
	if st := readStatsFile(t, job, third.Snapshot); st.BytesWritten != uint64(len(edited)) {
		t.Errorf("a file changed in the middle wrote %d bytes, want all %d", st.BytesWritten, len(edited))
	}
	if _, problems, err := Verify(t.Context(), job.Target, job.Host, third.Snapshot, nil); err != nil || len(problems) > 0 {
		t.Errorf("verify: %v %q", err, problems)
	}
}
