package metrics

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/drive"
	"github.com/plugvault/plugvault/service/internal/logging"
)

// DefaultDir is node_exporter's textfile directory on Debian (prometheus-node-exporter).
const DefaultDir = "/var/lib/prometheus/node-exporter"

// FileName is the file plugvaultd writes there.
const FileName = "plugvault.prom"

// DefaultPath returns DefaultDir/FileName when DefaultDir exists, else "" (no file).
func DefaultPath() string {
	if fi, err := os.Stat(DefaultDir); err == nil && fi.IsDir() {
		return filepath.Join(DefaultDir, FileName)
	}
	return ""
}

// Collector remembers each drive's last run and writes the metrics file after every run.
type Collector struct {
	path   string // "" writes no file
	log    *slog.Logger
	clock  func() time.Time
	statfs func(path string) (free uint64, err error)

	mu     sync.Mutex
	drives map[string]*driveMetrics // by LUKS UUID

	// backedUp wakes WatchOverdue when a drive's LastBackup changes (capacity 1: one pending
	// wake-up stands for any number).
	backedUp chan struct{}
}

type driveMetrics struct {
	st       api.DriveStatus
	warned   uint64  // the LastBackup an overdue entry was logged for (one per backup)
	running  bool    // between leaving an idle state and reaching safe-to-remove or failed
	bytes    uint64  // the last engine run's bytes
	duration float64 // seconds of the last engine run
	free     uint64  // free bytes on the drive after the last engine run
	freeOK   bool
}

// New returns a Collector that writes path ("" for none) and logs to logger.
func New(path string, logger *slog.Logger) *Collector {
	return &Collector{path: path, log: logger, clock: time.Now, statfs: freeBytes, drives: map[string]*driveMetrics{},
		backedUp: make(chan struct{}, 1)}
}

