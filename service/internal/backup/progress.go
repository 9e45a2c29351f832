package backup

import (
	"sync"
	"time"
)

// progressInterval is the shortest time between two progress reports.
const progressInterval = 250 * time.Millisecond

// fileCost is how many bytes of copying one written entry is worth for the ETA (a create,
// a few metadata calls).
const fileCost = 16 << 10

// progressReporter throttles and computes rate and ETA.
type progressReporter struct {
	fn    func(Progress)
	clock func() time.Time
	prev  *Stats // the previous run's stats, for the ETA before the rate is known

	mu         sync.Mutex
	p          Progress
	began      time.Time
	filesStart uint64 // FilesDone when copying started (kept entries)
	last       time.Time
}

func newProgressReporter(fn func(Progress)) *progressReporter {
	return &progressReporter{fn: fn, clock: time.Now, p: Progress{Phase: PhaseScanning, ETA: -1}}
}

func (r *progressReporter) emit(force bool) {
	if r.fn == nil {
		return
	}
	now := r.clock()
	if !force && now.Sub(r.last) < progressInterval {
		return
	}
	r.last = now
	r.fn(r.p)
}

// scanned reports the number of entries found so far.
func (r *progressReporter) scanned(n uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.p.FilesTotal = n
	r.emit(false)
}

// start switches to copying with the totals of the scan.
func (r *progressReporter) start(files, kept, bytes uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.p = Progress{Phase: PhaseCopying, FilesTotal: files, FilesDone: kept, BytesTotal: bytes, ETA: -1}
	r.filesStart = kept
	r.began = r.clock()
	if r.prev != nil && r.prev.CopySeconds > 0 {
		work := float64(r.prev.BytesWritten + r.prev.Written*fileCost)
		if work > 0 {
			r.p.ETA = r.eta(work / r.prev.CopySeconds)
		}
	}
	r.emit(true)
}

// remaining is the work left, in bytes.
func (r *progressReporter) remaining() float64 {
	return float64(r.p.BytesTotal-min(r.p.BytesDone, r.p.BytesTotal)) +
		float64(r.p.FilesTotal-min(r.p.FilesDone, r.p.FilesTotal))*fileCost
}

func (r *progressReporter) eta(workPerSecond float64) time.Duration {
	if workPerSecond <= 0 {
		return -1
	}
	return time.Duration(r.remaining() / workPerSecond * float64(time.Second))
}

// add counts finished entries and copied bytes.
func (r *progressReporter) add(files, bytes uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.p.FilesDone += files
	r.p.BytesDone += bytes
	if r.p.BytesDone > r.p.BytesTotal {
		r.p.BytesTotal = r.p.BytesDone // a file grew while it was copied
	}
	now := r.clock()
	if now.Sub(r.last) < progressInterval {
		return
	}
	el := now.Sub(r.began).Seconds()
	if el > 0 {
		r.p.Rate = float64(r.p.BytesDone) / el
		done := float64(r.p.BytesDone) + float64(r.p.FilesDone-r.filesStart)*fileCost
		live := done / el
		switch {
		case el >= 1 || r.prev == nil:
			if el >= 0.5 {
				r.p.ETA = r.eta(live)
			}
		default:
			// Too early for a live rate: keep the estimate from the previous run.
		}
	}
	r.emit(false)
}

// phase switches to another phase and reports it at once.
func (r *progressReporter) phase(ph string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.p.Phase = ph
	r.emit(true)
}

// done reports the end.
func (r *progressReporter) done() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.p.FilesDone, r.p.BytesDone, r.p.ETA = r.p.FilesTotal, r.p.BytesTotal, 0
	r.emit(true)
}

// byteInterval is the shortest time between two reports of a byteReporter (tests set 0 to
// see every step).
var byteInterval = progressInterval

// byteReporter reports bytes done of a known total for Restore and Verify, throttled like the
// backup's progress: at most one report per progressInterval, and always the first and the
// last. It is safe for concurrent use (Verify checks directories in parallel).
type byteReporter struct {
	fn    func(done, total uint64)
	clock func() time.Time

	mu    sync.Mutex
	done  uint64
	total uint64
	last  time.Time
	sent  bool
}

func newByteReporter(fn func(done, total uint64), total uint64) *byteReporter {
	return &byteReporter{fn: fn, clock: time.Now, total: total}
}

// add counts n more bytes done.
func (r *byteReporter) add(n uint64) {
	if r == nil || r.fn == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if n == 0 && r.sent {
		return
	}
	r.done += n
	if r.total > 0 && r.done > r.total {
		r.total = r.done // the tree differs from its manifest
	}
	now := r.clock()
	if r.sent && now.Sub(r.last) < byteInterval {
		return
	}
	r.last, r.sent = now, true
	r.fn(r.done, r.total)
}

// finish reports the end: everything done.
func (r *byteReporter) finish() {
	if r == nil || r.fn == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done < r.total {
		r.done = r.total
	} else {
		r.total = r.done
	}
	r.last, r.sent = r.clock(), true
	r.fn(r.done, r.total)
}
