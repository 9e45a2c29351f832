package backup

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// destination is the kind of tree a run writes into and how it becomes a complete snapshot.
// The engine and the privileged steps call it and never ask which filesystem the target has:
// destinationFor is the only place that decides.
type destination interface {
	// prepare is the privileged step before a run (hostFd: plugvault/<host>, hostRel its name
	// for messages): it makes whatever the unprivileged engine needs to exist, owned by
	// uid:gid (uid < 0: keep the owner).
	prepare(hostFd int, hostRel string, uid, gid int) error
	// open opens the tree the run writes (creating it, or taking over an interrupted run's)
	// and sets e.destName, e.destFd, e.prevFd and e.resumed. name is the new snapshot's name;
	// complete and partials are the host directory's snapshots, oldest first.
	open(e *engine, name string, complete, partials []string) error
	// load sets what the tree is known to hold (e.known, e.baseIsManifest) and what unchanged
	// entries may be linked from (e.prev), before the run's journal is applied. It runs while
	// the source is walked: ext4/xfs fills a fresh tree with the previous snapshot there
	// (linkfarm.go, e.strays).
	load(e *engine, prevName string)
	// reusableManifest returns the directory fd whose manifest lists exactly entries, or -1.
	reusableManifest(e *engine, entries []*Entry) int
	// publish is the engine's last step: it turns the finished tree into snapshot name where
	// the engine may do so itself.
	publish(e *engine, name string) error
	// promote is the privileged step after a run: snapshot name must then exist and "latest"
	// name it.
	promote(hostFd int, name string) error
	// settle waits (bounded) after a snapshot was deleted until the free space shows it.
	settle(hostFd int, freeBefore float64)
	// segmentsManifest reports whether the manifest is written segmented (segments.go), so
	// that a snapshot shares the unchanged directories' parts with the one before.
	segmentsManifest() bool
	// clonesInPlace reports whether a changed file is rewritten from a clone of the version the
	// tree already holds (only the blocks that changed are written).
	clonesInPlace() bool
	// rewritesInPlace reports whether a small changed file the tree holds may be rewritten in
	// its own inode (inplace.go): no snapshot shares the tree's inodes.
	rewritesInPlace() bool
}

// destinationFor returns the destination for a target filesystem (Job.validate has checked it).
func destinationFor(fstype string) destination {
	if fstype == "btrfs" {
		return btrfsDest{}
	}
	return linkTreeDest{}
}

// btrfsDest is a btrfs target: the .working subvolume is updated in place and a read-only
// snapshot of it is taken under the snapshot's name (by root, in promote).
type btrfsDest struct{}

