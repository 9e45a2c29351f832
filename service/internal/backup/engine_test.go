package backup

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/sysexec"
)

// buildRich makes a source tree with every file type and the hard cases.
func buildRich(t *testing.T) string {
	t.Helper()
	src := t.TempDir()
	tr := tree{t, src}
	tr.file("a.txt", "hello", 0o644)
	tr.file("dir/b.bin", strings.Repeat("x", 300000), 0o600)
	tr.file("dir/exec.sh", "#!/bin/sh\n", 0o755)
	tr.file("dir/setgid", "g", 0o2755)
	tr.file("empty", "", 0o644)
	tr.mkdir("emptydir")
	tr.symlink("a.txt", "link-rel")
	tr.symlink("/etc/passwd", "link-abs")
	tr.symlink("dangling/nowhere", "dir/dangling")
	tr.link("a.txt", "dir/hard-a")
	tr.link("a.txt", "hard-a2")
	// Long and non-UTF-8 names.
	tr.file("dir/"+strings.Repeat("n", 255), "long", 0o644)
	tr.file("dir/bad\xff\xfename", "latin1", 0o644)
	tr.file("dir/with\nnewline and space", "nl", 0o644)
	// Deep tree.
	deep := "deep"
	for i := 0; i < 60; i++ {
		deep += "/d"
	}
	tr.file(deep+"/leaf", "deep", 0o644)
	// A fifo and a socket: recorded, never opened.
	if err := unix.Mkfifo(filepath.Join(src, "fifo"), 0o640); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(src, "sock")
	if fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0); err == nil {
		if unix.Bind(fd, &unix.SockaddrUnix{Name: sock}) != nil {
			t.Log("cannot bind a socket: no socket in this tree")
		}
		unix.Close(fd)
	}
	// Sparse file: 8 MiB with data at 1 MiB and at the end.
	sp := filepath.Join(src, "sparse")
	f, err := os.Create(sp)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("data in the middle"), 1<<20)
	f.WriteAt([]byte("tail"), 8<<20-4)
	f.Close()
	// xattrs (user namespace; tmpfs/ext4 support them).
	if err := unix.Setxattr(filepath.Join(src, "a.txt"), "user.plugvault.test", []byte("v1"), 0); err != nil {
		t.Logf("no user xattrs here: %v", err)
	}
	_ = unix.Setxattr(filepath.Join(src, "dir"), "user.dirattr", []byte("d"), 0)
	// A POSIX ACL (the system.posix_acl_access xattr): user 1234 may read.
	tr.file("dir/acl", "acl", 0o600)
	if err := unix.Setxattr(filepath.Join(src, "dir/acl"), "system.posix_acl_access", posixACL(1234), 0); err != nil {
		t.Logf("no POSIX ACLs here: %v", err)
	}
	// Times with nanoseconds, set last (children change the directory times).
	ts := time.Date(2020, 2, 3, 4, 5, 6, 123456789, time.UTC)
	os.Chtimes(filepath.Join(src, "a.txt"), ts, ts)
	unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(src, "link-rel"), []unix.Timespec{unix.NsecToTimespec(ts.UnixNano()), unix.NsecToTimespec(ts.UnixNano())}, unix.AT_SYMLINK_NOFOLLOW)
	os.Chtimes(filepath.Join(src, "emptydir"), ts, ts)
	return src
}

