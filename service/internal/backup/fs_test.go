package backup

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/plugvault/plugvault/service/api/apitest"
)

// TestOpenBeneathWalkRefusesWhatOpenat2Refuses compares the fallback walk with openat2 on the
// same tree, entry by entry: both open the same things and refuse symlinks and "..".
func TestOpenBeneathWalkRefusesWhatOpenat2Refuses(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"a/b", "outside"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "a/b/f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("b", filepath.Join(dir, "a/link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("b/f", filepath.Join(dir, "a/flink")); err != nil {
		t.Fatal(err)
	}
	root, err := unix.Open(filepath.Join(dir, "a"), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(root)
	// The walk refuses every "..", even one that stays beneath (openat2 allows "b/../b"); the
	// engine never builds such paths (validRel).
	if fd, err := openBeneathWalk(root, "b/../b", unix.O_RDONLY, 0); !errors.Is(err, unix.EXDEV) {
		t.Errorf("walk of b/../b = %d, %v, want EXDEV", fd, err)
	}
	for _, rel := range []string{"", ".", "b", "b/f", "link", "link/f", "flink", "../outside", "missing", "b/f/x"} {
		fd1, err1 := openBeneath(root, rel, unix.O_RDONLY, 0)
		fd2, err2 := openBeneathWalk(root, nonEmpty(rel), unix.O_RDONLY, 0)
		if (err1 == nil) != (err2 == nil) {
			t.Errorf("%q: openat2 %v, walk %v", rel, err1, err2)
		}
		for _, fd := range []int{fd1, fd2} {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
		if rel == "../outside" && !errors.Is(err2, unix.EXDEV) {
			t.Errorf("walk of %q = %v, want EXDEV", rel, err2)
		}
	}
}

func nonEmpty(rel string) string {
	if rel == "" {
		return "."
	}
	return rel
}

// TestEngineWithoutOpenat2 runs backups and the symlink races with the fallback walk, as the
// engine runs where openat2 is hidden.
func TestEngineWithoutOpenat2(t *testing.T) {
	noOpenat2.Store(true)
	t.Cleanup(func() { noOpenat2.Store(false) })
	t.Run("every file type", TestBackupEveryFileTypeExt4Layout)
	t.Run("incremental", TestIncrementalExt4LinksUnchangedAndCopiesChanged)
	t.Run("symlink races", TestSymlinkRaces)
}

// openBeneathChild is the test binary as an unprivileged user (see TestMain): it opens rel
// below dir with openat2 or the fallback walk and exits 0 if that worked.
func openBeneathChild(walk bool, dir, rel string) int {
	noOpenat2.Store(walk)
	root, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fd, err := openBeneath(root, rel, unix.O_RDONLY, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	unix.Close(fd)
	return 0
}

// TestRootOpenBeneathWalkNeedsOnlySearchPermission: like openat2's path resolution, the
// fallback walk passes a directory the user may search but not list (a 0711 home, say), as the
// engine child and a restore run as an unprivileged user.
func TestRootOpenBeneathWalkNeedsOnlySearchPermission(t *testing.T) {
	apitest.RequireRoot(t)
	const nobody = 65534
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "home/alice"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "home/alice/public"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "home/alice"), 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	openUp(dir + "/x")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "test.bin")
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"openat2", "walk"} {
		cmd := exec.Command(bin, dir, "home/alice/public")
		cmd.Env = []string{"PLUGVAULT_TEST_OPEN_BENEATH=" + mode}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s as uid %d: %v: %s", mode, nobody, err, out)
		}
	}
}

// TestSymlinkedAncestorKeepsTheDirectorysMode: a source reached through a symlinked ancestor
// (/home -> /data/home, say) stores that ancestor as a directory with the mode of the
// directory it leads to, not the symlink's 0777, which would make it writable by everyone on
// the drive.
func TestSymlinkedAncestorKeepsTheDirectorysMode(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real")
	if err := os.MkdirAll(filepath.Join(real, "src"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(real, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(real, "src", "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("real", filepath.Join(dir, "home")); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "home", "src")
	job := newJob(t, src, "ext4")
	res := mustRun(t, job)
	stored := filepath.Dir(snapPath(job, res.Snapshot, src))
	fi, err := os.Lstat(stored)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.IsDir() || fi.Mode().Perm() != 0o750 {
		t.Errorf("%s stored as %v, want a directory with mode 0750", stored, fi.Mode())
	}
}
