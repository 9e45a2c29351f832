package backup

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// apply carries out p on the tree: deletions, directories, files (in parallel), hard link
// followers, then directory metadata, deepest first.
func (e *engine) apply(p *plan) error {
	srcFor := func(path string) *source {
		for _, s := range e.sources {
			if s.holds(path) {
				return s
			}
		}
		return nil
	}
	e.out = make(map[string]*Entry, p.files)
	for _, k := range p.kept {
		e.out[k.Path] = k
	}
	if len(p.deletes) > 0 || len(p.dirs) > 0 || len(p.writes) > 0 || len(p.follows) > 0 {
		if err := e.begin(); err != nil {
			return err
		}
	}
	if err := e.remove(p.deletes); err != nil {
		return err
	}
	e.prog.start(p.files, p.keptFiles, p.bytes)
	e.tr.step(fmt.Sprintf("plan (%d dels)", len(p.deletes)))

	// Directories, parents first: a level at a time, the directories of a level in parallel.
	if err := e.guard.check(); err != nil {
		return err
	}
	if err := e.byLevel(p.dirs, false, func(d *Entry) error {
		if err := e.ensureDir(d.Path); err != nil {
			return err
		}
		if p.want != nil {
			return e.cleanDir(d.Path, p.want[d.Path])
		}
		return nil
	}); err != nil {
		return err
	}
	if p.want != nil {
		// The snapshot root itself: nothing but the sources' top directories and metadata.
		if err := e.cleanDir("", p.want[""]); err != nil {
			return err
		}
	}
	e.tr.step(fmt.Sprintf("dirs (%d)", len(p.dirs)))

	stopCommit := e.startCommitter()
	defer stopCommit()
	// Files, symlinks and special files, one directory per task, in parallel. Big directories
	// are split so they copy in parallel too. Links (ext4/xfs: unchanged entries of the
	// previous snapshot) go to a pool of their own with more workers: a link moves no data but
	// waits for the previous snapshot's directory and inode to be read.
	type task struct {
		dir  string
		acts []action
	}
	const chunk = 64
	var copyTasks, linkTasks []task
	dirNames := make([]string, 0, len(p.writes))
	for d, acts := range p.writes {
		dirNames = append(dirNames, d)
		for i := range acts {
			acts[i].src = srcFor(acts[i].s.Path)
		}
	}
	sort.Strings(dirNames)
	split := func(list []task, d string, acts []action) []task {
		for len(acts) > chunk {
			list = append(list, task{d, acts[:chunk]})
			acts = acts[chunk:]
		}
		if len(acts) > 0 {
			list = append(list, task{d, acts})
		}
		return list
	}
	for _, d := range dirNames {
		var links, others []action
		for _, a := range p.writes[d] {
			if a.op == opLink {
				links = append(links, a)
			} else {
				others = append(others, a)
			}
		}
		linkTasks = split(linkTasks, d, links)
		copyTasks = split(copyTasks, d, others)
	}
	var wg sync.WaitGroup
	run := func(tasks []task, workers int, buf func() []byte) {
		var next atomic.Int64
		for w := min(workers, len(tasks)); w > 0; w-- {
			wg.Add(1)
			go func() {
				defer wg.Done()
				b := buf()
				for {
					i := int(next.Add(1)) - 1
					if i >= len(tasks) || e.err() != nil {
						return
					}
					e.doDir(tasks[i].dir, tasks[i].acts, b)
				}
			}()
		}
	}
	run(copyTasks, e.job.copyWorkers(), func() []byte { return make([]byte, copyBufSize) })
	// A link that cannot be made is copied (place allocates a buffer then).
	run(linkTasks, metaWorkers, func() []byte { return nil })
	wg.Wait()
	if err := e.err(); err != nil {
		return err
	}
	for _, a := range p.follows {
		a.src = srcFor(a.s.Path)
		e.doFollower(a)
	}
	if err := e.err(); err != nil {
		return err
	}
	e.tr.step(fmt.Sprintf("files (%d dirs)", len(p.writes)))

	// Directory metadata, deepest first (writing below a directory changes its times).
	if err := e.byLevel(p.dirty, true, func(d *Entry) error {
		en := *d
		if err := e.setDirMeta(&en, srcFor(d.Path)); err != nil {
			return err
		}
		e.finish(&en)
		return nil
	}); err != nil {
		return err
	}
	stopCommit()
	e.tr.step(fmt.Sprintf("dir metadata (%d)", len(p.dirty)))
	if err := e.err(); err != nil {
		return err
	}
	// Make the data durable; the manifest written next replaces the journal.
	if err := unix.Syncfs(e.destFd); err != nil {
		return fmt.Errorf("cannot sync the target: %w", err)
	}
	e.tr.step("syncfs data")
	return nil
}

