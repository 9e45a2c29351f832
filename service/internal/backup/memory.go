package backup

import (
	"bytes"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"sync"
)

// The engine child (ServeChild) collects garbage rarely (plugvault-engine sets GOGC 400: the
// scan and the manifests live for the whole run, and collecting them over and over costs CPU),
// so without a bound its heap grows to several times what it holds. memBudget bounds it with a
// soft memory limit (debug.SetMemoryLimit) that grows with the tree: memBase plus memPerEntry
// for each entry, counting the larger of the previous snapshot's entries and those scanned so
// far, and never less than the live heap and half as much again. A run holds about 650-800
// bytes per entry (the scan, the previous manifest and the maps over them), so the limit
// leaves the collector room to work without running constantly.
const (
	memBase     = 32 << 20
	memPerEntry = 768
	// memStep is how many more entries it takes to raise the limit again.
	memStep = 8192
)

// memBudget is the engine child's soft memory limit. A nil *memBudget (a run in process: the
// daemon's or a test's memory is not the engine's to limit) does nothing.
type memBudget struct {
	mu      sync.Mutex
	entries uint64 // what the limit was last set for
}

// newMemBudget sets the limit for a tree of about entries entries.
func newMemBudget(entries uint64) *memBudget {
	b := &memBudget{}
	b.set(entries)
	return b
}

func (b *memBudget) set(entries uint64) {
	b.entries = entries
	limit := uint64(memBase + memPerEntry*entries)
	// Never below the live heap and half as much again: a limit under what the run holds
	// (a tree of long paths) would make the collector run without pause.
	if live := liveHeap(); limit < live+live/2 {
		limit = live + live/2
	}
	debug.SetMemoryLimit(int64(limit))
}

// recheck sets the limit again for the live heap, once the run holds more than the scan
// (after the plan).
func (b *memBudget) recheck() {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.set(b.entries)
}

// liveHeap is the heap the last garbage collection found live, in bytes.
func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// grow raises the limit when the tree turns out bigger than it was set for.
func (b *memBudget) grow(entries uint64) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if entries >= b.entries+memStep {
		b.set(entries)
	}
}

// peakRSSKiB is the process's peak resident memory in KiB (VmHWM), 0 if unknown. It is read
// from /proc and not from getrusage: ru_maxrss survives execve, so in a child started by a
// big process (the daemon, the bench) it would report the parent's peak.
func peakRSSKiB() uint64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, ln := range bytes.Split(data, []byte{'\n'}) {
		if v, ok := bytes.CutPrefix(ln, []byte("VmHWM:")); ok {
			n, _ := strconv.ParseUint(string(bytes.TrimSuffix(bytes.TrimSpace(v), []byte(" kB"))), 10, 64)
			return n
		}
	}
	return 0
}
