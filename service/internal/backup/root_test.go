package backup

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/apitest"
	"github.com/plugvault/plugvault/service/internal/mount"
	"github.com/plugvault/plugvault/service/internal/sysexec"
)

// loopMount makes a file image of fstype, loop-mounts it and returns the mount point and the
// loop device's number.
func loopMount(t *testing.T, fstype string, size int64) (string, uint64) {
	t.Helper()
	apitest.RequireRoot(t)
	mkfs := apitest.RequireTool(t, "mkfs."+fstype)
	losetup := apitest.RequireTool(t, "losetup")
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
	res, err := run(context.Background(), job, func() error { return mount.Guard(job.Target, job.Dev) }, nil, testClock.now)
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
	tree{t, src}.file("dir/exec.sh", "changed", 0o755)
	os.Remove(filepath.Join(src, "empty"))
	second := runGuarded(t, job)
	compareSnapshot(t, job, src)
	st := readStatsFile(t, job, second.Snapshot)
	if st.BytesWritten != uint64(len("changed")) {
		t.Errorf("incremental copied %d bytes, want %d", st.BytesWritten, len("changed"))
	}
	// The first snapshot is intact.
	if _, problems, err := Verify(context.Background(), job.Target, job.Host, first.Snapshot, nil); err != nil || len(problems) > 0 {
		t.Errorf("first snapshot after the second run: %v %q", err, problems)
	}
	// The guard stops a run when the target is not our mount.
	bad := job
	bad.Dev++
	if _, err := Run(context.Background(), bad, func() error { return mount.Guard(bad.Target, bad.Dev) }, nil); err == nil {
		t.Error("a run with a failing guard succeeded")
	}
	// Retention deletes through the privileged path.
	deleted, forSpace, err := Prune(Job{Target: job.Target, Host: job.Host, FSType: fstype, Sources: job.Sources,
		Retention: job.Retention}, time.Now().Add(400*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if forSpace != 0 {
		t.Errorf("the policy's own deletion counted %d for space", forSpace)
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
			if _, problems, err := Verify(context.Background(), job.Target, job.Host, res.Snapshot, nil); err != nil || len(problems) > 0 {
				t.Errorf("verify: %v %q", err, problems)
			}
			if fstype != "btrfs" {
				// On ext4 a root run's snapshot metadata is root's (0700), so a user's run
				// after it copies everything again: not tested here.
				return
			}
			// A run as root in between writes metadata (the manifest's segments) as root;
			// the user's next run must still read it and write only what changed.
			tree{t, src}.file("d00/by-root", "r", 0o644)
			os.Lchown(filepath.Join(src, "d00/by-root"), uid, gid)
			runGuarded(t, job)
			tree{t, src}.file("d00/by-user", "u", 0o644)
			os.Lchown(filepath.Join(src, "d00/by-user"), uid, gid)
			res, err = Spawn(context.Background(), bin, job, &syscall.Credential{Uid: uid, Gid: gid}, nil)
			if err != nil {
				t.Fatal(err)
			}
			compareSnapshot(t, job, src)
			if st := readStatsFile(t, job, res.Snapshot); st.Resumed || st.BytesWritten != 1 {
				t.Errorf("after a root run the user's run copied %d bytes, want 1 (resumed=%v)", st.BytesWritten, st.Resumed)
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

// TestRootKilledBeforeFirstCommit kills the engine child while it copies the first file of a
// run, before anything is committed. The btrfs working tree outlives the run, so the next run
// must know it was interrupted and remove the temporary file the killed one left behind.
func TestRootKilledBeforeFirstCommit(t *testing.T) {
	src := t.TempDir()
	tree{t, src}.file("small", "unchanged", 0o644)
	tree{t, src}.file("big", "small for now", 0o644)
	job := rootJob(t, src, "btrfs")
	mustRun(t, job)
	// The file grows: its new version is copied to a temporary name (the tree holds the old
	// one), which stays long enough to be seen.
	tree{t, src}.file("big", strings.Repeat("0123456789abcdef", 8<<20), 0o644)
	if err := Prepare(job, os.Geteuid(), os.Getegid()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// No commit before the kill: the journal holds nothing a commit wrote.
	c, _ := startEngineChild(ctx, t, job, int(time.Hour/time.Millisecond))
	exited := make(chan error, 1)
	go func() { exited <- c.Wait() }()
	dir := filepath.Join(job.Target, rootDir, job.Host, workingDir, strings.TrimPrefix(src, "/"))
	tmp := ""
	for tmp == "" {
		select {
		case err := <-exited:
			t.Fatalf("the run ended (%v) before its temporary file was seen", err)
		case <-time.After(time.Millisecond):
		}
		names, _ := os.ReadDir(dir)
		for _, n := range names {
			if strings.HasPrefix(n.Name(), ".pv-tmp-") {
				tmp = n.Name()
			}
		}
	}
	c.Kill()
	<-exited
	if _, err := os.Lstat(filepath.Join(dir, tmp)); err != nil {
		t.Fatalf("the killed run left no temporary file: %v", err)
	}
	res := mustRun(t, job)
	if st := readStatsFile(t, job, res.Snapshot); !st.Resumed {
		t.Error("the run after the kill did not take the tree for an interrupted one")
	}
	compareSnapshot(t, job, src)
	if _, err := os.Lstat(filepath.Join(dir, tmp)); err == nil {
		t.Errorf("the working tree still holds %s", tmp)
	}
}

func TestRootHardLinkGroupChanges(t *testing.T) {
	src := t.TempDir()
	hardLinkScenario(t, rootJob(t, src, "btrfs"), src)
}

// TestRootSpaceFloor thins the oldest snapshots while free space is under the floor, never the
// newest.
func TestRootSpaceFloor(t *testing.T) {
	mnt, dev := loopMount(t, "ext4", 256<<20)
	src := t.TempDir()
	job := Job{Sources: []string{src}, Target: mnt, Host: "h", FSType: "ext4", Dev: dev, NoDefaultExcludes: true}
	var names []string
	for i := 0; i < 4; i++ {
		// 40 MiB of new data per snapshot: nothing can be shared by hard links.
		data := make([]byte, 40<<20)
		for j := range data {
			data[j] = byte(i + j*7)
		}
		if err := os.WriteFile(filepath.Join(src, "big"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		res := runGuarded(t, job)
		names = append(names, res.Snapshot)
	}
	fd, _ := unix.Open(mnt, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	before, _ := freePercent(fd)
	unix.Close(fd)
	t.Logf("free before thinning: %.0f%%", before)
	job.Retention.MinFreePercent = 99 // unreachable: thin down to the newest
	deleted, forSpace, err := Prune(job, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if forSpace != len(deleted) {
		t.Errorf("%d of the %d deletions counted for space, want all (the policy keeps them)", forSpace, len(deleted))
	}
	snaps, _ := List(job.Target, job.Host)
	if len(snaps) != 1 || snaps[0].Name != names[len(names)-1] {
		t.Errorf("left %+v after deleting %v; want only the newest %s", snaps, deleted, names[len(names)-1])
	}
	for i, d := range deleted {
		if d != names[i] {
			t.Errorf("deleted %v, want oldest first %v", deleted, names[:len(names)-1])
			break
		}
	}
}

// TestRootRestoreKilled cancels a restore (its engine child is killed) while it writes a big
// file: the destination holds neither a temporary file nor a half-written one.
func TestRootRestoreKilled(t *testing.T) {
	src := t.TempDir()
	tree{t, src}.file("big", strings.Repeat("0123456789abcdef", 8<<20), 0o644)
	job := rootJob(t, src, "ext4")
	res := runGuarded(t, job)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	childEnv = append(append([]string(nil), sysexec.Env...), "PLUGVAULT_TEST_ENGINE_CHILD=1")
	t.Cleanup(func() { childEnv = nil })
	// A filesystem of its own: its free space drops only as the restore writes.
	dest, _ := loopMount(t, "ext4", 512<<20)
	var before unix.Statfs_t
	if err := unix.Statfs(dest, &before); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ended := make(chan error, 1)
	go func() {
		ended <- SpawnRestore(ctx, exe, nil, job.Target, job.Host, res.Snapshot, strings.TrimPrefix(src, "/"), dest, false, nil)
	}()
	for written := uint64(0); written < 16<<20; {
		select {
		case err := <-ended:
			t.Fatalf("the restore ended (%v) before 16 MiB of the file were written", err)
		case <-time.After(time.Millisecond):
		}
		var st unix.Statfs_t
		if err := unix.Statfs(dest, &st); err != nil {
			t.Fatal(err)
		}
		written = (before.Bfree - min(st.Bfree, before.Bfree)) * uint64(st.Bsize)
	}
	cancel()
	if err := <-ended; !errors.Is(err, context.Canceled) {
		t.Fatalf("want a cancellation error, got %v", err)
	}
	err = filepath.WalkDir(dest, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".pv-tmp-") || d.Name() == "big" {
			t.Errorf("the killed restore left %s", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRootRestoreAsCaller restores through the engine child with an unprivileged user's
// credentials: allowed into that user's directory, refused into root's.
func TestRootRestoreAsCaller(t *testing.T) {
	const uid, gid = 65534, 65534
	src := t.TempDir()
	tree{t, src}.file("doc.txt", "mine", 0o644)
	openUp(filepath.Join(src, "doc.txt")) // the snapshot keeps the source's permissions
	job := rootJob(t, src, "ext4")
	res := runGuarded(t, job)
	openUp(job.Target)
	exe, _ := os.Executable()
	bin := filepath.Join(t.TempDir(), "engine")
	data, _ := os.ReadFile(exe)
	os.WriteFile(bin, data, 0o755)
	openUp(bin)
	childEnv = append(append([]string(nil), sysexec.Env...), "PLUGVAULT_TEST_ENGINE_CHILD=1")
	t.Cleanup(func() { childEnv = nil })
	cred := &syscall.Credential{Uid: uid, Gid: gid}
	mine := filepath.Join(t.TempDir(), "home")
	os.Mkdir(mine, 0o755)
	os.Chown(mine, uid, gid)
	openUp(mine)
	rel := strings.TrimPrefix(src, "/") + "/doc.txt"
	if err := SpawnRestore(context.Background(), bin, cred, job.Target, job.Host, res.Snapshot, rel, mine, false, nil); err != nil {
		t.Fatalf("restore into the caller's directory: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(mine, "doc.txt"), &st); err != nil || st.Uid != uid {
		t.Errorf("restored file: %v, owner %d (the caller cannot give files away)", err, st.Uid)
	}
	roots := filepath.Join(t.TempDir(), "root-only")
	os.Mkdir(roots, 0o755)
	openUp(roots)
	if err := SpawnRestore(context.Background(), bin, cred, job.Target, job.Host, res.Snapshot, rel, roots, false, nil); err == nil {
		t.Error("an unprivileged caller restored into root's directory")
	}
	if _, err := os.Lstat(filepath.Join(roots, "doc.txt")); err == nil {
		t.Error("a file appeared in root's directory")
	}
	// The manifest names every user's files: it is root's, and the daemon verifies as root.
	checked, problems, err := SpawnVerify(context.Background(), bin, nil, job.Target, job.Host, "", nil)
	if err != nil || checked == 0 || len(problems) != 0 {
		t.Errorf("verify as the caller: %d %q %v", checked, problems, err)
	}
}

// TestRootPromoteRefusesFreshWorkingTree: a first run stopped before it wrote its journal
// leaves a working subvolume without manifest, which must not become a snapshot.
func TestRootPromoteRefusesFreshWorkingTree(t *testing.T) {
	src := buildRich(t)
	job := rootJob(t, src, "btrfs")
	if err := Prepare(job, os.Geteuid(), os.Getegid()); err != nil {
		t.Fatal(err)
	}
	if err := Promote(job, testClock.now().UTC().Format(api.SnapshotLayout)); err == nil {
		t.Error("a working subvolume that never finished a run was promoted")
	}
	if snaps, _ := List(job.Target, job.Host); len(snaps) != 0 {
		t.Errorf("snapshots after a refused promote: %+v", snaps)
	}
}
