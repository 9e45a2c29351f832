package backup

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// buildSetID makes a source with setuid and setgid files and a setgid directory (as root,
// owned by another user and group).
func buildSetID(t *testing.T) string {
	src := t.TempDir()
	tr := tree{t, src}
	tr.file("bin/su-like", "setuid", 0o755)
	tr.file("bin/sg-like", "setgid", 0o755)
	tr.file("bin/plain", "plain", 0o755)
	tr.mkdir("shared")
	tr.file("shared/doc", "in a setgid directory", 0o664)
	if os.Geteuid() == 0 {
		for _, p := range []string{"bin/su-like", "bin/sg-like", "shared", "shared/doc"} {
			if err := os.Lchown(filepath.Join(src, p), 1234, 5678); err != nil {
				t.Fatal(err)
			}
		}
	}
	// chmod after chown: chown clears the set-ID bits.
	for p, mode := range map[string]uint32{"bin/su-like": 0o4755, "bin/sg-like": 0o2755, "shared": 0o2775} {
		if err := unix.Chmod(filepath.Join(src, p), mode); err != nil {
			t.Fatal(err)
		}
	}
	if os.Geteuid() == 0 {
		// A file capability (as ping's cap_net_raw), on a file of another user: a chown
		// clears it, so a copy that sets it before the owner loses it.
		tr.file("bin/cap-like", "capability", 0o755)
		p := filepath.Join(src, "bin/cap-like")
		if err := os.Lchown(p, 1234, 5678); err != nil {
			t.Fatal(err)
		}
		if err := unix.Setxattr(p, "security.capability", fileCapNetRaw(), 0); err != nil {
			t.Fatal(err)
		}
	}
	return src
}

// fileCapNetRaw is a security.capability value (VFS_CAP_REVISION_2, effective) that permits
// CAP_NET_RAW.
func fileCapNetRaw() []byte {
	v := make([]byte, 20)
	binary.LittleEndian.PutUint32(v[0:], 0x02000000|1)
	binary.LittleEndian.PutUint32(v[4:], 1<<unix.CAP_NET_RAW)
	return v
}

// checkSetID backs src up twice (the second time with a mode that gains a set-ID bit) and
// restores the result: every set-ID bit must be in the snapshot, in Verify's view and in the
// restored tree.
func checkSetID(t *testing.T, job Job, src string, run func(Job) Result) {
	t.Helper()
	// Both snapshots are checked: the space floor must not thin a nearly full test disk.
	job.Retention.MinFreePercent = 1
	first := run(job)
	compareSnapshot(t, job, src)
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(snapPath(job, first.Snapshot, src), "bin/su-like"), &st); err != nil || st.Mode&0o7777 != 0o4755 {
		t.Fatalf("stored setuid file has mode %o (%v), want 4755", st.Mode&0o7777, err)
	}
	if err := unix.Chmod(filepath.Join(src, "bin/plain"), 0o4755); err != nil {
		t.Fatal(err)
	}
	second := run(job)
	compareSnapshot(t, job, src)
	for _, snap := range []string{first.Snapshot, second.Snapshot} {
		if _, problems, err := Verify(context.Background(), job.Target, job.Host, snap, nil); err != nil || len(problems) > 0 {
			t.Errorf("verify %s: %v %q", snap, err, problems)
		}
	}
	// The first snapshot kept the old mode (ext4: the changed file is not a link into it).
	if err := unix.Lstat(filepath.Join(snapPath(job, first.Snapshot, src), "bin/plain"), &st); err != nil || st.Mode&0o7777 != 0o755 {
		t.Errorf("first snapshot's file has mode %o (%v), want 755", st.Mode&0o7777, err)
	}
	dest := t.TempDir()
	if err := Restore(context.Background(), job.Target, job.Host, second.Snapshot, strings.TrimPrefix(src, "/"), dest, false, nil); err != nil {
		t.Fatal(err)
	}
	compareTrees(t, src, filepath.Join(dest, filepath.Base(src)))
	if os.Geteuid() == 0 {
		// compareTrees leaves security.* out (labels differ between filesystems).
		for _, p := range []string{snapPath(job, first.Snapshot, src), snapPath(job, second.Snapshot, src), filepath.Join(dest, filepath.Base(src))} {
			v := make([]byte, 64)
			n, err := unix.Lgetxattr(filepath.Join(p, "bin/cap-like"), "security.capability", v)
			if err != nil || !bytes.Equal(v[:n], fileCapNetRaw()) {
				t.Errorf("%s/bin/cap-like: file capability %x (%v), want %x", p, v[:max(n, 0)], err, fileCapNetRaw())
			}
		}
	}
}

func TestSetuidSetgidStoredAndRestored(t *testing.T) {
	src := buildSetID(t)
	checkSetID(t, newJob(t, src, "ext4"), src, func(j Job) Result { return mustRun(t, j) })
}

func TestRootSetuidSetgidBtrfs(t *testing.T) {
	src := buildSetID(t)
	checkSetID(t, rootJob(t, src, "btrfs"), src, func(j Job) Result { return runGuarded(t, j) })
}