// byLevel calls fn for every directory in dirs, one depth at a time (shallowest first, or
// deepest first), the directories of one depth in parallel. It stops at the first error.
func (e *engine) byLevel(dirs []*Entry, deepestFirst bool, fn func(*Entry) error) error {
	levels := map[int][]*Entry{}
	var depths []int
	for _, d := range dirs {
		n := strings.Count(d.Path, "/")
		if levels[n] == nil {
			depths = append(depths, n)
		}
		levels[n] = append(levels[n], d)
	}
	sort.Ints(depths)
	if deepestFirst {
		sort.Sort(sort.Reverse(sort.IntSlice(depths)))
	}
	for _, n := range depths {
		level := levels[n]
		var next atomic.Int64
		var wg sync.WaitGroup
		for w := min(metaWorkers, len(level)); w > 0; w-- {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1)) - 1
					if i >= len(level) || e.err() != nil {
						return
					}
					if err := fn(level[i]); err != nil {
						e.fail(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if err := e.err(); err != nil {
			return err
		}
	}
	return nil
}

// remove removes the topmost paths of removed subtrees from the tree, journaling them first,
// and forgets what was below them.
func (e *engine) remove(top []string) error {
	if len(top) == 0 {
		return nil
	}
	if err := e.guard.check(); err != nil {
		return err
	}
	if err := e.journalDeletes(top); err != nil {
		return err
	}
	gone := make(map[string]bool, len(top))
	for _, p := range top {
		d, n := splitRel(p)
		dfd, err := openDirBeneath(e.destFd, d)
		if err == nil {
			e.makeWritable(dfd)
			err = removeAllAt(dfd, n)
			unix.Close(dfd)
		}
		if err != nil && err != unix.ENOENT {
			return fmt.Errorf("cannot remove %q from the working tree: %w", p, err)
		}
		gone[p] = true
		e.removed.Add(1)
	}
	dropRemoved(e.known, gone)
	return nil
}

// ensureDir makes rel a directory in the destination (removing anything else in its place).
func (e *engine) ensureDir(rel string) error {
	d, n := splitRel(rel)
	pfd, err := openDirBeneath(e.destFd, d)
	if err != nil {
		return fmt.Errorf("cannot open %q on the target: %w", d, err)
	}
	defer unix.Close(pfd)
	e.makeWritable(pfd)
	err = unix.Mkdirat(pfd, n, 0o700)
	if err == unix.EEXIST {
		st, serr := lstatAt(pfd, n)
		if serr == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			return nil
		}
		if err := removeAllAt(pfd, n); err != nil {
			return fmt.Errorf("cannot replace %q on the target: %w", rel, err)
		}
		err = unix.Mkdirat(pfd, n, 0o700)
	}
	if err != nil {
		return fmt.Errorf("cannot create %q on the target: %w", rel, err)
	}
	e.written.Add(1)
	return nil
}

// cleanDir removes names in the destination directory rel that the source does not have
// (stray temporary files and entries of an interrupted run).
func (e *engine) cleanDir(rel string, want map[string]bool) error {
	fd, err := openDirBeneath(e.destFd, rel)
	if err != nil {
		return fmt.Errorf("cannot open %q on the target: %w", rel, err)
	}
	defer unix.Close(fd)
	names, err := readDirNames(fd)
	if err != nil {
		return fmt.Errorf("cannot read %q on the target: %w", rel, err)
	}
	e.makeWritable(fd)
	for _, n := range names {
		if want[n] || (rel == "" && n == metaDir) {
			continue
		}
		if err := removeAllAt(fd, n); err != nil {
			return fmt.Errorf("cannot remove %q from the target: %w", joinRel(rel, n), err)
		}
	}
	return nil
}

