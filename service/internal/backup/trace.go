package backup

import (
	"fmt"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// traceOn prints the time of each step of a run, the CPU time the process spent in it (user
// and system) and the heap in use after it, to stderr (PLUGVAULT_TRACE=1), for the benchmark
// and for diagnosing slow drives: a step whose CPU time is near its wall time on every core is
// bound by the CPU, one with little CPU time waits for a disk.
var traceOn = os.Getenv("PLUGVAULT_TRACE") == "1"

type tracer struct {
	last     time.Time
	lastUser time.Duration
	lastSys  time.Duration
}

func newTracer() *tracer {
	t := &tracer{last: time.Now()}
	t.lastUser, t.lastSys = cpuTimes()
	return t
}

// cpuTimes returns the user and system CPU time the process has used.
func cpuTimes() (user, sys time.Duration) {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0, 0
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

func (t *tracer) step(name string) {
	if !traceOn {
		return
	}
	now := time.Now()
	user, sys := cpuTimes()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Fprintf(os.Stderr, "plugvault: %-22s %7.3f s  cpu user %6.3f sys %6.3f  heap %4d MiB (sys %d MiB)\n", name,
		now.Sub(t.last).Seconds(), (user - t.lastUser).Seconds(), (sys - t.lastSys).Seconds(), ms.HeapAlloc>>20, ms.Sys>>20)
	t.last = time.Now()
	t.lastUser, t.lastSys = cpuTimes()
}

// note prints a step that ran beside the others (its own duration d), without ending the
// current step.
func (t *tracer) note(name string, d time.Duration) {
	if !traceOn {
		return
	}
	fmt.Fprintf(os.Stderr, "plugvault: (%s: %.3f s, beside the other steps)\n", name, d.Seconds())
}
