package backup

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// commitInterval is how often finished work is made durable (syncfs) and journaled.
var commitInterval = 2 * time.Second

// maxWarnings bounds the warnings kept in a Result.
const maxWarnings = 200

// engine is one backup run into a destination tree (the btrfs working subvolume or an ext4
// partial snapshot).
type engine struct {
	ctx      context.Context
	job      Job
	guard    *guardGate
	prog     *progressReporter
	hostFd   int
	destFd   int
	destName string // name of the destination in the host directory
	prevFd   int    // ext4: the previous complete snapshot, -1 if none
	known    map[string]*Entry
	prev     map[string]*Entry
	resumed  bool
	// baseIsManifest: known is exactly the destination's manifest file (no journal applied).
	baseIsManifest bool
	sources        []*source
	journal        *os.File
	euid           int

	mu       sync.Mutex
	pending  []*Entry // finished, not yet durable
	warnings []string
	nWarn    int
	out      map[string]*Entry // what the new snapshot holds
	failed   error

	tr           *tracer
	written      atomic.Uint64
	bytesWritten atomic.Uint64
	removed      atomic.Uint64
}

func (e *engine) warn(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.nWarn++
	if len(e.warnings) < maxWarnings {
		e.warnings = append(e.warnings, fmt.Sprintf(format, args...))
	}
}

func (e *engine) fail(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.failed == nil {
		e.failed = err
	}
}

func (e *engine) err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.failed != nil {
		return e.failed
	}
	return e.ctx.Err()
}

// finish records a finished entry: it goes into the new manifest now and into the journal at
// the next commit.
func (e *engine) finish(en *Entry) {
	e.mu.Lock()
	e.out[en.Path] = en
	e.pending = append(e.pending, en)
	e.mu.Unlock()
}

// commit makes everything finished so far durable, then journals it.
func (e *engine) commit() error {
	e.mu.Lock()
	batch := e.pending
	e.pending = nil
	e.mu.Unlock()
	if err := unix.Syncfs(e.destFd); err != nil {
		return fmt.Errorf("cannot sync the target: %w", err)
	}
	if len(batch) == 0 {
		return nil
	}
	buf := make([]byte, 0, 64<<10)
	for _, en := range batch {
		buf = appendEntry(buf, en)
	}
	if _, err := e.journal.Write(buf); err != nil {
		return fmt.Errorf("cannot write the journal: %w", err)
	}
	return e.journal.Sync()
}

// journalDeletes records removals before they happen.
func (e *engine) journalDeletes(paths []string) error {
	if len(paths) == 0 {
		return nil
	}
	var buf []byte
	for _, p := range paths {
		buf = append(buf, "del "...)
		buf = append(buf, fmt.Sprintf("%q", p)...)
		buf = append(buf, '\n')
	}
	if _, err := e.journal.Write(buf); err != nil {
		return fmt.Errorf("cannot write the journal: %w", err)
	}
	return e.journal.Sync()
}

