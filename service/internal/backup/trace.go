package backup

import (
	"fmt"
	"os"
	"runtime"
	"time"
)

// traceOn prints the time of each step of a run, and the heap in use after it, to stderr
// (PLUGVAULT_TRACE=1), for the benchmark and for diagnosing slow drives.
var traceOn = os.Getenv("PLUGVAULT_TRACE") == "1"

type tracer struct{ last time.Time }

func newTracer() *tracer { return &tracer{last: time.Now()} }

func (t *tracer) step(name string) {
	if !traceOn {
		return
	}
	now := time.Now()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Fprintf(os.Stderr, "plugvault: %-22s %7.3f s  heap %4d MiB (sys %d MiB)\n", name, now.Sub(t.last).Seconds(), ms.HeapAlloc>>20, ms.Sys>>20)
	t.last = time.Now()
}