func (btrfsDest) prepare(hfd int, hostRel string, uid, gid int) error {
	if _, err := lstatAt(hfd, workingDir); err == nil {
		if !isSubvolume(hfd, workingDir) {
			return fmt.Errorf("cannot use %s/%s: not a btrfs subvolume", hostRel, workingDir)
		}
	} else {
		latest := newestComplete(hfd)
		if latest != "" {
			sfd, err := openDirBeneath(hfd, latest)
			if err != nil {
				return fmt.Errorf("cannot open snapshot %s: %w", latest, err)
			}
			err = btrfsSnapshot(sfd, hfd, workingDir, false)
			unix.Close(sfd)
			if err != nil {
				return fmt.Errorf("cannot create the working subvolume: %w", err)
			}
		} else if err := btrfsCreateSubvol(hfd, workingDir); err != nil {
			return fmt.Errorf("cannot create the working subvolume: %w", err)
		}
	}
	wfd, err := openDirBeneath(hfd, workingDir)
	if err != nil {
		return fmt.Errorf("cannot open the working subvolume: %w", err)
	}
	defer unix.Close(wfd)
	if uid >= 0 {
		if err := unix.Fchown(wfd, uid, gid); err != nil {
			return fmt.Errorf("cannot hand the working subvolume to uid %d: %w", uid, err)
		}
		// The engine must be able to rewrite its own metadata directory.
		if mfd, err := openDirBeneath(wfd, metaDir); err == nil {
			_ = unix.Fchown(mfd, uid, gid)
			for _, n := range []string{"manifest", "journal", "stats.json", "result.json"} {
				_ = unix.Fchownat(mfd, n, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
			}
			chownSegments(mfd, uid, gid)
			unix.Close(mfd)
		}
	}
	return nil
}

func (btrfsDest) open(e *engine, _ string, _, _ []string) error {
	e.destName = workingDir
	fd, err := openDirBeneath(e.hostFd, workingDir)
	if err != nil {
		return fmt.Errorf("cannot open the working subvolume (not prepared?): %w", err)
	}
	e.destFd = fd
	return nil
}

func (btrfsDest) load(e *engine, _ string) {
	x, flat, err := openManifest(e.destFd, metaDir+"/manifest")
	if err != nil {
		// A fresh (or damaged) working tree: trust nothing in it.
		e.resumed = true
		return
	}
	e.baseIsManifest = true
	if x == nil {
		e.known = flat
		return
	}
	// With a sidecar, the segments are read once the scan says which directories changed
	// (resolveBase); without one, all of them, now, while the source is walked.
	e.base = x
	e.sidecar = x.sigs != nil
	if !e.sidecar {
		e.resolveBase(nil)
	}
}

func (btrfsDest) reusableManifest(e *engine, entries []*Entry) int {
	if !e.baseIsManifest || !e.sidecar || e.written.Load() > 0 || e.removed.Load() > 0 {
		// known was edited by the deletions: only an untouched working tree matches. A
		// manifest without its sidecar is written again, so that the next run has one.
		return -1
	}
	return sameEntries(e.known, entries, e.destFd)
}

func (btrfsDest) publish(*engine, string) error { return nil }

func (btrfsDest) promote(hfd int, name string) error {
	wfd, err := openDirBeneath(hfd, workingDir)
	if err != nil {
		return fmt.Errorf("cannot open the working subvolume: %w", err)
	}
	defer unix.Close(wfd)
	if _, err := lstatAt(wfd, metaDir+"/journal"); err == nil {
		return fmt.Errorf("cannot promote: the working subvolume holds an unfinished run")
	}
	// A fresh working subvolume whose first run was stopped before it wrote anything has
	// neither journal nor manifest: it is not a snapshot either.
	if _, err := lstatAt(wfd, metaDir+"/manifest"); err != nil {
		return fmt.Errorf("cannot promote: the working subvolume holds no finished run")
	}
	if err := unix.Syncfs(wfd); err != nil {
		return fmt.Errorf("cannot sync the target: %w", err)
	}
	if err := btrfsSnapshot(wfd, hfd, name, true); err != nil {
		return fmt.Errorf("cannot create snapshot %s: %w", name, err)
	}
	if err := unix.Syncfs(hfd); err != nil {
		return fmt.Errorf("cannot sync the target: %w", err)
	}
	return setLatest(hfd, name)
}

func (btrfsDest) settle(hfd int, free float64) { waitFreeChange(hfd, free) }

func (btrfsDest) clonesInPlace() bool { return true }

func (btrfsDest) rewritesInPlace() bool { return true }

func (btrfsDest) segmentsManifest() bool { return true }

// chownSegments gives the manifest's segments (below the metadata directory mfd) and their
// directory to uid:gid when they belong to someone else (the engine's user changed). The
// directory goes last, so its owner says whether every segment has been handed over: a run
// whose user did not change costs one stat, not one per directory of the backup.
func chownSegments(mfd, uid, gid int) {
	sfd, err := openDirBeneath(mfd, segmentDir)
	if err != nil {
		return
	}
	defer unix.Close(sfd)
	var st unix.Stat_t
	if unix.Fstat(sfd, &st) == nil && int(st.Uid) == uid && int(st.Gid) == gid {
		return
	}
	names, _ := readDirNames(sfd)
	for _, n := range names {
		if st, err := lstatAt(sfd, n); err == nil && (int(st.Uid) != uid || int(st.Gid) != gid) {
			_ = unix.Fchownat(sfd, n, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
		}
	}
	_ = unix.Fchown(sfd, uid, gid)
}

// linkTreeDest is an ext4/xfs target: a run builds <name>.partial, hard-linking unchanged
// files and symlinks from the previous complete snapshot, and renames it into place. A fresh
// partial tree is first filled with the whole previous snapshot while the source is walked
// (linkfarm.go); the plan then works on it as on a btrfs working tree.
type linkTreeDest struct{}

func (linkTreeDest) prepare(int, string, int, int) error { return nil }

func (linkTreeDest) open(e *engine, name string, complete, partials []string) error {
	if err := e.guard.check(); err != nil {
		return err
	}
	e.destName = name + partialExt
	if len(partials) > 0 {
		last := partials[len(partials)-1]
		for _, p := range partials[:len(partials)-1] {
			if err := removeAllAt(e.hostFd, p); err != nil {
				e.warn("cannot remove the stale partial snapshot %s: %v", p, err)
			}
		}
		if err := unix.Renameat(e.hostFd, last, e.hostFd, e.destName); err != nil {
			return fmt.Errorf("cannot resume the partial snapshot %s: %w", last, err)
		}
		e.resumed = true
	} else if err := unix.Mkdirat(e.hostFd, e.destName, 0o755); err != nil {
		return fmt.Errorf("cannot create the partial snapshot: %w", err)
	}
	fd, err := openDirBeneath(e.hostFd, e.destName)
	if err != nil {
		return fmt.Errorf("cannot open the partial snapshot: %w", err)
	}
	e.destFd = fd
	if len(complete) > 0 {
		if fd, err := openDirBeneath(e.hostFd, complete[len(complete)-1]); err == nil {
			e.prevFd = fd
		}
	}
	return nil
}

func (linkTreeDest) load(e *engine, prevName string) {
	if e.prevFd < 0 {
		return
	}
	m, err := readManifestAt(e.prevFd, metaDir+"/manifest")
	if err != nil {
		unix.Close(e.prevFd)
		e.prevFd = -1
		e.warn("snapshot %s has no readable manifest: copying everything", prevName)
		return
	}
	e.prev = m
	if e.resumed {
		// The tree holds what an interrupted run left: the plan cleans and completes it.
		return
	}
	start := time.Now()
	placed, strays := linkPrevious(e.ctx, e.guard, e.destFd, e.prevFd, m, underSources(e.sources), metaWorkers)
	e.known = make(map[string]*Entry, len(placed))
	for _, en := range placed {
		e.known[en.Path] = en
	}
	e.strays = strays
	e.tr.note(fmt.Sprintf("linked the previous snapshot (%d entries, strays %v)", len(placed), strays), time.Since(start))
}

func (linkTreeDest) reusableManifest(e *engine, entries []*Entry) int {
	if e.resumed {
		return -1
	}
	return sameEntries(e.prev, entries, e.prevFd)
}

func (linkTreeDest) publish(e *engine, name string) error {
	if err := e.guard.check(); err != nil {
		return err
	}
	if err := unix.Renameat(e.hostFd, e.destName, e.hostFd, name); err != nil {
		return fmt.Errorf("cannot promote the snapshot: %w", err)
	}
	if err := unix.Fsync(e.hostFd); err != nil {
		return fmt.Errorf("cannot sync the snapshot directory: %w", err)
	}
	return setLatest(e.hostFd, name)
}

func (linkTreeDest) promote(hfd int, name string) error {
	if _, err := lstatAt(hfd, name); err != nil {
		return fmt.Errorf("cannot find snapshot %s: %w", name, err)
	}
	// The engine set "latest" unless it was stopped between its rename and that step.
	if newest := newestComplete(hfd); newest != "" {
		if cur, err := readlinkAt(hfd, latestName); err != nil || cur != newest {
			return setLatest(hfd, newest)
		}
	}
	return nil
}

func (linkTreeDest) settle(int, float64) {}

func (linkTreeDest) clonesInPlace() bool { return false }

// rewritesInPlace is false: the partial tree's unchanged files are the previous snapshot's
// inodes (hard links), which must never be written.
func (linkTreeDest) rewritesInPlace() bool { return false }

// segmentsManifest is false: an unchanged manifest is one hard link, and a segmented one
// would cost a link per directory.
func (linkTreeDest) segmentsManifest() bool { return false }

// sameEntries returns fd when the manifest base (read from fd) lists exactly entries, else -1.
func sameEntries(base map[string]*Entry, entries []*Entry, fd int) int {
	if fd < 0 || len(base) != len(entries) {
		return -1
	}
	for _, en := range entries {
		if b := base[en.Path]; b == nil || !sameStored(b, en) {
			return -1
		}
	}
	return fd
}
