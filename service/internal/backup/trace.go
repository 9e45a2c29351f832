package backup

import (
	"fmt"
	"os"
	"time"
)

// traceOn prints the time of each step of a run to stderr (PLUGVAULT_TRACE=1), for the
// benchmark and for diagnosing slow drives.
var traceOn = os.Getenv("PLUGVAULT_TRACE") == "1"

type tracer struct{ last time.Time }

func newTracer() *tracer { return &tracer{last: time.Now()} }

func (t *tracer) step(name string) {
	if !traceOn {
		return
	}
	now := time.Now()
	fmt.Fprintf(os.Stderr, "plugvault: %-22s %7.3f s\n", name, now.Sub(t.last).Seconds())
	t.last = now
}