// runEngine does the unprivileged part of a backup: it brings the destination tree up to date
// with the sources and, on ext4/xfs, promotes it. On btrfs the returned snapshot name is still
// to be taken from .working by Promote.
func runEngine(ctx context.Context, job Job, guard func() error, progress func(Progress), now time.Time) (Result, error) {
	if err := job.validate(); err != nil {
		return Result{}, err
	}
	g := &guardGate{fn: guard}
	if err := g.check(); err != nil {
		return Result{}, err
	}
	targetFd, err := openDirPath(job.Target)
	if err != nil {
		return Result{}, fmt.Errorf("cannot open target %q: %w", job.Target, err)
	}
	defer unix.Close(targetFd)
	hostFd, err := openDirBeneath(targetFd, job.hostRel())
	if err != nil {
		return Result{}, fmt.Errorf("cannot open %s on the target (not prepared?): %w", job.hostRel(), err)
	}
	defer unix.Close(hostFd)

	e := &engine{ctx: ctx, job: job, guard: g, hostFd: hostFd, prevFd: -1, euid: os.Geteuid(),
		out: make(map[string]*Entry), tr: newTracer()}
	e.prog = newProgressReporter(progress)
	names, err := readDirNames(hostFd)
	if err != nil {
		return Result{}, fmt.Errorf("cannot list the snapshots: %w", err)
	}
	var complete, partials []string
	for _, n := range names {
		switch {
		case IsSnapshotName(n):
			complete = append(complete, n)
		case strings.HasSuffix(n, partialExt) && IsSnapshotName(strings.TrimSuffix(n, partialExt)):
			partials = append(partials, n)
		}
	}
	sort.Strings(complete)
	sort.Strings(partials)
	name := uniqueName(now, complete)
	var prevStats *Stats
	if len(complete) > 0 {
		prevStats = readStats(hostFd, complete[len(complete)-1])
	}
	e.prog.prev = prevStats

	var prevName string
	if job.FSType == "btrfs" {
		e.destName = workingDir
		if e.destFd, err = openDirBeneath(hostFd, workingDir); err != nil {
			return Result{}, fmt.Errorf("cannot open the working subvolume (not prepared?): %w", err)
		}
	} else {
		if err := g.check(); err != nil {
			return Result{}, err
		}
		e.destName = name + partialExt
		if len(partials) > 0 {
			last := partials[len(partials)-1]
			for _, p := range partials[:len(partials)-1] {
				if err := removeAllAt(hostFd, p); err != nil {
					e.warn("cannot remove the stale partial snapshot %s: %v", p, err)
				}
			}
			if err := unix.Renameat(hostFd, last, hostFd, e.destName); err != nil {
				return Result{}, fmt.Errorf("cannot resume the partial snapshot %s: %w", last, err)
			}
			e.resumed = true
		} else if err := unix.Mkdirat(hostFd, e.destName, 0o755); err != nil {
			return Result{}, fmt.Errorf("cannot create the partial snapshot: %w", err)
		}
		if e.destFd, err = openDirBeneath(hostFd, e.destName); err != nil {
			return Result{}, fmt.Errorf("cannot open the partial snapshot: %w", err)
		}
		if len(complete) > 0 {
			prevName = complete[len(complete)-1]
			if fd, err := openDirBeneath(hostFd, prevName); err == nil {
				e.prevFd = fd
			}
		}
	}
	defer func() {
		unix.Close(e.destFd)
		if e.prevFd >= 0 {
			unix.Close(e.prevFd)
		}
	}()
	if err := unix.Mkdirat(e.destFd, metaDir, 0o700); err != nil && err != unix.EEXIST {
		return Result{}, fmt.Errorf("cannot create %s: %w", metaDir, err)
	}
	jfd, err := openBeneath(e.destFd, metaDir+"/journal", unix.O_WRONLY|unix.O_CREAT|unix.O_APPEND, 0o600)
	if err != nil {
		return Result{}, fmt.Errorf("cannot open the journal: %w", err)
	}
	e.journal = os.NewFile(uintptr(jfd), "journal")
	defer e.journal.Close()

	e.tr.step("open, read manifest")
	// Scan.
	started := time.Now()
	if e.sources, err = openSources(job.Sources); err != nil {
		return Result{}, err
	}
	defer closeSources(e.sources)
	patterns := append([]string(nil), job.Excludes...)
	if !job.NoDefaultExcludes {
		patterns = append(patterns, DefaultExcludes...)
	}
	w := &walker{sources: e.sources, excl: newExcluder(patterns), skipDev: job.Dev, skipPath: job.Target,
		workers: job.workers(), onEntries: func(n uint64) { e.prog.scanned(n) }}
	var tst unix.Stat_t
	if unix.Fstat(targetFd, &tst) == nil {
		w.skipDir = [2]uint64{tst.Dev, tst.Ino}
	}
	// What the destination holds is read while the source is walked (different devices).
	loaded := make(chan struct{})
	go func() {
		defer close(loaded)
		e.loadBase(prevName)
	}()
	scan, err := w.walk()
	<-loaded
	if err != nil {
		return Result{}, err
	}
	for _, wn := range scan.warnings {
		e.warn("%s", wn)
	}
	scanDone := time.Now()
	e.tr.step("walk")
	if err := e.err(); err != nil {
		return Result{}, err
	}

	// Plan and copy.
	if err := e.update(scan); err != nil {
		return Result{}, err
	}
	copyDone := time.Now()
	e.tr.step("update")

	// Finish: manifest, stats, result; then promote (ext4) or leave for Promote (btrfs).
	e.prog.phase(PhaseFinishing)
	// The scan is sorted: the manifest follows its order (every stored entry has a scan entry).
	entries := make([]*Entry, 0, len(e.out))
	for _, s := range scan.entries {
		if en := e.out[s.Path]; en != nil {
			entries = append(entries, en)
		}
	}
	var files, bytes uint64
	for _, en := range entries {
		files++
		if en.Type == 'f' {
			bytes += uint64(en.Size)
		}
	}
	res := Result{Snapshot: name, Files: files, Bytes: bytes, Warnings: e.warnings}
	if e.nWarn > len(e.warnings) {
		res.Warnings = append(res.Warnings, fmt.Sprintf("and %d more warnings", e.nWarn-len(e.warnings)))
	}
	st := Stats{Started: now.UTC(), Finished: now.Add(time.Since(started)).UTC(),
		ScanSeconds: scanDone.Sub(started).Seconds(), CopySeconds: copyDone.Sub(scanDone).Seconds(),
		Entries: files, Bytes: bytes, Written: e.written.Load(), BytesWritten: e.bytesWritten.Load(),
		Removed: e.removed.Load(), Resumed: e.resumed, FSType: job.FSType}
	if err := g.check(); err != nil {
		return Result{}, err
	}
	if err := writeMeta(e.destFd, entries, st, res, e.manifestSource(entries)); err != nil {
		return Result{}, err
	}
	e.tr.step("write metadata")
	if err := unix.Syncfs(e.destFd); err != nil {
		return Result{}, fmt.Errorf("cannot sync the target: %w", err)
	}
	e.tr.step("syncfs")
	// The manifest now describes the tree: the journal is obsolete.
	if err := unix.Unlinkat(e.destFd, metaDir+"/journal", 0); err != nil && err != unix.ENOENT {
		return Result{}, fmt.Errorf("cannot remove the journal: %w", err)
	}
	if err := fsyncAt(e.destFd, metaDir); err != nil {
		return Result{}, err
	}
	if job.FSType != "btrfs" {
		if err := g.check(); err != nil {
			return Result{}, err
		}
		if err := unix.Renameat(hostFd, e.destName, hostFd, name); err != nil {
			return Result{}, fmt.Errorf("cannot promote the snapshot: %w", err)
		}
		if err := unix.Fsync(hostFd); err != nil {
			return Result{}, fmt.Errorf("cannot sync the snapshot directory: %w", err)
		}
		if err := setLatest(hostFd, name); err != nil {
			return Result{}, err
		}
	}
	e.tr.step("done (ext4: promoted)")
	e.prog.done()
	return res, nil
}

