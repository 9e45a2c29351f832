package backup

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/plugvault/plugvault/service/api"
	"golang.org/x/sys/unix"
)

// A run that does not fit on the drive stops and asks for room: the engine (unprivileged, it
// may not delete snapshots) ends with a noRoomError, and the privileged side (withRoom) thins
// the oldest complete snapshots and runs the engine again, which resumes its partial tree.

// NoRoom is why the engine stopped for want of room on the target. It travels from the engine
// child to the daemon in ChildMessage.
type NoRoom struct {
	// Need is about how many more bytes the run has to write (what it has written stays).
	Need uint64 `json:"need"`
	// Total is about how many bytes the whole run writes, its partial tree included.
	Total uint64 `json:"total"`
	// Hit: a write failed with ENOSPC; otherwise the estimate made before copying said it
	// would not fit.
	Hit bool `json:"hit,omitempty"`
}

// noRoomError is a run stopped for want of room.
type noRoomError struct {
	NoRoom
	err error
}

func (e *noRoomError) Error() string {
	if e.err != nil {
		return e.err.Error()
	}
	return fmt.Sprintf("cannot back up: the target has less than the %s this backup needs", api.FormatBytes(e.Need))
}

func (e *noRoomError) Unwrap() error { return e.err }

// FullError is a run that does not fit on the drive even with every complete snapshot but the
// newest deleted. The previous snapshots are intact; the run's partial tree is removed.
type FullError struct {
	// Short is about how many more bytes the backup needs than the drive has free.
	Short uint64
	Err   error
}

func (e *FullError) Error() string {
	return fmt.Sprintf("cannot back up: the backup drive is full (about %s short): %v", api.FormatBytes(e.Short), e.Err)
}

func (e *FullError) Unwrap() error { return e.Err }

// slack is what a run of n bytes of file data needs on top of them (directories, metadata,
// the manifest, and the filesystem's own rounding).
func slack(n uint64) uint64 { return n/50 + 4<<20 }

// newBytes estimates the bytes of file data p writes: the size of each copied file (the
// allocated size of a sparse one). In low, a changed file that is rewritten from a clone of
// its previous version counts nothing, and one rewritten in place only what it grew by (only
// changed blocks, or an append's new bytes, may be written, and the estimate that may thin
// snapshots before the copy must not be larger than what is written); high counts it whole.
func (e *engine) newBytes(p *plan, sparse map[string]int64) (low, high uint64) {
	for _, acts := range p.writes {
		for _, a := range acts {
			s := a.s
			if s.Type != 'f' || a.op != opCopy {
				continue
			}
			n := uint64(s.Size)
			if alloc, ok := sparse[s.Path]; ok {
				n = uint64(alloc)
			}
			high += n
			k := e.known[s.Path]
			switch {
			case k != nil && e.dest.clonesInPlace() && s.Size >= blockMin:
			case k != nil && e.dest.rewritesInPlace() && s.Size <= copyBufSize:
				if s.Size > k.Size {
					low += uint64(s.Size - k.Size)
				}
			default:
				low += n
			}
		}
	}
	return low, high
}

// roomCheck is the engine's check before copying: when the target has other complete
// snapshots than the newest (there is something to thin) and the estimate of what the run
// writes exceeds the free space, it returns a noRoomError, so the daemon thins before the copy
// rather than after a failed write.
func (e *engine) roomCheck(complete []string) error {
	if e.job.SpaceChecked || len(complete) < 2 {
		return nil
	}
	need := e.estimate + slack(e.estimate)
	free, err := freeBytes(e.destFd)
	if err != nil || free >= need {
		return nil
	}
	return &noRoomError{NoRoom: NoRoom{Need: need, Total: need}}
}

// noRoom turns a run's error caused by a full target into a noRoomError. A write failed, so
// what the run needs is taken from the high estimate.
func (e *engine) noRoom(err error) error {
	var nr *noRoomError
	if err == nil || !errors.Is(err, unix.ENOSPC) || errors.As(err, &nr) {
		return err
	}
	need := slack(e.highEstimate)
	if w := e.bytesWritten.Load(); w < e.highEstimate {
		need += e.highEstimate - w
	}
	return &noRoomError{NoRoom: NoRoom{Need: need, Total: e.highEstimate + slack(e.highEstimate), Hit: true}, err: err}
}

func freeBytes(fd int) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// withRoom runs the engine (once: in a child or in this process) and, while it stops for want
// of room, thins complete snapshots (retention's own first, then the oldest; never the newest)
// until the free space covers what the run still needs, and runs it again: it resumes its
// partial tree, so nothing written is written twice. When nothing is left to thin and a write
// still failed, the partial tree is removed and the run fails with a *FullError. guard (nil:
// none) is checked before anything is deleted; progress (nil: none) hears PhasePruning.
func withRoom(job Job, guard func() error, now func() time.Time, progress func(Progress), once func(Job) (Result, error)) (Result, error) {
	dropped := 0
	for {
		res, err := once(job)
		res.Dropped += dropped
		var nr *noRoomError
		if !errors.As(err, &nr) {
			return res, err
		}
		// The estimate has had its say: what follows is decided by real writes.
		job.SpaceChecked = true
		if guard != nil {
			if err := guard(); err != nil {
				return res, fmt.Errorf("cannot write to the backup drive: %w", err)
			}
		}
		if progress != nil {
			progress(Progress{Phase: PhasePruning, ETA: -1})
		}
		deleted, forSpace, err := thin(job, now(), func(hfd int, n int) bool {
			free, err := freeBytes(hfd)
			// A failed write is proof enough that one snapshot has to go.
			return err == nil && (free < nr.Need || (nr.Hit && n == 0))
		})
		dropped += forSpace
		if err != nil {
			return res, fmt.Errorf("cannot make room on the backup drive: %w", err)
		}
		if len(deleted) > 0 || !nr.Hit {
			continue
		}
		free, err := discardPartial(job)
		if err != nil {
			return res, err
		}
		short := nr.Need
		if nr.Total > free {
			short = nr.Total - free
		}
		return res, &FullError{Short: short, Err: nr}
	}
}

// discardPartial removes the partial tree of a run that does not fit (the btrfs working
// subvolume, or the ext4/xfs <name>.partial) and returns the free space then. It is not kept
// for resuming: the same sources fail the same way next time, a full drive fails every other
// write too (a full btrfs may refuse even some deletes), and a run after the user made room
// (excluded folders, a bigger drive) starts a new tree on btrfs as a cheap snapshot of the
// newest complete one anyway.
func discardPartial(job Job) (uint64, error) {
	tfd, err := openDirPath(job.Target)
	if err != nil {
		return 0, fmt.Errorf("cannot open target %q: %w", job.Target, err)
	}
	defer unix.Close(tfd)
	hfd, err := openDirBeneath(tfd, job.hostRel())
	if err != nil {
		return 0, fmt.Errorf("cannot open %s: %w", job.hostRel(), err)
	}
	defer unix.Close(hfd)
	names, err := readDirNames(hfd)
	if err != nil {
		return 0, fmt.Errorf("cannot list the snapshots: %w", err)
	}
	before, _ := freePercent(hfd)
	for _, n := range names {
		if n == workingDir || (strings.HasSuffix(n, partialExt) && api.IsSnapshotName(strings.TrimSuffix(n, partialExt))) {
			if err := deleteSnapshot(hfd, n); err != nil {
				return 0, fmt.Errorf("cannot remove the partial backup: %w", err)
			}
		}
	}
	destinationFor(job.FSType).settle(hfd, before)
	return freeBytes(hfd)
}
