package backup

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/plugvault/plugvault/service/internal/sysexec"
	"github.com/plugvault/plugvault/service/internal/testenv"
)

// loopMount makes a file image of fstype, loop-mounts it and returns the mount point and the
// loop device's number.
func loopMount(t *testing.T, fstype string, size int64) (string, uint64) {
	t.Helper()
	testenv.RequireRoot(t)
	mkfs := testenv.RequireTool(t, "mkfs."+fstype)
	losetup := testenv.RequireTool(t, "losetup")
	dir := t.TempDir()
	img := filepath.Join(dir, "img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(size)
	f.Close()
	args := []string{"-q", img}
	if fstype == "btrfs" {
		args = []string{"-q", "-f", img}
	} else if fstype == "ext4" {
		args = []string{"-q", "-F", img}
	}
	if out, err := exec.Command(mkfs, args...).CombinedOutput(); err != nil {
		t.Fatalf("mkfs: %v: %s", err, out)
	}
	out, err := exec.Command(losetup, "-f", "--show", img).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	if err := unix.Mount(loop, mnt, fstype, unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOATIME, ""); err != nil {
		exec.Command(losetup, "-d", loop).Run()
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
		exec.Command(losetup, "-d", loop).Run()
	})
	var st unix.Stat_t
	if err := unix.Stat(loop, &st); err != nil {
		t.Fatal(err)
	}
	return mnt, st.Rdev
}

func rootJob(t *testing.T, src, fstype string) Job {
	mnt, dev := loopMount(t, fstype, 1<<30)
	return Job{Sources: []string{src}, Target: mnt, Host: "roothost", FSType: fstype, Dev: dev, NoDefaultExcludes: true}
}

func runGuarded(t *testing.T, job Job) Result {
	t.Helper()
	res, err := Run(context.Background(), job, func() error { return CheckMount(job.Target, job.Dev) }, nil)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func testRealTarget(t *testing.T, fstype string) {
	src := buildRich(t)
	// Owners other than root, and a device node (root only).
	os.Lchown(filepath.Join(src, "a.txt"), 1234, 5678)
	os.Lchown(filepath.Join(src, "link-rel"), 4321, 8765)
	unix.Mknod(filepath.Join(src, "null"), unix.S_IFCHR|0o644, int(unix.Mkdev(1, 3)))
	job := rootJob(t, src, fstype)
	first := runGuarded(t, job)
	compareSnapshot(t, job, src)
	host := filepath.Join(job.Target, rootDir, job.Host)
	if fstype == "btrfs" {
		// Read-only subvolume: a write fails.
		if err := os.WriteFile(filepath.Join(host, first.Snapshot, "x"), nil, 0o644); err == nil {
			t.Error("a btrfs snapshot is writable")
		}
		fd, _ := unix.Open(host, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if !isSubvolume(fd, first.Snapshot) || !isSubvolume(fd, workingDir) {
			t.Error("snapshot or working tree is not a subvolume")
		}
		unix.Close(fd)
	}
	time.Sleep(1100 * time.Millisecond)
	tree{t, src}.file("dir/exec.sh", "changed", 0o755)
	os.Remove(filepath.Join(src, "empty"))
	second := runGuarded(t, job)
	compareSnapshot(t, job, src)
	st := readStatsFile(t, job, second.Snapshot)
	if st.BytesWritten != uint64(len("changed")) {
		t.Errorf("incremental copied %d bytes, want %d", st.BytesWritten, len("changed"))
	}
	// The first snapshot is intact.
	if _, problems, err := Verify(context.Background(), job.Target, job.Host, first.Snapshot); err != nil || len(problems) > 0 {
		t.Errorf("first snapshot after the second run: %v %q", err, problems)
	}
	// The guard stops a run when the target is not our mount.
	bad := job
	bad.Dev++
	if _, err := Run(context.Background(), bad, func() error { return CheckMount(bad.Target, bad.Dev) }, nil); err == nil {
		t.Error("a run with a failing guard succeeded")
	}
	// Retention deletes through the privileged path.
	deleted, err := Prune(Job{Target: job.Target, Host: job.Host, FSType: fstype, Sources: job.Sources,
		Retention: job.Retention}, time.Now().Add(400*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	snaps, _ := List(job.Target, job.Host)
	if len(deleted) != 1 || deleted[0] != first.Snapshot || len(snaps) != 1 || snaps[0].Name != second.Snapshot {
		t.Errorf("Prune deleted %v, left %+v", deleted, snaps)
	}
}

func TestRootBtrfs(t *testing.T) { testRealTarget(t, "btrfs") }
func TestRootExt4(t *testing.T)  { testRealTarget(t, "ext4") }

// TestRootSpawnUnprivileged runs the engine child as an unprivileged user on btrfs: the daemon
// side creates the working subvolume and takes the read-only snapshot.
func TestRootSpawnUnprivileged(t *testing.T) {
	for _, fstype := range []string{"btrfs", "ext4"} {
		t.Run(fstype, func(t *testing.T) {
			const uid, gid = 65534, 65534
			src := buildMany(t, 300, 4)
			filepath.Walk(src, func(p string, _ os.FileInfo, _ error) error { return os.Lchown(p, uid, gid) })
			job := rootJob(t, src, fstype)
			openUp(src)
			openUp(job.Target)
			exe, _ := os.Executable()
			// The test binary must be reachable by the child's user.
			bin := filepath.Join(t.TempDir(), "engine")
			data, _ := os.ReadFile(exe)
			os.WriteFile(bin, data, 0o755)
			openUp(bin)
			childEnv = append(append([]string(nil), sysexec.Env...), "PLUGVAULT_TEST_ENGINE_CHILD=1")
			t.Cleanup(func() { childEnv = nil })
			var progress []Progress
			res, err := Spawn(context.Background(), bin, job, &syscall.Credential{Uid: uid, Gid: gid}, func(p Progress) { progress = append(progress, p) })
			if err != nil {
				t.Fatal(err)
			}
			if len(progress) == 0 {
				t.Error("no progress reported")
			}
			compareSnapshot(t, job, src)
			if _, problems, err := Verify(context.Background(), job.Target, job.Host, res.Snapshot); err != nil || len(problems) > 0 {
				t.Errorf("verify: %v %q", err, problems)
			}
		})
	}
}

// openUp makes p's ancestors below the temp directory traversable for another user.
func openUp(p string) {
	tmp := os.TempDir()
	for d := filepath.Dir(p); strings.HasPrefix(d, tmp+"/"); d = filepath.Dir(d) {
		var st unix.Stat_t
		if unix.Stat(d, &st) == nil {
			os.Chmod(d, os.FileMode(st.Mode&0o7777|0o055))
		}
	}
}

func TestRootCrashInjectionBtrfs(t *testing.T) {
	src := buildMany(t, 4000, 6)
	crashTwoRounds(t, rootJob(t, src, "btrfs"), src, 41, "d04")
}

func TestRootHardLinkGroupChanges(t *testing.T) {
	src := t.TempDir()
	hardLinkScenario(t, rootJob(t, src, "btrfs"), src)
}
