package backup

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plugvault/plugvault/service/api"
	"golang.org/x/sys/unix"
)

// maxWarnings bounds the warnings kept in a Result.
const maxWarnings = 200

// engine is one backup run into a destination tree (the btrfs working subvolume or an ext4
// partial snapshot).
type engine struct {
	ctx      context.Context
	job      Job
	dest     destination
	guard    *guardGate
	prog     *progressReporter
	hostFd   int
	destFd   int
	destName string // name of the destination in the host directory
	prevFd   int    // ext4: the previous complete snapshot, -1 if none
	known    map[string]*Entry
	prev     map[string]*Entry
	resumed  bool
	// strays: the tree may hold names nobody recorded (the previous snapshot's links could
	// not all be listed, linkfarm.go): the plan cleans the directories as after a resume.
	strays bool
	// baseIsManifest: known is exactly the destination's manifest file (no journal applied).
	baseIsManifest bool
	// base is the btrfs tree's segmented manifest, whose segments resolveBase reads; sidecar:
	// it has a sidecar (dirsFile); kept: the directories whose segments stay as they are.
	base    *segIndex
	sidecar bool
	kept    map[string]keptSegment
	sources []*source
	journal *os.File
	euid    int

	mu       sync.Mutex
	pending  []*Entry // finished, not yet durable
	warnings []string
	nWarn    int
	out      map[string]*Entry // what the new snapshot holds
	failed   error

	tr  *tracer
	mem *memBudget // the engine child's memory limit, nil in process
	// estimate and highEstimate are about how many bytes of file data the run writes, low
	// and high (newBytes).
	estimate, highEstimate uint64
	written                atomic.Uint64
	bytesWritten           atomic.Uint64
	removed                atomic.Uint64
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

// runEngine does the unprivileged part of a backup: it brings the destination tree up to date
// with the sources and, on ext4/xfs, promotes it. On btrfs the returned snapshot name is still
// to be taken from .working by Promote. When the target has no room for the run it stops with
// a noRoomError (withRoom makes room and runs it again). limitMemory: the run is the process's
// only work (the engine child), so it sets the process's soft memory limit for the tree
// (memory.go).
func runEngine(ctx context.Context, job Job, guard func() error, progress func(Progress), now time.Time, limitMemory bool) (Result, error) {
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

	e := &engine{ctx: ctx, job: job, dest: destinationFor(job.FSType), guard: g, hostFd: hostFd, prevFd: -1, euid: os.Geteuid(),
		out: make(map[string]*Entry), tr: newTracer()}
	e.prog = newProgressReporter(progress)
	names, err := readDirNames(hostFd)
	if err != nil {
		return Result{}, fmt.Errorf("cannot list the snapshots: %w", err)
	}
	var complete, partials []string
	for _, n := range names {
		switch {
		case api.IsSnapshotName(n):
			complete = append(complete, n)
		case strings.HasSuffix(n, partialExt) && api.IsSnapshotName(strings.TrimSuffix(n, partialExt)):
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
	if limitMemory {
		var n uint64
		if prevStats != nil {
			n = prevStats.Entries
		}
		e.mem = newMemBudget(n)
	}

	var prevName string
	if len(complete) > 0 {
		prevName = complete[len(complete)-1]
	}
	if err := e.dest.open(e, name, complete, partials); err != nil {
		return Result{}, err
	}
	defer func() {
		e.closeBase()
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
		workers: job.workers(), sigs: e.dest.segmentsManifest(), onEntries: func(n uint64) {
			e.prog.scanned(n)
			e.mem.grow(n)
		}}
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
	e.resolveBase(scan)
	e.tr.step(fmt.Sprintf("read manifest (%d dirs kept)", len(e.kept)))

	// Plan and copy.
	pl := makePlan(e.known, e.prev, scan.entries, e.resumed || e.strays)
	e.mem.recheck()
	e.estimate, e.highEstimate = e.newBytes(pl, scan.sparse)
	if err := e.roomCheck(complete); err != nil {
		return Result{}, err
	}
	if err := e.apply(pl); err != nil {
		return Result{}, e.noRoom(err)
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
	if !e.resumed {
		st.Changed = &pl.changed
	}
	st.MaxRSSKiB = peakRSSKiB()
	if err := g.check(); err != nil {
		return Result{}, err
	}
	if err := e.fillKept(pl, scan); err != nil {
		return Result{}, err
	}
	stale, err := writeMeta(e.destFd, entries, st, res, e.dest.reusableManifest(e, entries), e.dest.segmentsManifest(), e.kept)
	if err != nil {
		return Result{}, e.noRoom(err)
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
	removeSegments(e.destFd, stale)
	if err := e.dest.publish(e, name); err != nil {
		return Result{}, err
	}
	e.tr.step("done (published where the engine may)")
	e.prog.done()
	return res, nil
}

// uniqueName is the snapshot name for a run started at now, later than every existing one.
func uniqueName(now time.Time, existing []string) string {
	t := now.UTC().Truncate(time.Second)
	name := t.Format(api.SnapshotLayout)
	if len(existing) > 0 && name <= existing[len(existing)-1] {
		last, err := time.Parse(api.SnapshotLayout, existing[len(existing)-1])
		if err == nil {
			name = last.Add(time.Second).Format(api.SnapshotLayout)
		}
	}
	return name
}
