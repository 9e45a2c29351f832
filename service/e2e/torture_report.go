package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
)

// TortureCase is one row of e2e-out/torture.txt: a kind of fault, how often it was injected and
// what the checks after each injection counted. Every figure is counted by the suite.
type TortureCase struct {
	Fault        string
	Count        int // faults injected
	Points       int // distinct points of the cycle the faults landed in
	Lost         int // complete snapshots that disappeared
	Corrupted    int // complete snapshots that differ from the source as it was, or that Verify faults
	Leftovers    int // mappings, mounts, processes, loop devices, /run entries left after a fault
	ReplugFailed int // replugs (or restarts) after a fault that did not end in a complete run
	Drift        string
	Failed       bool     // the test failed: its figures stop where it did
	Lines        []string // one per injected fault
}

// TortureReport is the torture suite's report.
type TortureReport struct {
	Path   string
	Header []string

	mu    sync.Mutex
	cases []*TortureCase
}

var tortureReport = &TortureReport{}

// Case adds a row.
func (r *TortureReport) Case(fault string) *TortureCase {
	c := &TortureCase{Fault: fault, Drift: "-"}
	r.mu.Lock()
	r.cases = append(r.cases, c)
	r.mu.Unlock()
	return c
}

// Line adds a line about one injected fault (and shows it on stderr as it happens: the suite
// is long).
func (c *TortureCase) Line(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	fmt.Fprintf(os.Stderr, "torture: %s: %s\n", c.Fault, line)
	tortureReport.mu.Lock()
	defer tortureReport.mu.Unlock()
	c.Lines = append(c.Lines, line)
}

// String renders the table, then the lines of each case.
func (r *TortureReport) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	b.WriteString("plugvault torture report\n========================\n")
	for _, h := range r.Header {
		b.WriteString(h + "\n")
	}
	b.WriteString("\n")
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "fault\tcount\tpoints\tsnapshots lost\tcorrupted\tleftovers\treplugs failed\tmax drift (fd/goroutine/RSS)")
	tot := TortureCase{}
	for _, c := range r.cases {
		name := c.Fault
		if c.Failed {
			name += " FAILED"
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", name, c.Count, c.Points, c.Lost, c.Corrupted, c.Leftovers, c.ReplugFailed, c.Drift)
		tot.Count += c.Count
		tot.Points += c.Points
		tot.Lost += c.Lost
		tot.Corrupted += c.Corrupted
		tot.Leftovers += c.Leftovers
		tot.ReplugFailed += c.ReplugFailed
	}
	fmt.Fprintf(w, "total\t%d\t%d\t%d\t%d\t%d\t%d\t\n", tot.Count, tot.Points, tot.Lost, tot.Corrupted, tot.Leftovers, tot.ReplugFailed)
	w.Flush()
	for _, c := range r.cases {
		fmt.Fprintf(&b, "\n--- %s\n", c.Fault)
		for _, l := range c.Lines {
			b.WriteString("  " + l + "\n")
		}
	}
	return b.String()
}

// Write writes the report, if the suite ran.
func (r *TortureReport) Write() error {
	r.mu.Lock()
	empty := len(r.cases) == 0 || r.Path == ""
	r.mu.Unlock()
	if empty {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(r.Path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(r.Path, []byte(r.String()), 0o644)
}
