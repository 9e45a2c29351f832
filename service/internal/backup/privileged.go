package backup

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/plugvault/plugvault/service/api"
	"golang.org/x/sys/unix"
)

// Prepare is the privileged step before a run (the daemon calls it as root before Spawn): it
// creates plugvault/ (root, 0755) and plugvault/<host>/ owned by uid:gid, and on btrfs the
// .working subvolume owned by uid:gid (a fresh one is a snapshot of the newest complete
// snapshot, so nothing is copied again).
func Prepare(job Job, uid, gid int) error {
	if err := job.validate(); err != nil {
		return err
	}
	tfd, err := openDirPath(job.Target)
	if err != nil {
		return fmt.Errorf("cannot open target %q: %w", job.Target, err)
	}
	defer unix.Close(tfd)
	if err := mkdirOwned(tfd, rootDir, 0o755, -1, -1); err != nil {
		return err
	}
	if err := mkdirOwned(tfd, job.hostRel(), 0o755, uid, gid); err != nil {
		return err
	}
	hfd, err := openDirBeneath(tfd, job.hostRel())
	if err != nil {
		return fmt.Errorf("cannot open %s: %w", job.hostRel(), err)
	}
	defer unix.Close(hfd)
	return destinationFor(job.FSType).prepare(hfd, job.hostRel(), uid, gid)
}

// mkdirOwned creates rel below root if missing and gives it owner and mode.
func mkdirOwned(root int, rel string, mode uint32, uid, gid int) error {
	d, n := splitRel(rel)
	pfd, err := openDirBeneath(root, d)
	if err != nil {
		return fmt.Errorf("cannot open %q on the target: %w", d, err)
	}
	defer unix.Close(pfd)
	if err := unix.Mkdirat(pfd, n, mode); err != nil && err != unix.EEXIST {
		return fmt.Errorf("cannot create %q on the target: %w", rel, err)
	}
	fd, err := openDirBeneath(pfd, n)
	if err != nil {
		return fmt.Errorf("cannot open %q on the target: %w", rel, err)
	}
	defer unix.Close(fd)
	if uid >= 0 {
		if err := unix.Fchown(fd, uid, gid); err != nil {
			return fmt.Errorf("cannot set the owner of %q: %w", rel, err)
		}
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		return fmt.Errorf("cannot set the mode of %q: %w", rel, err)
	}
	return nil
}

func newestComplete(hfd int) string {
	names, _ := readDirNames(hfd)
	var best string
	for _, n := range names {
		if api.IsSnapshotName(n) && n > best {
			best = n
		}
	}
	return best
}

// Promote is the privileged step after a successful btrfs run: it takes the read-only snapshot
// name of .working and points "latest" at it. On ext4/xfs the engine has already promoted its
// partial, and Promote only checks that the snapshot exists.
func Promote(job Job, name string) error {
	if err := job.validate(); err != nil {
		return err
	}
	if !api.IsSnapshotName(name) {
		return fmt.Errorf("cannot promote: invalid snapshot name %q", name)
	}
	tfd, err := openDirPath(job.Target)
	if err != nil {
		return fmt.Errorf("cannot open target %q: %w", job.Target, err)
	}
	defer unix.Close(tfd)
	hfd, err := openDirBeneath(tfd, job.hostRel())
	if err != nil {
		return fmt.Errorf("cannot open %s: %w", job.hostRel(), err)
	}
	defer unix.Close(hfd)
	return destinationFor(job.FSType).promote(hfd, name)
}

// Prune is the privileged retention step: it deletes the complete snapshots the policy thins
// out, then the oldest ones while free space is under the floor; the newest complete snapshot
// is never deleted. It returns the names deleted and how many of them (the last) the policy
// would have kept: they went for the floor.
func Prune(job Job, now time.Time) ([]string, int, error) {
	floor := float64(effectiveRetention(job.Retention).MinFreePercent)
	return thin(job, now, func(hfd int, _ int) bool {
		free, err := freePercent(hfd)
		return err == nil && free < floor
	})
}

// thin deletes the complete snapshots the policy thins out, then the oldest ones while short
// (called with the host directory and the number deleted so far) says space is short; the
// newest complete snapshot is never deleted. It returns the names deleted, in that order, and
// how many of them were deleted for space (the policy would have kept them).
func thin(job Job, now time.Time, short func(hfd int, deleted int) bool) (deleted []string, forSpace int, err error) {
	if err := job.validate(); err != nil {
		return nil, 0, err
	}
	tfd, err := openDirPath(job.Target)
	if err != nil {
		return nil, 0, fmt.Errorf("cannot open target %q: %w", job.Target, err)
	}
	defer unix.Close(tfd)
	hfd, err := openDirBeneath(tfd, job.hostRel())
	if err != nil {
		return nil, 0, fmt.Errorf("cannot open %s: %w", job.hostRel(), err)
	}
	defer unix.Close(hfd)
	names, err := readDirNames(hfd)
	if err != nil {
		return nil, 0, fmt.Errorf("cannot list the snapshots: %w", err)
	}
	var complete []string
	for _, n := range names {
		if api.IsSnapshotName(n) {
			complete = append(complete, n)
		} else if strings.HasSuffix(n, deleteExt) {
			_ = deleteSnapshot(hfd, n) // an interrupted delete
		}
	}
	sort.Strings(complete)
	r := effectiveRetention(job.Retention)
	gone := map[string]bool{}
	for _, n := range planRetention(complete, now, r) {
		if err := deleteSnapshot(hfd, n); err != nil {
			return deleted, 0, err
		}
		deleted = append(deleted, n)
		gone[n] = true
	}
	var left []string
	for _, n := range complete {
		if !gone[n] {
			left = append(left, n)
		}
	}
	for len(left) > 1 && short(hfd, len(deleted)) {
		// Space freed before (a removed file) shows once committed: only then is the
		// change the settle waits for the snapshot's.
		_ = unix.Syncfs(hfd)
		free, _ := freePercent(hfd)
		if err := deleteSnapshot(hfd, left[0]); err != nil {
			return deleted, forSpace, err
		}
		deleted = append(deleted, left[0])
		forSpace++
		left = left[1:]
		destinationFor(job.FSType).settle(hfd, free)
	}
	return deleted, forSpace, nil
}