// loadBase reads what the destination is known to hold: the working tree's manifest (btrfs)
// or the previous snapshot's (ext4, for hard links), overlaid with the journal of an
// interrupted run.
func (e *engine) loadBase(prevName string) {
	e.known = map[string]*Entry{}
	if e.job.FSType == "btrfs" {
		m, err := readManifestAt(e.destFd, metaDir+"/manifest")
		if err != nil {
			// A fresh (or damaged) working tree: trust nothing in it.
			e.resumed = true
		} else {
			e.known = m
			e.baseIsManifest = true
		}
	} else if e.prevFd >= 0 {
		m, err := readManifestAt(e.prevFd, metaDir+"/manifest")
		if err != nil {
			unix.Close(e.prevFd)
			e.prevFd = -1
			e.warn("snapshot %s has no readable manifest: copying everything", prevName)
		} else {
			e.prev = m
		}
	}
	if data, err := readFileAt(e.destFd, metaDir+"/journal", 1<<30); err == nil && len(data) > 0 {
		applyJournal(e.known, data)
		e.resumed = true
		e.baseIsManifest = false
	}
}

// manifestSource returns the directory fd whose manifest already lists exactly entries (the
// destination itself on btrfs, the previous snapshot on ext4), or -1.
func (e *engine) manifestSource(entries []*Entry) int {
	base, fd := e.known, e.destFd
	if e.job.FSType != "btrfs" {
		base, fd = e.prev, e.prevFd
		if e.resumed {
			return -1
		}
	} else if !e.baseIsManifest {
		return -1
	}
	if e.job.FSType == "btrfs" && (e.written.Load() > 0 || e.removed.Load() > 0) {
		// known was edited by the deletions: only an untouched working tree matches.
		return -1
	}
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

// uniqueName is the snapshot name for a run started at now, later than every existing one.
func uniqueName(now time.Time, existing []string) string {
	t := now.UTC().Truncate(time.Second)
	name := t.Format(timeLayout)
	if len(existing) > 0 && name <= existing[len(existing)-1] {
		last, err := time.Parse(timeLayout, existing[len(existing)-1])
		if err == nil {
			name = last.Add(time.Second).Format(timeLayout)
		}
	}
	return name
}

// setLatest points "latest" at name with an atomic rename.
func setLatest(hostFd int, name string) error {
	tmp := ".latest.tmp"
	_ = unix.Unlinkat(hostFd, tmp, 0)
	if err := unix.Symlinkat(name, hostFd, tmp); err != nil {
		return fmt.Errorf("cannot update latest: %w", err)
	}
	if err := unix.Renameat(hostFd, tmp, hostFd, latestName); err != nil {
		return fmt.Errorf("cannot update latest: %w", err)
	}
	if err := unix.Fsync(hostFd); err != nil {
		return fmt.Errorf("cannot sync the snapshot directory: %w", err)
	}
	return nil
}

func fsyncAt(root int, rel string) error {
	fd, err := openBeneath(root, rel, unix.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("cannot sync %s: %w", rel, err)
	}
	defer unix.Close(fd)
	if err := unix.Fsync(fd); err != nil {
		return fmt.Errorf("cannot sync %s: %w", rel, err)
	}
	return nil
}

// readFileAt reads a regular file below root.
func readFileAt(root int, rel string, max int64) ([]byte, error) {
	fd, err := openBeneath(root, rel, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%s is not a regular file", rel)
	}
	return io.ReadAll(io.LimitReader(f, max))
}

func readManifestAt(root int, rel string) (map[string]*Entry, error) {
	fd, err := openBeneath(root, rel, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	return readManifest(f)
}

func readStats(hostFd int, snap string) *Stats {
	data, err := readFileAt(hostFd, snap+"/"+metaDir+"/stats.json", 1<<20)
	if err != nil {
		return nil
	}
	var st Stats
	if json.Unmarshal(data, &st) != nil {
		return nil
	}
	return &st
}

// writeFileAt atomically writes a small file below root (temp, fsync, rename).
func writeFileAt(root int, rel string, write func(io.Writer) error) error {
	dir, name := splitRel(rel)
	dfd, err := openDirBeneath(root, dir)
	if err != nil {
		return fmt.Errorf("cannot write %s: %w", rel, err)
	}
	defer unix.Close(dfd)
	tmp := "." + name + ".tmp"
	fd, err := unix.Openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("cannot write %s: %w", rel, err)
	}
	f := os.NewFile(uintptr(fd), tmp)
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("cannot write %s: %w", rel, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("cannot write %s: %w", rel, err)
	}
	f.Close()
	if err := unix.Renameat(dfd, tmp, dfd, name); err != nil {
		return fmt.Errorf("cannot write %s: %w", rel, err)
	}
	return nil
}

// writeMeta writes the snapshot's metadata. When the entries are exactly those of an existing
// manifest (reuse >= 0, the directory fd holding it; reuse == destFd: it is already in place),
// that manifest is hard-linked instead of written again: manifests are never modified in place.
func writeMeta(destFd int, entries []*Entry, st Stats, res Result, reuse int) error {
	switch {
	case reuse == destFd:
	case reuse >= 0:
		mfd, err := openDirBeneath(reuse, metaDir)
		if err == nil {
			var dfd int
			if dfd, err = openDirBeneath(destFd, metaDir); err == nil {
				err = linkReplace(mfd, "manifest", dfd, "manifest")
				unix.Close(dfd)
			}
			unix.Close(mfd)
		}
		if err == nil {
			break
		}
		fallthrough
	default:
		if err := writeFileAt(destFd, metaDir+"/manifest", func(w io.Writer) error { return writeManifest(w, entries) }); err != nil {
			return err
		}
	}
	for name, v := range map[string]any{"stats.json": st, "result.json": res} {
		if err := writeFileAt(destFd, metaDir+"/"+name, func(w io.Writer) error {
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			return enc.Encode(v)
		}); err != nil {
			return err
		}
	}
	return nil
}

// action is what has to be done for one source entry.
type action struct {
	s        *Entry
	src      *source
	follower string // hard link follower: snapshot path of its leader
}

// update brings the destination tree up to date with the scanned sources.
func (e *engine) update(scan *scanResult) error {
	srcFor := func(p string) *source {
		for _, s := range e.sources {
			if s.prefix == "" || p == s.prefix || strings.HasPrefix(p, s.prefix+"/") {
				return s
			}
		}
		return nil
	}
	inSource := make(map[string]*Entry, len(scan.entries))
	e.out = make(map[string]*Entry, len(scan.entries))
	children := map[string]map[string]bool{}
	for _, s := range scan.entries {
		inSource[s.Path] = s
		if e.resumed {
			d, n := splitRel(s.Path)
			if children[d] == nil {
				children[d] = map[string]bool{}
			}
			children[d][n] = true
		}
	}

	// Deletions: what the destination holds and the source no longer has (or has with another
	// type). Only the topmost of a removed subtree is removed explicitly.
	var dels []string
	for p, k := range e.known {
		if s, ok := inSource[p]; !ok || s.Type != k.Type {
			dels = append(dels, p)
		}
	}
	sort.Strings(dels)
	var top []string
	for _, p := range dels {
		if len(top) > 0 && strings.HasPrefix(p, top[len(top)-1]+"/") {
			continue
		}
		top = append(top, p)
	}
	dirty := map[string]bool{} // directories whose contents change: their metadata is reset
	if len(top) > 0 {
		if err := e.guard.check(); err != nil {
			return err
		}
		if err := e.journalDeletes(top); err != nil {
			return err
		}
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
			dirty[d] = true
			e.removed.Add(1)
		}
		for _, p := range dels {
			delete(e.known, p)
		}
	}

	// Plan.
	var totalFiles, totalBytes uint64
	var dirs []*Entry
	byDir := map[string][]action{}
	var followers []action
	leaders := map[[2]uint64]string{}
	// A hard link group whose first member is written again is re-linked as a whole, so the
	// destination keeps the source's link structure.
	relink := map[[2]uint64]bool{}
	for _, s := range scan.entries {
		if s.Type == 'f' && s.Nlink > 1 {
			id := [2]uint64{s.Dev, s.Ino}
			if _, ok := leaders[id]; !ok {
				leaders[id] = s.Path
				k := e.known[s.Path]
				relink[id] = k == nil || !sameSource(k, s)
			}
		}
	}
	clear(leaders)
	var keptFiles uint64
	for _, s := range scan.entries {
		totalFiles++
		k := e.known[s.Path]
		keep := k != nil && sameSource(k, s)
		if s.Type == 'f' && s.Nlink > 1 {
			id := [2]uint64{s.Dev, s.Ino}
			if relink[id] {
				keep = false
			}
			if l, ok := leaders[id]; ok {
				if !keep {
					followers = append(followers, action{s: s, src: srcFor(s.Path), follower: l})
					dirty[parentOf(s.Path)] = true
				} else {
					e.out[s.Path] = keepEntry(k, s)
					keptFiles++
				}
				continue
			}
			leaders[id] = s.Path
		}
		if keep {
			e.out[s.Path] = keepEntry(k, s)
			keptFiles++
			if s.Type == 'd' && e.resumed {
				dirs = append(dirs, s) // still cleaned of stray names below
			}
			continue
		}
		if s.Type == 'd' {
			dirs = append(dirs, s)
			dirty[s.Path] = true
		} else {
			if s.Type == 'f' {
				totalBytes += uint64(s.Size)
			}
			d := parentOf(s.Path)
			byDir[d] = append(byDir[d], action{s: s, src: srcFor(s.Path)})
		}
		dirty[parentOf(s.Path)] = true
	}
	e.prog.start(totalFiles, keptFiles, totalBytes)
	e.tr.step(fmt.Sprintf("plan (%d dels)", len(top)))

	// Directories, parents first.
	if err := e.guard.check(); err != nil {
		return err
	}
	for _, d := range dirs {
		if err := e.err(); err != nil {
			return err
		}
		if err := e.ensureDir(d.Path); err != nil {
			return err
		}
		if e.resumed {
			if err := e.cleanDir(d.Path, children[d.Path]); err != nil {
				return err
			}
		}
	}
	if e.resumed {
		// The snapshot root itself: nothing but the sources' top directories and metadata.
		if err := e.cleanDir("", children[""]); err != nil {
			return err
		}
	}

	e.tr.step(fmt.Sprintf("dirs (%d)", len(dirs)))
	// Files, symlinks and special files, one directory per task, in parallel.
	stopCommit := e.startCommitter()
	// A task is (part of) one directory: big directories are split so they copy in parallel.
	type task struct {
		dir  string
		acts []action
	}
	const chunk = 64
	tasks := make(chan task)
	var wg sync.WaitGroup
	for i := 0; i < e.job.copyWorkers(); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1<<20)
			for t := range tasks {
				if e.err() != nil {
					continue
				}
				e.doDir(t.dir, t.acts, buf)
			}
		}()
	}
	dirNames := make([]string, 0, len(byDir))
	for d := range byDir {
		dirNames = append(dirNames, d)
	}
	sort.Strings(dirNames)
	for _, d := range dirNames {
		acts := byDir[d]
		for len(acts) > chunk {
			tasks <- task{d, acts[:chunk]}
			acts = acts[chunk:]
		}
		tasks <- task{d, acts}
	}
	close(tasks)
	wg.Wait()
	if err := e.err(); err != nil {
		stopCommit()
		return err
	}
	for _, a := range followers {
		e.doFollower(a)
	}
	if err := e.err(); err != nil {
		stopCommit()
		return err
	}

	e.tr.step(fmt.Sprintf("files (%d dirs)", len(byDir)))
	// Directory metadata, deepest first (writing below a directory changes its times).
	var dirtyDirs []string
	for d := range dirty {
		if _, ok := inSource[d]; ok {
			dirtyDirs = append(dirtyDirs, d)
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(dirtyDirs)))
	for _, d := range dirtyDirs {
		if err := e.err(); err != nil {
			stopCommit()
			return err
		}
		s := inSource[d]
		en := *s
		if err := e.setDirMeta(&en, srcFor(d)); err != nil {
			stopCommit()
			return err
		}
		e.finish(&en)
	}
	stopCommit()
	e.tr.step(fmt.Sprintf("dir metadata (%d)", len(dirtyDirs)))
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

