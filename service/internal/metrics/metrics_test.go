package metrics_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/journal"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/drive"
	"github.com/plugvault/plugvault/service/internal/logging"
	"github.com/plugvault/plugvault/service/internal/metrics"
)

// nopPublisher stands for the daemon's Publisher; it counts what it was given.
type nopPublisher struct{ updates int }

func (p *nopPublisher) AddDrive(string, api.DriveStatus) error { return nil }
func (p *nopPublisher) UpdateDrive(string, api.DriveStatus)    { p.updates++ }
func (p *nopPublisher) RemoveDrive(string)                     {}

// fakeEngine stands for plugvault-engine: Run advances the clock and copies bytes.
type fakeEngine struct {
	drive.Engine
	now   *time.Time
	took  time.Duration
	bytes uint64
}

func (e fakeEngine) Run(context.Context, drive.Job, func(drive.Progress)) (drive.Result, error) {
	*e.now = e.now.Add(e.took)
	return drive.Result{Bytes: e.bytes}, nil
}

type journalEntry struct {
	msg    string
	fields map[string]string
}

func setup(t *testing.T) (*metrics.Collector, *nopPublisher, string, *[]journalEntry, *time.Time) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "plugvault.prom")
	var entries []journalEntry
	send := func(msg string, _ journal.Priority, fields map[string]string) error {
		entries = append(entries, journalEntry{msg, fields})
		return nil
	}
	c := metrics.New(path, slog.New(logging.NewJournalHandler(send, logging.NewTextHandler(os.Stderr, nil), nil)))
	now := time.Unix(1796000000, 0)
	c.SetClock(func() time.Time { return now })
	c.SetStatfs(func(p string) (uint64, error) {
		if p != "/run/plugvault/"+uuid+"/drive" {
			return 0, errors.New("not the drive's mount point")
		}
		return 300 << 20, nil
	})
	return c, &nopPublisher{}, path, &entries, &now
}

const uuid = "0b8c6f2e-1111-4a4a-9f9f-123456789abc"

func TestARunWritesTheFileAndTheJournal(t *testing.T) {
	c, next, path, entries, now := setup(t)
	pub := c.Publisher(next)
	st := api.DriveStatus{Name: `blue "b\ack"`, LuksUUID: uuid, State: api.StateAbsent}
	if err := pub.AddDrive(uuid, st); err != nil {
		t.Fatal(err)
	}
	first, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("no metrics file after AddDrive: %v", err)
	}
	label := `{drive="blue \"b\\ack\"",luks_uuid="` + uuid + `"}`
	if !strings.Contains(string(first), "plugvault_last_success_timestamp_seconds"+label+" 0\n") {
		t.Errorf("the first file does not list the drive:\n%s", first)
	}

	for _, s := range []api.State{api.StatePresent, api.StateUnlocking, api.StateMounting, api.StateBackingUp} {
		st.State, st.Present = s, true
		pub.UpdateDrive(uuid, st)
	}
	eng := c.Engine(fakeEngine{now: now, took: 42 * time.Second, bytes: 123456})
	if _, err := eng.Run(t.Context(), drive.Job{LuksUUID: uuid, Target: "/run/plugvault/" + uuid + "/drive"}, nil); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != string(first) {
		t.Errorf("the file changed during the run:\n%s", b)
	}
	st.State, st.LastResult, st.LastBackup, st.SnapshotCount = api.StateSafeToRemove, api.ResultSuccess, 1796000040, 3
	pub.UpdateDrive(uuid, st)
	if next.updates != 5 {
		t.Errorf("the wrapped publisher got %d updates, want all 5", next.updates)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"# TYPE plugvault_last_success_timestamp_seconds gauge\n",
		"plugvault_last_success_timestamp_seconds" + label + " 1.79600004e+09\n",
		"plugvault_last_run_success" + label + " 1\n",
		"plugvault_last_run_bytes" + label + " 123456\n",
		"plugvault_last_run_duration_seconds" + label + " 42\n",
		"plugvault_snapshots" + label + " 3\n",
		"plugvault_free_bytes" + label + " 3.145728e+08\n",
		`plugvault_last_result{drive="blue \"b\\ack\"",luks_uuid="` + uuid + `",result="success"} 1` + "\n",
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("the file lacks %q:\n%s", want, b)
		}
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644 (node_exporter reads it)", fi.Mode())
	}
	if leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*")); len(leftovers) != 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
	if len(*entries) != 1 {
		t.Fatalf("journal entries %+v, want one", *entries)
	}
	e := (*entries)[0]
	if e.msg != "backup completed" || e.fields["MESSAGE_ID"] != logging.MessageBackupCompleted ||
		e.fields["LUKS_UUID"] != uuid || e.fields["BYTES"] != "123456" || e.fields["DURATION_SEC"] != "42.0" {
		t.Errorf("journal entry %+v", e)
	}
}