// doDir handles the non-directory entries of one directory.
func (e *engine) doDir(dir string, acts []action, buf []byte) {
	dfd, err := openDirBeneath(e.destFd, dir)
	if err != nil {
		e.fail(fmt.Errorf("cannot open %q on the target: %w", dir, err))
		return
	}
	defer unix.Close(dfd)
	e.makeWritable(dfd)
	prevFd := -1
	// The source directory is opened only when something is read from it (an unchanged file
	// on ext4 is linked from the previous snapshot without touching the source).
	sfd := -1
	var serr error
	srcDir := func() (int, error) {
		if sfd < 0 && serr == nil {
			if len(acts) == 0 || acts[0].src == nil {
				serr = errVanished
			} else if sfd, serr = openDirBeneath(acts[0].src.fd, acts[0].src.rel(dir)); serr != nil {
				sfd, serr = -1, errVanished
			}
		}
		return sfd, serr
	}
	defer func() {
		if sfd >= 0 {
			unix.Close(sfd)
		}
	}()
	if e.prevFd >= 0 {
		if fd, err := openDirBeneath(e.prevFd, dir); err == nil {
			prevFd = fd
			defer unix.Close(fd)
		}
	}
	for _, a := range acts {
		if e.err() != nil {
			return
		}
		if err := e.guard.tick(uint64(a.s.Size)); err != nil {
			e.fail(err)
			return
		}
		_, name := splitRel(a.s.Path)
		en, err := e.place(srcDir, dfd, prevFd, name, a, buf)
		if err != nil {
			if errors.Is(err, errVanished) {
				e.warn("%s: vanished during the backup", "/"+a.s.Path)
			} else if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EIO) || errors.Is(err, unix.EROFS) {
				e.fail(fmt.Errorf("cannot write %q to the target: %w", a.s.Path, err))
				return
			} else {
				e.warn("%s: %v", "/"+a.s.Path, err)
			}
			// The previous version stays, if the destination holds one (or, on ext4, the
			// previous snapshot: it is linked), unless an in-place rewrite lost it: then
			// nothing is stored under this name.
			var lost errRewriteLost
			k, p := e.known[a.s.Path], e.prev[a.s.Path]
			switch {
			case errors.As(err, &lost):
			case k != nil && k.Type == a.s.Type:
				e.finish(k)
			case p != nil && p.Type == a.s.Type && prevFd >= 0 && (p.Type == 'f' || p.Type == 'l'):
				if linkReplace(prevFd, name, dfd, name) == nil {
					e.finish(p)
				}
			}
			e.prog.add(1, 0)
			continue
		}
		e.finish(en)
		e.written.Add(1)
		e.prog.add(1, 0)
	}
}

// makeWritable lets an unprivileged engine write into a directory it made read-only (its
// metadata is reset afterwards, as for every directory written into).
func (e *engine) makeWritable(fd int) {
	if e.euid == 0 {
		return
	}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) == nil && st.Mode&0o300 != 0o300 {
		_ = unix.Fchmod(fd, st.Mode&0o7777|0o700)
	}
}

// doFollower links a hard link follower to its leader in the destination.
func (e *engine) doFollower(a action) {
	ld, ln := splitRel(a.leader)
	d, n := splitRel(a.s.Path)
	lfd, err := openDirBeneath(e.destFd, ld)
	if err == nil {
		var dfd int
		if dfd, err = openDirBeneath(e.destFd, d); err == nil {
			err = linkReplace(lfd, ln, dfd, n)
			unix.Close(dfd)
		}
		unix.Close(lfd)
	}
	if err == nil {
		en := *a.s
		e.mu.Lock()
		if l := e.out[a.leader]; l != nil {
			en.Hash, en.Flags, en.Blocks = l.Hash, l.Flags, l.Blocks
		}
		e.mu.Unlock()
		e.finish(&en)
		e.written.Add(1)
	} else if a.src != nil {
		// The leader is missing (vanished or failed): copy this one on its own.
		e.doDir(d, []action{{s: a.s, op: opCopy, src: a.src}}, make([]byte, 1<<20))
		return
	}
	e.prog.add(1, 0)
}