func parentOf(p string) string {
	d, _ := splitRel(p)
	return d
}

// keepEntry is s as stored: the source's stat with the stored hash and flags.
// It reuses s (the scan's entry, owned by the run) to spare an allocation per entry.
func keepEntry(k, s *Entry) *Entry {
	if s.hasFlag(flagAncestor) {
		en := *k
		return &en
	}
	s.Hash, s.Flags = k.Hash, k.Flags
	if strings.IndexByte(s.Flags, flagChanging) >= 0 {
		s.Flags = strings.ReplaceAll(s.Flags, string(flagChanging), "")
	}
	return s
}

// startCommitter commits every commitInterval until the returned stop function is called.
func (e *engine) startCommitter() (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(commitInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if err := e.commit(); err != nil {
					e.fail(err)
				}
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
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
		en, err := e.place(srcDir, dfd, prevFd, name, a.s, buf)
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
			// previous snapshot: it is linked).
			if k := e.known[a.s.Path]; k != nil && k.Type == a.s.Type {
				e.finish(k)
			} else if p := e.prev[a.s.Path]; p != nil && p.Type == a.s.Type && prevFd >= 0 && (p.Type == 'f' || p.Type == 'l') {
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

// place writes one non-directory entry into the destination directory dfd.
func (e *engine) place(srcDir func() (int, error), dfd, prevFd int, name string, s *Entry, buf []byte) (*Entry, error) {
	en := *s
	// ext4: an unchanged entry of the previous snapshot is hard-linked, never copied.
	if prevFd >= 0 && (s.Type == 'f' || s.Type == 'l') {
		if p := e.prev[s.Path]; p != nil && sameContent(p, s) {
			err := linkReplace(prevFd, name, dfd, name)
			if err == nil {
				en.Hash, en.Flags = p.Hash, p.Flags
				return &en, nil
			}
			// Otherwise copy: too many links (EMLINK), gone from the previous snapshot, or not
			// ours to link (fs.protected_hardlinks for an unprivileged engine: EPERM).
			if err == unix.ENOSPC || err == unix.EIO || err == unix.EROFS {
				return nil, err
			}
		}
	}
	// Only file data and symlink targets are read from the source; the rest is in the scan.
	sfd, err := srcDir()
	if err != nil && (s.Type == 'f' || s.Type == 'l') {
		return nil, err
	}
	// A name the destination is not known to hold is created in place (a crash leaves nothing
	// the journal vouches for, so the next run writes it again); a known one is replaced by
	// an atomic rename, so the old version stays whole until the new one is.
	tmp := tempName()
	if e.known[s.Path] == nil {
		tmp = name
	}
	switch s.Type {
	case 'f':
		return e.copyFile(sfd, dfd, name, tmp, &en, buf)
	case 'l':
		target, err := readlinkAt(sfd, name)
		if err != nil {
			if err == unix.ENOENT || err == unix.EINVAL {
				return nil, errVanished
			}
			return nil, err
		}
		en.Link = target
		err = unix.Symlinkat(target, dfd, tmp)
		if err == unix.EEXIST && tmp == name {
			tmp = tempName()
			err = unix.Symlinkat(target, dfd, tmp)
		}
		if err != nil {
			return nil, err
		}
	case 'p', 'c', 'b':
		if s.Type != 'p' && e.euid != 0 {
			return &en, nil // recorded only: an unprivileged engine cannot create devices
		}
		mode := map[byte]uint32{'p': unix.S_IFIFO, 'c': unix.S_IFCHR, 'b': unix.S_IFBLK}[s.Type]
		err := unix.Mknodat(dfd, tmp, mode|0o600, int(s.Rdev))
		if err == unix.EEXIST && tmp == name {
			tmp = tempName()
			err = unix.Mknodat(dfd, tmp, mode|0o600, int(s.Rdev))
		}
		if err != nil {
			return nil, err
		}
	case 's':
		return &en, nil // sockets are recorded, never created
	default:
		return &en, nil
	}
	if err := unix.Fchownat(dfd, tmp, int(s.UID), int(s.GID), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		en.addFlag(flagOwner)
	}
	if s.Type != 'l' {
		if err := unix.Fchmodat(dfd, tmp, s.Mode, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			_ = unix.Unlinkat(dfd, tmp, 0)
			return nil, err
		}
	}
	ts := []unix.Timespec{unix.NsecToTimespec(s.Mtime), unix.NsecToTimespec(s.Mtime)}
	if err := unix.UtimesNanoAt(dfd, tmp, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		_ = unix.Unlinkat(dfd, tmp, 0)
		return nil, err
	}
	if tmp != name {
		if err := renameReplace(dfd, tmp, name); err != nil {
			_ = unix.Unlinkat(dfd, tmp, 0)
			return nil, err
		}
	}
	return &en, nil
}

func tempName() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return ".pv-tmp-" + hex.EncodeToString(b[:])
}

// renameReplace renames tmp to name in dfd, replacing whatever is there (a directory too).
func renameReplace(dfd int, tmp, name string) error {
	err := unix.Renameat(dfd, tmp, dfd, name)
	if err == unix.EISDIR || err == unix.ENOTEMPTY || err == unix.EEXIST || err == unix.ENOTDIR {
		if err := removeAllAt(dfd, name); err != nil {
			return err
		}
		err = unix.Renameat(dfd, tmp, dfd, name)
	}
	return err
}

// linkReplace hard-links oldName in oldDir as newName in newDir, replacing what is there.
func linkReplace(oldDir int, oldName string, newDir int, newName string) error {
	err := unix.Linkat(oldDir, oldName, newDir, newName, 0)
	if err == unix.EEXIST {
		if err := removeAllAt(newDir, newName); err != nil {
			return err
		}
		err = unix.Linkat(oldDir, oldName, newDir, newName, 0)
	}
	return err
}

// maxAttempts bounds the copies of a file that keeps changing while it is read.
const maxAttempts = 3

// copyFile copies the regular file name from sfd to a temporary file in dfd and renames it into
// place, with owner, mode, times and xattrs.
func (e *engine) copyFile(sfd, dfd int, name, tmp string, en *Entry, buf []byte) (*Entry, error) {
	in, err := openSourceFile(sfd, name)
	if err != nil {
		if err == unix.ENOENT || err == unix.ELOOP || err == unix.ENXIO {
			return nil, errVanished
		}
		return nil, err
	}
	defer unix.Close(in)
	for attempt := 1; ; attempt++ {
		var before unix.Stat_t
		if err := unix.Fstat(in, &before); err != nil {
			return nil, err
		}
		if before.Mode&unix.S_IFMT != unix.S_IFREG || before.Ino != en.Ino {
			return nil, errChanged
		}
		out, err := unix.Openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err == unix.EEXIST && tmp == name {
			// Something the journal does not know is there: replace it atomically.
			tmp = tempName()
			out, err = unix.Openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		}
		if err != nil {
			return nil, err
		}
		var h hash.Hash
		if !e.job.NoHash {
			h = sha256.New()
		}
		n, err := copyData(in, out, before.Size, before.Blocks*512 < before.Size, h, buf)
		if err != nil {
			unix.Close(out)
			_ = unix.Unlinkat(dfd, tmp, 0)
			return nil, err
		}
		e.bytesWritten.Add(uint64(n))
		e.prog.add(0, uint64(n))
		var after unix.Stat_t
		if err := unix.Fstat(in, &after); err != nil {
			unix.Close(out)
			_ = unix.Unlinkat(dfd, tmp, 0)
			return nil, err
		}
		changed := after.Size != before.Size || after.Mtim != before.Mtim || after.Ctim != before.Ctim || n != before.Size
		if changed && attempt < maxAttempts {
			unix.Close(out)
			_ = unix.Unlinkat(dfd, tmp, 0)
			continue
		}
		*en = entryFromStat(en.Path, &before)
		if changed {
			en.addFlag(flagChanging)
			e.warn("%s: changed while it was read; the copy may be inconsistent and is copied again next time", "/"+en.Path)
		}
		if h != nil {
			en.Hash = hex.EncodeToString(h.Sum(nil))
		}
		if inc, err := copyXattrs(in, out); err != nil || inc {
			en.addFlag(flagXattr)
		}
		if err := unix.Fchown(out, int(before.Uid), int(before.Gid)); err != nil {
			en.addFlag(flagOwner)
		}
		if err := unix.Fchmod(out, before.Mode&0o7777); err != nil {
			unix.Close(out)
			_ = unix.Unlinkat(dfd, tmp, 0)
			return nil, err
		}
		ts := []unix.Timespec{before.Atim, before.Mtim}
		if err := futimens(out, ts); err != nil {
			unix.Close(out)
			_ = unix.Unlinkat(dfd, tmp, 0)
			return nil, err
		}
		unix.Close(out)
		if tmp != name {
			if err := renameReplace(dfd, tmp, name); err != nil {
				_ = unix.Unlinkat(dfd, tmp, 0)
				return nil, err
			}
		}
		return en, nil
	}
}

// futimens sets the times of an open file (utimensat with a NULL path).
func futimens(fd int, ts []unix.Timespec) error {
	_, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
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

// openSourceFile opens a regular source file for reading without following a symlink, without
// blocking on a fifo swapped in, and without touching its atime where allowed.
func openSourceFile(dir int, name string) (int, error) {
	flags := unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC
	fd, err := unix.Openat(dir, name, flags|unix.O_NOATIME, 0)
	if err == unix.EPERM {
		fd, err = unix.Openat(dir, name, flags, 0)
	}
	return fd, err
}

// copyData copies size bytes from in to out (preserving holes when sparse), feeding h.
func copyData(in, out int, size int64, sparse bool, h hash.Hash, buf []byte) (int64, error) {
	var off, copied int64
	zero := []byte(nil)
	for off < size {
		end := size
		if sparse {
			data, err := unix.Seek(in, off, unix.SEEK_DATA)
			if err == unix.ENXIO {
				data = size
			} else if err != nil {
				sparse = false
				data = off
			}
			if data > size {
				data = size
			}
			if data > off && h != nil {
				if zero == nil {
					zero = make([]byte, 64<<10)
				}
				for z := data - off; z > 0; {
					c := min(z, int64(len(zero)))
					h.Write(zero[:c])
					z -= c
				}
			}
			copied += data - off
			off = data
			if off >= size {
				break
			}
			if sparse {
				hole, err := unix.Seek(in, off, unix.SEEK_HOLE)
				if err == nil && hole < size {
					end = hole
				}
			}
		}
		for off < end {
			want := min(int64(len(buf)), end-off)
			n, err := unix.Pread(in, buf[:want], off)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return copied, err
			}
			if n == 0 {
				// The file shrank while being read.
				if err := unix.Ftruncate(out, off); err != nil {
					return copied, err
				}
				return copied, nil
			}
			if h != nil {
				h.Write(buf[:n])
			}
			for w := 0; w < n; {
				m, err := unix.Pwrite(out, buf[w:n], off+int64(w))
				if err == unix.EINTR {
					continue
				}
				if err != nil {
					return copied, err
				}
				w += m
			}
			off += int64(n)
			copied += int64(n)
		}
	}
	if err := unix.Ftruncate(out, size); err != nil {
		return copied, err
	}
	return copied, nil
}

// doFollower links a hard link follower to its leader in the destination.
func (e *engine) doFollower(a action) {
	ld, ln := splitRel(a.follower)
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
		if l := e.out[a.follower]; l != nil {
			en.Hash, en.Flags = l.Hash, l.Flags
		}
		e.mu.Unlock()
		e.finish(&en)
		e.written.Add(1)
	} else if a.src != nil {
		// The leader is missing (vanished or failed): copy this one on its own.
		e.doDir(d, []action{{s: a.s, src: a.src}}, make([]byte, 1<<20))
		return
	}
	e.prog.add(1, 0)
}

// setDirMeta gives a destination directory the source directory's owner, mode, xattrs and
// times.
func (e *engine) setDirMeta(en *Entry, src *source) error {
	fd, err := openDirBeneath(e.destFd, en.Path)
	if err != nil {
		return fmt.Errorf("cannot open %q on the target: %w", en.Path, err)
	}
	defer unix.Close(fd)
	if src != nil {
		if sfd, err := openDirBeneath(src.fd, src.rel(en.Path)); err == nil {
			if inc, err := copyXattrs(sfd, fd); err != nil || inc {
				en.addFlag(flagXattr)
			}
			unix.Close(sfd)
		}
	}
	if err := unix.Fchown(fd, int(en.UID), int(en.GID)); err != nil {
		en.addFlag(flagOwner)
	}
	if err := unix.Fchmod(fd, en.Mode); err != nil {
		return fmt.Errorf("cannot set the mode of %q on the target: %w", en.Path, err)
	}
	ts := []unix.Timespec{unix.NsecToTimespec(en.Mtime), unix.NsecToTimespec(en.Mtime)}
	if err := futimens(fd, ts); err != nil {
		return fmt.Errorf("cannot set the times of %q on the target: %w", en.Path, err)
	}
	return nil
}