func TestAFailedRunIsLoggedAsFailed(t *testing.T) {
	c, next, path, entries, _ := setup(t)
	pub := c.Publisher(next)
	st := api.DriveStatus{Name: "blue", LuksUUID: uuid, State: api.StatePresent, Present: true}
	if err := pub.AddDrive(uuid, st); err != nil {
		t.Fatal(err)
	}
	st.State = api.StateUnlocking
	pub.UpdateDrive(uuid, st)
	st.State, st.LastResult, st.StateReason = api.StateFailed, api.ResultFailed, "The drive is full"
	pub.UpdateDrive(uuid, st)
	// A later status of the idle drive is no second end of a run.
	pub.UpdateDrive(uuid, st)
	if len(*entries) != 1 {
		t.Fatalf("journal entries %+v, want one", *entries)
	}
	e := (*entries)[0]
	if e.fields["MESSAGE_ID"] != logging.MessageBackupFailed || e.fields["REASON"] != "The drive is full" {
		t.Errorf("journal entry %+v", e)
	}
	b, _ := os.ReadFile(path)
	if !strings.Contains(string(b), `plugvault_last_run_success{drive="blue",luks_uuid="`+uuid+`"} 0`+"\n") ||
		strings.Contains(string(b), "plugvault_last_run_bytes{") {
		t.Errorf("after a failed run without an engine run:\n%s", b)
	}
}

func TestOverdueOncePerBackup(t *testing.T) {
	c, next, _, entries, now := setup(t)
	pub := c.Publisher(next)
	st := api.DriveStatus{Name: "blue", LuksUUID: uuid, State: api.StateAbsent, LastBackup: uint64(now.Unix())}
	if err := pub.AddDrive(uuid, st); err != nil {
		t.Fatal(err)
	}
	if err := pub.AddDrive("never", api.DriveStatus{Name: "new", State: api.StateAbsent}); err != nil {
		t.Fatal(err)
	}
	*now = now.Add(6 * 24 * time.Hour)
	c.CheckOverdue(7)
	if len(*entries) != 0 {
		t.Fatalf("overdue after 6 of 7 days: %+v", *entries)
	}
	*now = now.Add(2 * 24 * time.Hour)
	c.CheckOverdue(0)
	if len(*entries) != 0 {
		t.Fatalf("overdue with reminders off: %+v", *entries)
	}
	c.CheckOverdue(7)
	c.CheckOverdue(7)
	if len(*entries) != 1 {
		t.Fatalf("entries after 8 days, checked twice: %+v, want one", *entries)
	}
	if e := (*entries)[0]; e.fields["MESSAGE_ID"] != logging.MessageOverdue || e.fields["DRIVE"] != "blue" || e.fields["DAYS"] != "8" {
		t.Errorf("overdue entry %+v", e)
	}
	// A new backup, then falling behind again: a new entry.
	st.LastBackup = uint64(now.Unix())
	pub.UpdateDrive(uuid, st)
	*now = now.Add(8 * 24 * time.Hour)
	c.CheckOverdue(7)
	if len(*entries) != 2 {
		t.Errorf("entries after a new backup fell behind: %d, want 2", len(*entries))
	}
}

// WatchOverdue sleeps until the next drive falls behind, and wakes when a drive backs up:
// nothing polls.
func TestOverdueDeadline(t *testing.T) {
	c, next, _, _, now := setup(t)
	pub := c.Publisher(next)
	last := now.Add(-24 * time.Hour)
	st := api.DriveStatus{Name: "blue", LuksUUID: uuid, State: api.StateAbsent, LastBackup: uint64(last.Unix())}
	if err := pub.AddDrive(uuid, st); err != nil {
		t.Fatal(err)
	}
	<-c.BackedUp() // AddDrive brought a LastBackup
	if got, ok := c.NextOverdue(7); !ok || !got.Equal(last.Add(7*24*time.Hour)) {
		t.Errorf("next overdue %v %v, want %v", got, ok, last.Add(7*24*time.Hour))
	}
	pub.UpdateDrive(uuid, st) // the same LastBackup: no wake-up
	select {
	case <-c.BackedUp():
		t.Error("woken without a new backup")
	default:
	}
	st.LastBackup = uint64(now.Unix())
	pub.UpdateDrive(uuid, st)
	select {
	case <-c.BackedUp():
	default:
		t.Error("a new backup did not wake the watcher")
	}
	*now = now.Add(8 * 24 * time.Hour)
	c.CheckOverdue(7)
	if _, ok := c.NextOverdue(7); ok {
		t.Error("a drive already reported is due again before it backs up")
	}
}