func latestOf(t *testing.T, job Job) string {
	t.Helper()
	l, err := os.Readlink(filepath.Join(job.Target, rootDir, job.Host, latestName))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// compareSnapshot compares src with what the latest snapshot holds, ignoring sockets (never
// created).
func compareSnapshot(t *testing.T, job Job, src string) {
	t.Helper()
	_ = os.Remove(filepath.Join(src, "sock"))
	compareTrees(t, src, snapPath(job, latestOf(t, job), src))
}

func TestBackupEveryFileTypeExt4Layout(t *testing.T) {
	src := buildRich(t)
	job := newJob(t, src, "ext4")
	res := mustRun(t, job)
	if res.Snapshot == "" || res.Files == 0 {
		t.Fatalf("result %+v", res)
	}
	if latestOf(t, job) != res.Snapshot {
		t.Errorf("latest = %s, want %s", latestOf(t, job), res.Snapshot)
	}
	snap := snapPath(job, res.Snapshot, src)
	// The socket is recorded in the manifest but not created.
	m, err := readManifestFile(filepath.Join(job.Target, rootDir, job.Host, res.Snapshot, metaDir, "manifest"))
	if err != nil {
		t.Fatal(err)
	}
	rel := strings.TrimPrefix(src, "/")
	if e := m[rel+"/sock"]; e == nil || e.Type != 's' {
		if _, err := os.Lstat(filepath.Join(src, "sock")); err == nil {
			t.Errorf("socket not recorded: %+v", e)
		}
	}
	if _, err := os.Lstat(filepath.Join(snap, "sock")); err == nil {
		t.Error("a socket was created in the snapshot")
	}
	if e := m[rel+"/a.txt"]; e == nil || len(e.Hash) != 64 {
		t.Errorf("no content hash for a.txt: %+v", e)
	}
	// Sparse stays sparse.
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(snap, "sparse"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 >= st.Size {
		t.Errorf("sparse file not sparse in the snapshot: %d blocks for %d bytes", st.Blocks, st.Size)
	}
	compareSnapshot(t, job, src)
	checked, problems, err := Verify(context.Background(), job.Target, job.Host, "", nil)
	if err != nil || len(problems) != 0 || checked == 0 {
		t.Errorf("Verify: checked %d, problems %q, err %v", checked, problems, err)
	}
}

// readManifestFile reads the manifest p (<snapshot>/.plugvault/manifest), flat or segmented.
func readManifestFile(p string) (map[string]*Entry, error) {
	fd, err := unix.Open(filepath.Dir(filepath.Dir(p)), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	return readManifestAt(fd, metaDir+"/manifest")
}

func TestIncrementalExt4LinksUnchangedAndCopiesChanged(t *testing.T) {
	src := buildRich(t)
	job := newJob(t, src, "ext4")
	first := mustRun(t, job)
	tr := tree{t, src}
	tr.file("dir/exec.sh", "#!/bin/sh\necho changed\n", 0o755)
	tr.file("new/file", "new", 0o644)
	if err := os.Remove(filepath.Join(src, "empty")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(src, "dir/b.bin"), 0o640); err != nil { // metadata only
		t.Fatal(err)
	}
	second := mustRun(t, job)
	if second.Snapshot == first.Snapshot {
		t.Fatal("same snapshot name twice")
	}
	compareSnapshot(t, job, src)
	a, b := snapPath(job, first.Snapshot, src), snapPath(job, second.Snapshot, src)
	same := func(rel string) bool {
		var x, y unix.Stat_t
		unix.Lstat(filepath.Join(a, rel), &x)
		unix.Lstat(filepath.Join(b, rel), &y)
		return x.Ino == y.Ino
	}
	if !same("dir/" + strings.Repeat("n", 255)) {
		t.Error("an unchanged file was copied, not linked")
	}
	if same("dir/exec.sh") {
		t.Error("a changed file was linked to the old snapshot")
	}
	if same("dir/b.bin") {
		t.Error("a metadata-only change modified an inode shared with the old snapshot")
	}
	// The first snapshot is untouched.
	var st unix.Stat_t
	unix.Stat(filepath.Join(a, "dir/b.bin"), &st)
	if st.Mode&0o777 != 0o600 {
		t.Errorf("old snapshot modified: mode %o", st.Mode&0o777)
	}
	if _, err := os.Lstat(filepath.Join(a, "empty")); err != nil {
		t.Error("old snapshot lost a file")
	}
	snaps, err := List(job.Target, job.Host)
	if err != nil || len(snaps) != 2 || snaps[1].Name != second.Snapshot || snaps[1].Files != second.Files {
		t.Fatalf("List = %+v, %v", snaps, err)
	}
	// The first snapshot added every file; the second changed exec.sh and b.bin (its mode),
	// added new/file and removed empty.
	m, err := readManifestFile(filepath.Join(job.Target, rootDir, job.Host, first.Snapshot, metaDir, "manifest"))
	if err != nil {
		t.Fatal(err)
	}
	var files int64
	for _, en := range m {
		if en.Type != 'd' {
			files++
		}
	}
	if snaps[0].Changed != files || snaps[1].Changed != 4 {
		t.Errorf("files changed %d and %d; want %d (every file) and 4", snaps[0].Changed, snaps[1].Changed, files)
	}
}

func TestExcludes(t *testing.T) {
	src := t.TempDir()
	tr := tree{t, src}
	tr.file("keep.txt", "k", 0o644)
	tr.file("skip.tmp", "s", 0o644)
	tr.file("sub/x.tmp", "s", 0o644)
	tr.file("sub/keep", "k", 0o644)
	tr.file("anchored/drop/me", "s", 0o644)
	tr.file("cache/CACHEDIR.TAG", cacheDirSignature+"\n", 0o644)
	tr.file("cache/blob", "s", 0o644)
	tr.file("faketag/CACHEDIR.TAG", "not a tag", 0o644)
	tr.file("faketag/kept", "k", 0o644)
	tr.file("proj/"+IgnoreFile, "build\n# comment\nsub/gen\n", 0o644)
	tr.file("proj/build/out", "s", 0o644)
	tr.file("proj/deeper/build/out", "s", 0o644)
	tr.file("proj/sub/gen", "s", 0o644)
	tr.file("proj/src.go", "k", 0o644)
	tr.file("elsewhere/build/out", "k", 0o644)
	job := newJob(t, src, "ext4")
	job.Excludes = []string{"*.tmp", filepath.Join(src, "anchored/drop")}
	res := mustRun(t, job)
	snap := snapPath(job, res.Snapshot, src)
	for _, p := range []string{"keep.txt", "sub/keep", "cache/CACHEDIR.TAG", "faketag/kept", "proj/src.go", "proj/" + IgnoreFile, "elsewhere/build/out", "anchored"} {
		if _, err := os.Lstat(filepath.Join(snap, p)); err != nil {
			t.Errorf("%s was excluded: %v", p, err)
		}
	}
	for _, p := range []string{"skip.tmp", "sub/x.tmp", "anchored/drop", "cache/blob", "proj/build", "proj/deeper/build", "proj/sub/gen"} {
		if _, err := os.Lstat(filepath.Join(snap, p)); err == nil {
			t.Errorf("%s was not excluded", p)
		}
	}
}

func TestDefaultExcludesMatch(t *testing.T) {
	x := newExcluder(DefaultExcludes)
	for _, c := range []struct {
		abs  string
		want bool
	}{
		{"/proc", true}, {"/home/al/.cache", true}, {"/home/al/.local/share/Trash", true},
		{"/home/al/docs/.cache", false}, {"/media/usb/.Trash-1000", true}, {"/home/al/notes", false},
		{"/procfoo", false},
	} {
		if got := x.excluded(c.abs, filepath.Base(c.abs)); got != c.want {
			t.Errorf("excluded(%s) = %v, want %v", c.abs, got, c.want)
		}
	}
}

func TestManifestRoundTrip(t *testing.T) {
	in := []*Entry{
		{Path: "a/b\xff\n\"q", Type: 'f', Mode: 0o4755, UID: 1, GID: 2, Size: 3, Mtime: -5, Ctime: 7, Ino: 8, Dev: 9, Nlink: 2, Hash: strings.Repeat("ab", 32), Flags: "ox"},
		{Path: "l", Type: 'l', Link: "../t a\x00rget"},
		{Path: "d", Type: 'd', Mode: 0o755},
		{Path: "c", Type: 'c', Rdev: 1025},
	}
	var buf strings.Builder
	if err := writeManifest(&buf, in); err != nil {
		t.Fatal(err)
	}
	m, err := readManifest(strings.NewReader(buf.String()))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range in {
		got := m[e.Path]
		if got == nil || *got != *e {
			t.Errorf("round trip of %q: got %+v, want %+v", e.Path, got, e)
		}
	}
	if _, err := readManifest(strings.NewReader("junk\n")); err == nil {
		t.Error("a file without the header was accepted")
	}
	if _, err := readManifest(strings.NewReader(manifestHeader + "\nf 644 0 0 1 1 1 1 1 1 0 - - \"../escape\"\n")); err == nil {
		t.Error("a path climbing out of the snapshot was accepted")
	}
}

func TestRestore(t *testing.T) {
	src := buildRich(t)
	job := newJob(t, src, "ext4")
	res := mustRun(t, job)
	rel := strings.TrimPrefix(src, "/")
	dest := t.TempDir()
	if err := Restore(context.Background(), job.Target, job.Host, res.Snapshot, rel, dest, false, nil); err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(filepath.Join(src, "sock"))
	compareTrees(t, src, filepath.Join(dest, filepath.Base(src)))
	if err := Restore(context.Background(), job.Target, job.Host, res.Snapshot, rel, dest, false, nil); err == nil {
		t.Error("restore over an existing tree without overwrite succeeded")
	}
	if err := Restore(context.Background(), job.Target, job.Host, res.Snapshot, rel+"/a.txt", dest, true, nil); err != nil {
		t.Errorf("restore of one file: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "a.txt")); string(b) != "hello" {
		t.Errorf("restored a.txt = %q", b)
	}
	if err := Restore(context.Background(), job.Target, job.Host, res.Snapshot, "../etc", dest, true, nil); err == nil {
		t.Error("a path climbing out of the snapshot was accepted")
	}
}

func TestVerifyFindsDamage(t *testing.T) {
	src := buildRich(t)
	job := newJob(t, src, "ext4")
	res := mustRun(t, job)
	snap := snapPath(job, res.Snapshot, src)
	// Same size, same mtime, different content: only the hash can tell.
	p := filepath.Join(snap, "dir/exec.sh")
	var st unix.Stat_t
	unix.Stat(p, &st)
	os.Chmod(p, 0o755)
	os.WriteFile(p, []byte("#!/bin/XX\n"), 0o755)
	unix.UtimesNano(p, []unix.Timespec{st.Mtim, st.Mtim})
	os.WriteFile(filepath.Join(snap, "intruder"), nil, 0o644)
	os.Remove(filepath.Join(snap, "empty"))
	_, problems, err := Verify(context.Background(), job.Target, job.Host, res.Snapshot, nil)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(problems, "\n")
	for _, want := range []string{"exec.sh: content differs", "intruder: not in the manifest", "empty: missing"} {
		if !strings.Contains(joined, want) {
			t.Errorf("Verify did not report %q; got:\n%s", want, joined)
		}
	}
}

func TestChangingFileIsRetriedAndMarked(t *testing.T) {
	for _, c := range []struct {
		name    string
		changes int // how many of the reads the file changes after
		marked  bool
	}{
		{"changes once", 1, false},
		{"keeps changing", maxAttempts, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := t.TempDir()
			tr := tree{t, src}
			tr.file("grow", strings.Repeat("a", 1<<20), 0o644)
			tr.file("other", "still", 0o644)
			job := newJob(t, src, "ext4")
			grow := strings.TrimPrefix(src, "/") + "/grow"
			reads := 0
			afterRead = func(path string) {
				if path != grow {
					return
				}
				reads++
				if reads <= c.changes {
					f, err := os.OpenFile(filepath.Join(src, "grow"), os.O_WRONLY|os.O_APPEND, 0)
					if err != nil {
						t.Error(err)
						return
					}
					f.Write([]byte("b"))
					f.Close()
				}
			}
			t.Cleanup(func() { afterRead = nil })
			res, err := Run(context.Background(), job, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if want := min(c.changes+1, maxAttempts); reads != want {
				t.Errorf("the file was read %d times, want %d", reads, want)
			}
			m, _ := readManifestFile(filepath.Join(job.Target, rootDir, job.Host, res.Snapshot, metaDir, "manifest"))
			e := m[grow]
			if e == nil {
				t.Fatal("the changing file is not in the manifest")
			}
			if e.hasFlag(flagChanging) != c.marked || (len(res.Warnings) > 0) != c.marked {
				t.Errorf("marked %v (flags %q, warnings %q), want %v", e.hasFlag(flagChanging), e.Flags, res.Warnings, c.marked)
			}
			if !c.marked {
				// The copy is the file as it was once it stopped changing.
				got, err := os.ReadFile(filepath.Join(job.Target, rootDir, job.Host, res.Snapshot, grow))
				want, _ := os.ReadFile(filepath.Join(src, "grow"))
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("the copy differs from the file (%d bytes, want %d): %v", len(got), len(want), err)
				}
			}
		})
	}
}

// TestUnchangedManifestReused checks that a no-change run links (ext4) or keeps (btrfs) the
// previous manifest, and that any change writes a new one listing it.
func TestUnchangedManifestReused(t *testing.T) {
	src := buildMany(t, 200, 5)
	job := newJob(t, src, "ext4")
	first := mustRun(t, job)
	second := mustRun(t, job)
	host := filepath.Join(job.Target, rootDir, job.Host)
	var a, b unix.Stat_t
	unix.Stat(filepath.Join(host, first.Snapshot, metaDir, "manifest"), &a)
	unix.Stat(filepath.Join(host, second.Snapshot, metaDir, "manifest"), &b)
	if a.Ino != b.Ino {
		t.Error("an unchanged manifest was written again")
	}
	os.Remove(filepath.Join(src, "d00/s00/f00000"))
	third := mustRun(t, job)
	m, err := readManifestFile(filepath.Join(host, third.Snapshot, metaDir, "manifest"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m[strings.TrimPrefix(src, "/")+"/d00/s00/f00000"]; ok {
		t.Error("the manifest still lists a deleted file")
	}
	compareSnapshot(t, job, src)
}

// TestTargetInsideSourceSkipped backs up a directory that contains the target itself: the
// target is never walked into (no recursion into the backups).
func TestTargetInsideSourceSkipped(t *testing.T) {
	src := t.TempDir()
	tree{t, src}.file("doc", "d", 0o644)
	target := filepath.Join(src, "drive")
	os.Mkdir(target, 0o755)
	job := Job{Sources: []string{src}, Target: target, Host: "h", FSType: "ext4", NoDefaultExcludes: true}
	mustRun(t, job)
	res := mustRun(t, job)
	m, err := readManifestFile(filepath.Join(target, rootDir, job.Host, res.Snapshot, metaDir, "manifest"))
	if err != nil {
		t.Fatal(err)
	}
	rel := strings.TrimPrefix(src, "/")
	if m[rel+"/doc"] == nil {
		t.Error("the source was not backed up")
	}
	for p := range m {
		if strings.HasPrefix(p, rel+"/drive/") {
			t.Errorf("the target was backed up into itself: %s", p)
		}
	}
}

// TestHardLinkGroupChanges re-links a group when its first member changes and turns a
// separate file into a link (ext4 layout; the btrfs working tree in TestRootHardLinkGroupChanges).
func TestHardLinkGroupChanges(t *testing.T) {
	src := t.TempDir()
	hardLinkScenario(t, newJob(t, src, "ext4"), src)
}

func hardLinkScenario(t *testing.T, job Job, src string) {
	tr := tree{t, src}
	tr.file("b", "B", 0o644)
	tr.file("a", "A", 0o644)
	tr.link("b", "c") // group {b, c}, leader b
	tr.file("z", "Z", 0o644)
	mustRun(t, job)
	compareSnapshot(t, job, src)
	// "a" (sorted first) joins the group: a new leader that must be written.
	os.Remove(filepath.Join(src, "a"))
	tr.link("b", "a")
	// z becomes a hard link of a fresh file y.
	tr.file("y", "Y", 0o644)
	os.Remove(filepath.Join(src, "z"))
	tr.link("y", "z")
	mustRun(t, job)
	compareSnapshot(t, job, src)
}

// posixACL encodes user::rw-, user:uid:r--, group::---, mask::r--, other::--- in the kernel's
// xattr format (version 2; tag, perm, id per entry).
func posixACL(uid uint32) []byte {
	le := func(b []byte, v uint32, n int) []byte {
		for i := 0; i < n; i++ {
			b = append(b, byte(v>>(8*i)))
		}
		return b
	}
	b := le(nil, 2, 4)
	for _, e := range [][3]uint32{{0x01, 6, 0xffffffff}, {0x02, 4, uid}, {0x04, 0, 0xffffffff}, {0x10, 4, 0xffffffff}, {0x20, 0, 0xffffffff}} {
		b = le(b, e[0], 2)
		b = le(b, e[1], 2)
		b = le(b, e[2], 4)
	}
	return b
}

func TestLargeFileAndACL(t *testing.T) {
	src := t.TempDir()
	data := make([]byte, 48<<20+12345)
	for i := range data {
		data[i] = byte(i*31 + i>>12)
	}
	if err := os.WriteFile(filepath.Join(src, "big"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(filepath.Join(src, "big"), "system.posix_acl_access", posixACL(4242), 0); err != nil {
		t.Logf("no POSIX ACLs here: %v", err)
	}
	job := newJob(t, src, "ext4")
	res := mustRun(t, job)
	compareSnapshot(t, job, src)
	got, _ := os.ReadFile(filepath.Join(snapPath(job, res.Snapshot, src), "big"))
	if len(got) != len(data) {
		t.Errorf("large file: %d bytes, want %d", len(got), len(data))
	}
	if x := xattrString(filepath.Join(snapPath(job, res.Snapshot, src), "big")); !strings.Contains(x, "system.posix_acl_access") {
		t.Errorf("ACL not copied: %q", x)
	}
}

// TestVanishedDuringBackup removes entries between the scan and the copy: they are reported,
// not fatal, and left out of the snapshot and its manifest.
func TestVanishedDuringBackup(t *testing.T) {
	src := t.TempDir()
	tr := tree{t, src}
	tr.file("keep", "k", 0o644)
	tr.file("victim", "v", 0o644)
	tr.file("victimdir/inner", "i", 0o644)
	tr.symlink("keep", "victimlink")
	job := newJob(t, src, "ext4")
	removed := false
	res, err := Run(context.Background(), job, nil, func(p Progress) {
		if p.Phase == PhaseCopying && !removed {
			removed = true
			os.Remove(filepath.Join(src, "victim"))
			os.RemoveAll(filepath.Join(src, "victimdir"))
			os.Remove(filepath.Join(src, "victimlink"))
		}
	})
	if err != nil {
		t.Fatalf("a vanished file made the run fail: %v", err)
	}
	if !removed {
		t.Fatal("no copying phase reported")
	}
	joined := strings.Join(res.Warnings, "\n")
	for _, n := range []string{"victim:", "victimlink:"} {
		if !strings.Contains(joined, n) || !strings.Contains(joined, "vanished") {
			t.Errorf("no warning for %s in %q", n, res.Warnings)
		}
	}
	m, _ := readManifestFile(filepath.Join(job.Target, rootDir, job.Host, res.Snapshot, metaDir, "manifest"))
	rel := strings.TrimPrefix(src, "/")
	if m[rel+"/keep"] == nil || m[rel+"/victim"] != nil || m[rel+"/victimlink"] != nil || m[rel+"/victimdir/inner"] != nil {
		t.Errorf("manifest after vanishing: keep=%v victim=%v link=%v inner=%v", m[rel+"/keep"] != nil,
			m[rel+"/victim"] != nil, m[rel+"/victimlink"] != nil, m[rel+"/victimdir/inner"] != nil)
	}
	if _, problems, err := Verify(context.Background(), job.Target, job.Host, res.Snapshot, nil); err != nil || len(problems) > 0 {
		t.Errorf("the snapshot does not match its manifest: %v %q", err, problems)
	}
}

// regularBytes is the size of the regular files under root, each path counted (as a manifest
// lists hard links).
func regularBytes(t *testing.T, root string) uint64 {
	t.Helper()
	var total uint64
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			total += uint64(fi.Size())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return total
}

// checkByteReports checks reports grow monotonically against one total and end at it.
func checkByteReports(t *testing.T, what string, reports [][2]uint64, total uint64) {
	t.Helper()
	if len(reports) < 2 {
		t.Fatalf("%s: %d progress reports, want a first and a last", what, len(reports))
	}
	if reports[0][0] != 0 {
		t.Errorf("%s: first report %v, want 0 done", what, reports[0])
	}
	for i, r := range reports {
		if r[1] != total {
			t.Errorf("%s: report %d total %d, want %d", what, i, r[1], total)
		}
		if i > 0 && r[0] < reports[i-1][0] {
			t.Errorf("%s: report %d went back from %d to %d", what, i, reports[i-1][0], r[0])
		}
	}
	if last := reports[len(reports)-1]; last[0] != total {
		t.Errorf("%s: last report %v, want %d done", what, last, total)
	}
}

// TestRestoreAndVerifyReportProgress runs Restore and Verify in the test process and in the
// engine child (SpawnRestore, SpawnVerify): both report bytes that grow to the manifest's total.
func TestRestoreAndVerifyReportProgress(t *testing.T) {
	src := buildRich(t)
	job := newJob(t, src, "ext4")
	res := mustRun(t, job)
	total := regularBytes(t, src)
	if total == 0 {
		t.Fatal("the test tree has no file content")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	childEnv = append(append([]string(nil), sysexec.Env...), "PLUGVAULT_TEST_ENGINE_CHILD=1")
	t.Cleanup(func() { childEnv = nil })
	type progressFunc = func(done, total uint64)
	ways := []struct {
		name    string
		verify  func(progressFunc) ([]string, error)
		restore func(rel, dest string, progress progressFunc) error
	}{
		{"in process, every step", func(p progressFunc) ([]string, error) {
			_, problems, err := Verify(context.Background(), job.Target, job.Host, res.Snapshot, p)
			return problems, err
		}, func(rel, dest string, p progressFunc) error {
			return Restore(context.Background(), job.Target, job.Host, res.Snapshot, rel, dest, false, p)
		}},
		{"in the engine child", func(p progressFunc) ([]string, error) {
			_, problems, err := SpawnVerify(context.Background(), exe, nil, job.Target, job.Host, res.Snapshot, p)
			return problems, err
		}, func(rel, dest string, p progressFunc) error {
			return SpawnRestore(context.Background(), exe, nil, job.Target, job.Host, res.Snapshot, rel, dest, false, p)
		}},
	}
	for i, w := range ways {
		t.Run(w.name, func(t *testing.T) {
			if i == 0 {
				byteInterval = 0
				t.Cleanup(func() { byteInterval = progressInterval })
			}
			var mu sync.Mutex
			var reports [][2]uint64
			record := func(done, total uint64) {
				mu.Lock()
				reports = append(reports, [2]uint64{done, total})
				mu.Unlock()
			}
			if problems, err := w.verify(record); err != nil || len(problems) > 0 {
				t.Fatal(err, problems)
			}
			checkByteReports(t, "verify", reports, total)

			reports = nil
			if err := w.restore(strings.TrimPrefix(src, "/"), t.TempDir(), record); err != nil {
				t.Fatal(err)
			}
			checkByteReports(t, "restore", reports, total)
			if i == 0 && len(reports) < 4 {
				t.Errorf("restore reported %v unthrottled, want a step per file", reports)
			}

			reports = nil
			dir := filepath.Join(src, "dir")
			if err := w.restore(strings.TrimPrefix(dir, "/"), t.TempDir(), record); err != nil {
				t.Fatal(err)
			}
			checkByteReports(t, "restore of a directory", reports, regularBytes(t, dir))
		})
	}
}

// TestListWithoutChangeCount: a snapshot whose stats do not record its changes (written by an
// older version, or by a resumed run) is listed with ChangedUnknown, not 0.
func TestListWithoutChangeCount(t *testing.T) {
	src := t.TempDir()
	tree{t, src}.file("a", "a", 0o644)
	job := newJob(t, src, "ext4")
	res := mustRun(t, job)
	path := filepath.Join(job.Target, rootDir, job.Host, res.Snapshot, metaDir, "stats.json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	if _, ok := st["changed"]; !ok {
		t.Fatalf("stats.json records no change count: %s", data)
	}
	delete(st, "changed")
	if data, err = json.Marshal(st); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	snaps, err := List(job.Target, job.Host)
	if err != nil || len(snaps) != 1 || snaps[0].Files == 0 || snaps[0].Changed != api.ChangedUnknown {
		t.Errorf("List = %+v, %v; want the stats read and Changed unknown", snaps, err)
	}
}

// An unchanged file that can no longer be linked from the previous snapshot (gone from it) is
// copied instead, by the workers that make links.
func TestExt4LinkFallsBackToCopy(t *testing.T) {
	src := t.TempDir()
	tr := tree{t, src}
	tr.mkdir("d")
	tr.file("d/kept", "kept data", 0o644)
	tr.file("d/gone", "gone from the snapshot", 0o644)
	job := newJob(t, src, "ext4")
	first := mustRun(t, job)
	if err := os.Remove(filepath.Join(snapPath(job, first.Snapshot, src), "d/gone")); err != nil {
		t.Fatal(err)
	}
	second := mustRun(t, job)
	dst := snapPath(job, second.Snapshot, src)
	compareTrees(t, src, dst)
	var a, b unix.Stat_t
	if err := unix.Lstat(filepath.Join(dst, "d/kept"), &a); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lstat(filepath.Join(snapPath(job, first.Snapshot, src), "d/kept"), &b); err != nil {
		t.Fatal(err)
	}
	if a.Ino != b.Ino {
		t.Error("an unchanged file was not linked from the previous snapshot")
	}
}