// deleteSnapshot renames a snapshot to <name>.deleting (so it is never taken for complete
// again), then removes it.
func deleteSnapshot(hfd int, name string) error {
	del := name
	if !strings.HasSuffix(name, deleteExt) {
		del = name + deleteExt
		if err := unix.Renameat(hfd, name, hfd, del); err != nil {
			return fmt.Errorf("cannot delete snapshot %s: %w", name, err)
		}
		if err := unix.Fsync(hfd); err != nil {
			return fmt.Errorf("cannot delete snapshot %s: %w", name, err)
		}
	}
	if isSubvolume(hfd, del) {
		if err := btrfsDestroy(hfd, del); err != nil {
			return fmt.Errorf("cannot delete snapshot %s: %w", name, err)
		}
		return nil
	}
	if err := removeAllAt(hfd, del); err != nil {
		return fmt.Errorf("cannot delete snapshot %s: %w", name, err)
	}
	return nil
}

func freePercent(fd int) (float64, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return 0, err
	}
	if st.Blocks == 0 {
		return 100, nil
	}
	return float64(st.Bavail) * 100 / float64(st.Blocks), nil
}

// waitFreeChange waits (bounded) for btrfs' cleaner to free a deleted snapshot's space, so the
// space floor does not delete more than needed.
func waitFreeChange(fd int, before float64) {
	btrfsSync(fd)
	for i := 0; i < 40; i++ {
		if f, err := freePercent(fd); err != nil || f > before {
			return
		}
		time.Sleep(250 * time.Millisecond)
		btrfsSync(fd)
	}
}

// Run does a whole backup in this process: Prepare, the engine (again after thinning
// snapshots when it does not fit), Promote and Prune. guard (the mount guard) is called before
// each batch of writes; progress a few times a second at most.
func Run(ctx context.Context, job Job, guard func() error, progress func(Progress)) (Result, error) {
	return run(ctx, job, guard, progress, time.Now)
}

// run is Run with a clock: it names the snapshot and dates retention (tests pass one that
// moves on, so consecutive runs get new names without waiting).
func run(ctx context.Context, job Job, guard func() error, progress func(Progress), now func() time.Time) (Result, error) {
	if err := job.validate(); err != nil {
		return Result{}, err
	}
	if guard != nil {
		if err := guard(); err != nil {
			return Result{}, fmt.Errorf("cannot write to the backup drive: %w", err)
		}
	}
	res, err := withRoom(job, guard, now, progress, func(job Job) (Result, error) {
		tr := newTracer()
		if err := Prepare(job, os.Geteuid(), os.Getegid()); err != nil {
			return Result{}, err
		}
		tr.step("prepare")
		return runEngine(ctx, job, guard, progress, now(), false)
	})
	if err != nil {
		return res, err
	}
	tr := newTracer()
	res, err = finishRun(job, guard, res, now, progress)
	tr.step("promote and prune")
	return res, err
}

// finishRun is the privileged end of a run: promote, then prune. progress (nil: none) hears
// PhaseFinishing before anything is promoted and PhasePruning before the prune.
func finishRun(job Job, guard func() error, res Result, now func() time.Time, progress func(Progress)) (Result, error) {
	if progress != nil {
		progress(Progress{Phase: PhaseFinishing, FilesDone: res.Files, FilesTotal: res.Files,
			BytesDone: res.Bytes, BytesTotal: res.Bytes})
	}
	if guard != nil {
		if err := guard(); err != nil {
			return res, fmt.Errorf("cannot write to the backup drive: %w", err)
		}
	}
	if err := Promote(job, res.Snapshot); err != nil {
		return res, err
	}
	if progress != nil {
		progress(Progress{Phase: PhasePruning, FilesDone: res.Files, FilesTotal: res.Files,
			BytesDone: res.Bytes, BytesTotal: res.Bytes})
	}
	_, forSpace, err := Prune(job, now())
	res.Dropped += forSpace
	if err != nil {
		res.Warnings = append(res.Warnings, err.Error())
	}
	return res, nil
}