func freeBytes(path string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// Publisher returns next wrapped: every status goes on to next unchanged, and the end of a run
// writes the metrics file and a journal entry.
func (c *Collector) Publisher(next drive.Publisher) drive.Publisher { return publisher{c, next} }

type publisher struct {
	c    *Collector
	next drive.Publisher
}

func (p publisher) AddDrive(uuid string, st api.DriveStatus) error {
	if err := p.next.AddDrive(uuid, st); err != nil {
		return err
	}
	p.c.update(uuid, st)
	p.c.write() // the file lists every drive from the start
	return nil
}

func (p publisher) UpdateDrive(uuid string, st api.DriveStatus) {
	p.next.UpdateDrive(uuid, st)
	p.c.update(uuid, st)
}

func (p publisher) RemoveDrive(uuid string) {
	p.next.RemoveDrive(uuid)
	p.c.mu.Lock()
	delete(p.c.drives, uuid)
	p.c.mu.Unlock()
	p.c.write()
}

// idle says whether a state is outside a run.
func idle(s api.State) bool {
	return s == api.StateAbsent || s == api.StatePresent || s == api.StateSafeToRemove || s == api.StateFailed || s == ""
}

func (c *Collector) update(uuid string, st api.DriveStatus) {
	c.mu.Lock()
	d := c.drives[uuid]
	if d == nil {
		d = &driveMetrics{}
		c.drives[uuid] = d
	}
	newBackup := d.st.LastBackup != st.LastBackup
	d.st = st
	ended := d.running && (st.State == api.StateSafeToRemove || st.State == api.StateFailed)
	d.running = !idle(st.State)
	m := *d
	c.mu.Unlock()
	if newBackup {
		select {
		case c.backedUp <- struct{}{}:
		default:
		}
	}
	if ended {
		c.logRun(uuid, m)
		c.write()
	}
}

// logRun writes the journal entry of a finished run.
func (c *Collector) logRun(uuid string, m driveMetrics) {
	if m.st.State == api.StateSafeToRemove && m.st.LastResult == api.ResultSuccess {
		c.log.Info("backup completed", logging.MessageID(logging.MessageBackupCompleted),
			"drive", m.st.Name, "luks_uuid", uuid, "bytes", m.bytes,
			"duration_sec", fmt.Sprintf("%.1f", m.duration), "snapshots", m.st.SnapshotCount)
		return
	}
	reason := m.st.StateReason
	if reason == "" {
		reason = string(m.st.LastResult)
	}
	c.log.Warn("backup failed", logging.MessageID(logging.MessageBackupFailed),
		"drive", m.st.Name, "luks_uuid", uuid, "result", string(m.st.LastResult), "reason", reason)
}

// CheckOverdue logs a "drive overdue" journal entry for each drive that is overdue
// (api.Overdue: its newest complete backup is days old; never with days 0 or for a drive never
// backed up), once per backup: the next entry comes only after the drive backed up again and
// fell behind again.
func (c *Collector) CheckOverdue(days uint32) {
	if days == 0 {
		return
	}
	now := c.clock()
	type due struct {
		uuid, name string
		age        float64
	}
	var late []due
	c.mu.Lock()
	for uuid, d := range c.drives {
		last := d.st.LastBackup
		if d.warned == last || !api.Overdue(d.st, days, now) {
			continue
		}
		d.warned = last
		late = append(late, due{uuid, d.st.Name, now.Sub(time.Unix(int64(last), 0)).Hours() / 24})
	}
	c.mu.Unlock()
	sort.Slice(late, func(i, j int) bool { return late[i].uuid < late[j].uuid })
	for _, l := range late {
		c.log.Warn("drive overdue", logging.MessageID(logging.MessageOverdue), "drive", l.name, "luks_uuid", l.uuid,
			"days", fmt.Sprintf("%.0f", l.age), "reminder_days", days)
	}
}

// WatchOverdue logs the "drive overdue" entries (CheckOverdue) until ctx ends; the caller
// waits for it to return. It does not poll: it sleeps until the next drive falls behind, or
// until a drive's LastBackup changes, whichever comes first.
func (c *Collector) WatchOverdue(ctx context.Context, days uint32) {
	if days == 0 {
		return
	}
	for {
		c.CheckOverdue(days)
		var wake <-chan time.Time
		var t *time.Timer
		if next, ok := c.nextOverdue(days); ok {
			t = time.NewTimer(max(next.Sub(c.clock()), time.Second))
			wake = t.C
		}
		select {
		case <-ctx.Done():
		case <-wake:
		case <-c.backedUp:
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// nextOverdue is when the first drive not yet reported falls behind by days.
func (c *Collector) nextOverdue(days uint32) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var next time.Time
	for _, d := range c.drives {
		due, ok := api.OverdueAt(d.st, days)
		if !ok || d.warned == d.st.LastBackup {
			continue
		}
		if next.IsZero() || due.Before(next) {
			next = due
		}
	}
	return next, !next.IsZero()
}

// Engine returns next wrapped: each run's bytes and duration, and the free space of its
// target while it is still mounted, are kept for the metrics file.
func (c *Collector) Engine(next drive.Engine) drive.Engine { return engine{next, c} }

type engine struct {
	drive.Engine
	c *Collector
}

func (e engine) Run(ctx context.Context, job drive.Job, progress func(drive.Progress)) (drive.Result, error) {
	start := e.c.clock()
	res, err := e.Engine.Run(ctx, job, progress)
	took := e.c.clock().Sub(start).Seconds()
	free, ferr := e.c.statfs(job.Target)
	uuid := job.LuksUUID
	e.c.mu.Lock()
	if d := e.c.drives[uuid]; d != nil {
		d.bytes, d.duration = res.Bytes, took
		d.free, d.freeOK = free, ferr == nil
	}
	e.c.mu.Unlock()
	return res, err
}

// write replaces the metrics file atomically (a temporary file in the same directory, then
// rename), so node_exporter never reads half a file.
func (c *Collector) write() {
	if c.path == "" {
		return
	}
	c.mu.Lock()
	text := c.format()
	c.mu.Unlock()
	if err := writeAtomic(c.path, []byte(text)); err != nil {
		c.log.Warn("cannot write the metrics file", "path", c.path, "error", err)
	}
}

func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	// node_exporter runs as its own user: the file is world-readable, and holds no secret.
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// metric is one family of the file.
type metric struct {
	name, help string
	value      func(m *driveMetrics) (float64, bool)
}

var metricsList = []metric{
	{"plugvault_last_success_timestamp_seconds", "Unix time of the newest complete backup on the drive (0: none).",
		func(m *driveMetrics) (float64, bool) { return float64(m.st.LastBackup), true }},
	{"plugvault_last_run_success", "1 if the drive's last run succeeded, 0 if it failed, was cancelled or interrupted.",
		func(m *driveMetrics) (float64, bool) {
			return b2f(m.st.LastResult == api.ResultSuccess), m.st.LastResult != ""
		}},
	{"plugvault_last_run_bytes", "Bytes the last backup run copied.",
		func(m *driveMetrics) (float64, bool) { return float64(m.bytes), m.duration > 0 }},
	{"plugvault_last_run_duration_seconds", "How long the last backup run's copy took.",
		func(m *driveMetrics) (float64, bool) { return m.duration, m.duration > 0 }},
	{"plugvault_snapshots", "Complete snapshots on the drive, as of its last run.",
		func(m *driveMetrics) (float64, bool) { return float64(m.st.SnapshotCount), true }},
	{"plugvault_free_bytes", "Free bytes on the drive after its last run.",
		func(m *driveMetrics) (float64, bool) { return float64(m.free), m.freeOK }},
	{"plugvault_present", "1 if the drive is plugged in.",
		func(m *driveMetrics) (float64, bool) { return b2f(m.st.Present), true }},
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// format renders the text exposition format, drives sorted by UUID.
func (c *Collector) format() string {
	uuids := make([]string, 0, len(c.drives))
	for u := range c.drives {
		uuids = append(uuids, u)
	}
	sort.Strings(uuids)
	var b strings.Builder
	for _, m := range metricsList {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n", m.name, m.help, m.name)
		for _, u := range uuids {
			d := c.drives[u]
			if v, ok := m.value(d); ok {
				fmt.Fprintf(&b, "%s{drive=\"%s\",luks_uuid=\"%s\"} %g\n", m.name, escape(d.st.Name), escape(u), v)
			}
		}
	}
	b.WriteString("# HELP plugvault_last_result The drive's last result as a label (value always 1).\n# TYPE plugvault_last_result gauge\n")
	for _, u := range uuids {
		d := c.drives[u]
		if d.st.LastResult != "" {
			fmt.Fprintf(&b, "plugvault_last_result{drive=\"%s\",luks_uuid=\"%s\",result=\"%s\"} 1\n", escape(d.st.Name), escape(u), escape(string(d.st.LastResult)))
		}
	}
	return b.String()
}

// escape quotes a label value for the exposition format: backslash, double quote, newline.
func escape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}
