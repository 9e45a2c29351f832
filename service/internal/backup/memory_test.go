package backup

import (
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
)

func TestMemBudget(t *testing.T) {
	orig := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(orig)
	limit := func() int64 { return debug.SetMemoryLimit(-1) }

	// A million entries: a limit above what the test process holds, so the live heap plays
	// no part.
	const n = 1 << 20
	b := newMemBudget(n)
	first := limit()
	if first <= memBase || first == orig {
		t.Fatalf("limit for %d entries: %d (base %d, before %d)", n, first, memBase, orig)
	}
	b.grow(n + memStep - 1)
	if got := limit(); got != first {
		t.Errorf("a few more entries moved the limit from %d to %d", first, got)
	}
	b.grow(n + 10*memStep)
	bigger := limit()
	if bigger <= first {
		t.Errorf("ten steps more entries: limit %d, was %d", bigger, first)
	}
	b.grow(10)
	if got := limit(); got != bigger {
		t.Errorf("fewer entries lowered the limit from %d to %d", bigger, got)
	}
	var none *memBudget
	none.grow(1 << 30) // a run in process: no limit
	if got := limit(); got != bigger {
		t.Errorf("a nil budget changed the limit to %d", got)
	}
}

// The limit never falls under what the heap holds: the collector would run without pause.
func TestMemBudgetAboveLiveHeap(t *testing.T) {
	orig := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(orig)
	held := make([]byte, 64<<20)
	runtime.GC()
	live := liveHeap()
	if live < 64<<20 {
		t.Fatalf("live heap %d while holding 64 MiB", live)
	}
	b := newMemBudget(0)
	if got := debug.SetMemoryLimit(-1); got < int64(live+live/2) {
		t.Errorf("limit %d with %d bytes live", got, live)
	}
	b.recheck()
	if got := debug.SetMemoryLimit(-1); got < int64(live+live/2) {
		t.Errorf("limit %d after recheck with %d bytes live", got, live)
	}
	runtime.KeepAlive(held)
}

func TestPeakRSS(t *testing.T) {
	// Hold 64 MiB more: the peak is at least what the process holds now, and that is at least
	// the 64 MiB.
	buf := make([]byte, 64<<20)
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 1
	}
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	var rss uint64
	for _, ln := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(ln, "VmRSS:"); ok {
			rss, _ = strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	if rss < 64<<10 {
		t.Fatalf("resident %d KiB while holding 64 MiB", rss)
	}
	if peak := peakRSSKiB(); peak < rss {
		t.Errorf("peak RSS %d KiB, less than the %d KiB resident now", peak, rss)
	}
	runtime.KeepAlive(buf)
}
