package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/plugvault/plugvault/service/e2e/agentproto"
)

// Timeline is what happened in one scenario, with times relative to the latest plug.
type Timeline struct {
	Name    string
	Marks   []Mark
	Notes   []string
	Failed  bool
	Journal string // the guest journal since the scenario started, kept when it failed
	// FullJournal is the guest journal of the whole boot, written next to the report.
	FullJournal string

	mu   sync.Mutex
	plug time.Time
}

// Mark is one point on a timeline.
type Mark struct {
	Label string
	At    time.Time
	Rel   time.Duration // since the latest plug (0 before the first plug)
}

// Plugged starts a new plug cycle: later marks are relative to at.
func (tl *Timeline) Plugged(at time.Time, what string) {
	tl.mu.Lock()
	tl.plug = at
	tl.mu.Unlock()
	tl.Add("plugged "+what, at)
}

// Add puts a mark at host time at.
func (tl *Timeline) Add(label string, at time.Time) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	var rel time.Duration
	if !tl.plug.IsZero() {
		rel = at.Sub(tl.plug)
	}
	tl.Marks = append(tl.Marks, Mark{Label: label, At: at, Rel: rel})
}

// Note adds a line of text (a measurement, what was checked).
func (tl *Timeline) Note(format string, args ...any) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.Notes = append(tl.Notes, fmt.Sprintf(format, args...))
}

// stateLabels names the drive states the way the timeline reads.
var stateLabels = map[string]string{
	"present":             "present (recognised)",
	"unlocking":           "unlocking",
	"awaiting-passphrase": "awaiting passphrase",
	"mounting":            "unlocked, mounting",
	"backing-up":          "mounted, backup started",
	"finishing":           "backup copied, finishing",
	"unmounting":          "backup done, unmounting",
	"locking":             "locking",
	"safe-to-remove":      "safe to remove",
	"failed":              "FAILED",
	"absent":              "absent",
}

// AddEvents turns the guest's events into marks: udev events of the stick with the given
// serial, and state changes of the drive at path. It returns the host times of the first udev
// add and of the first backing-up, for the latency line.
func (tl *Timeline) AddEvents(vm *VM, evs []agentproto.Event, serial, path string) (udevAdd, backup time.Time) {
	last := ""
	for _, ev := range evs {
		at := vm.HostTime(ev.Time)
		switch {
		case ev.Kind == agentproto.KindUdev && serial != "" && ev.Props["ID_SERIAL_SHORT"] == serial && ev.Props["DEVTYPE"] == "disk":
			tl.Add(fmt.Sprintf("udev %s %s (ID_BUS=%s ID_FS_TYPE=%s)", ev.Props["ACTION"], ev.Props["DEVNAME"],
				ev.Props["ID_BUS"], ev.Props["ID_FS_TYPE"]), at)
			if ev.Props["ACTION"] == "add" && udevAdd.IsZero() {
				udevAdd = at
			}
		case ev.Kind == agentproto.KindDrive && path != "" && ev.Path == path && ev.State != last:
			last = ev.State
			label := stateLabels[ev.State]
			if label == "" {
				label = ev.State
			}
			if r := ev.Props["StateReason"]; r != "" {
				label += " (" + r + ")"
			}
			tl.Add("state "+ev.State+": "+label, at)
			if ev.State == "backing-up" && backup.IsZero() {
				backup = at
			}
		case ev.Kind == agentproto.KindService:
			tl.Add(fmt.Sprintf("plugvaultd on the bus: %v", ev.Props), at)
		}
	}
	if !udevAdd.IsZero() && !backup.IsZero() {
		tl.Note("udev add -> backup started: %.2fs (target 1.5s with a PBKDF2 keyfile slot under TCG; not asserted)",
			backup.Sub(udevAdd).Seconds())
	}
	return udevAdd, backup
}

// Report collects the timelines of a run and writes them as text.
type Report struct {
	Path   string
	Header []string

	mu        sync.Mutex
	timelines []*Timeline
}

// Scenario starts the timeline of a scenario.
func (r *Report) Scenario(name string) *Timeline {
	tl := &Timeline{Name: name}
	r.mu.Lock()
	r.timelines = append(r.timelines, tl)
	r.mu.Unlock()
	return tl
}

// String renders the report.
func (r *Report) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	b.WriteString("plugvault e2e report\n====================\n")
	for _, h := range r.Header {
		b.WriteString(h + "\n")
	}
	for _, tl := range r.timelines {
		b.WriteString(tl.String())
	}
	return b.String()
}

// String renders one timeline.
func (tl *Timeline) String() string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	var b strings.Builder
	status := "PASS"
	if tl.Failed {
		status = "FAIL"
	}
	fmt.Fprintf(&b, "\n--- %s: %s\n", tl.Name, status)
	marks := append([]Mark(nil), tl.Marks...)
	sort.SliceStable(marks, func(i, j int) bool { return marks[i].At.Before(marks[j].At) })
	for _, m := range marks {
		fmt.Fprintf(&b, "  %s  %+8.2fs  %s\n", m.At.UTC().Format("15:04:05.000"), m.Rel.Seconds(), m.Label)
	}
	for _, n := range tl.Notes {
		fmt.Fprintf(&b, "  * %s\n", n)
	}
	if tl.Failed {
		b.WriteString("  (the go test output above the report says what failed)\n")
	}
	if tl.Failed && tl.Journal != "" {
		lines := strings.Split(strings.TrimRight(tl.Journal, "\n"), "\n")
		if len(lines) > 200 {
			fmt.Fprintf(&b, "  guest journal since the scenario started (last 200 of %d lines; the whole boot's journal is next to this report):\n", len(lines))
			lines = lines[len(lines)-200:]
		} else {
			b.WriteString("  guest journal since the scenario started:\n")
		}
		for _, l := range lines {
			b.WriteString("    | " + l + "\n")
		}
	}
	return b.String()
}

// Write writes the report (and each failed scenario's full journal) into its directory.
func (r *Report) Write() error {
	if err := os.MkdirAll(filepath.Dir(r.Path), 0o755); err != nil {
		return err
	}
	old, _ := filepath.Glob(filepath.Join(filepath.Dir(r.Path), "journal-*.txt"))
	for _, o := range old {
		os.Remove(o)
	}
	r.mu.Lock()
	for _, tl := range r.timelines {
		if tl.Failed && tl.FullJournal != "" {
			name := "journal-" + strings.NewReplacer("/", "-", " ", "-").Replace(tl.Name) + ".txt"
			os.WriteFile(filepath.Join(filepath.Dir(r.Path), name), []byte(tl.FullJournal), 0o644)
		}
	}
	r.mu.Unlock()
	return os.WriteFile(r.Path, []byte(r.String()), 0o644)
}
