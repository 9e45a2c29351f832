package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
)

var (
	blueStatus = api.DriveStatus{Name: "blue", LuksUUID: "0f3c5a7e-1111-4222-8333-944455556666", Label: "plugvault",
		Vendor: "SanDisk", Model: "Ultra", Serial: "4C530001", Present: true, State: api.StatePresent, EtaSeconds: -1,
		LastBackup: uint64(fixedNow.Add(-50 * time.Hour).Unix()), LastResult: api.ResultSuccess, SnapshotCount: 14}
	greenStatus = api.DriveStatus{Name: "green", LuksUUID: "0f3d0000-aaaa-4bbb-8ccc-dddddddddddd", State: api.StateAbsent, EtaSeconds: -1}
)

// twoDrives enrolls blue and green in the fake service.
func (e *env) twoDrives() (blue, green dbus.ObjectPath) {
	return e.fake.AddDrive(e.t, blueStatus), e.fake.AddDrive(e.t, greenStatus)
}

func TestStatusJSON(t *testing.T) {
	e := newEnv(t)
	blue, green := e.twoDrives()
	e.fake.SetReminderDays(1)
	code, out, errOut := e.run("", "status", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var doc struct {
		Version      string            `json:"version"`
		ReminderDays uint32            `json:"reminder_days"`
		Drives       []json.RawMessage `json:"drives"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("not JSON: %v: %s", err, out)
	}
	if doc.Version != "0.0.0-fake" || doc.ReminderDays != 1 || len(doc.Drives) != 2 {
		t.Fatalf("doc = %+v", doc)
	}
	var b, g map[string]any
	if err := json.Unmarshal(doc.Drives[0], &b); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(doc.Drives[1], &g); err != nil {
		t.Fatal(err)
	}
	lastBackup := time.Unix(int64(blueStatus.LastBackup), 0).UTC().Format(time.RFC3339)
	want := map[string]any{
		"path": string(blue), "name": "blue", "luks_uuid": blueStatus.LuksUUID, "label": "plugvault",
		"vendor": "SanDisk", "model": "Ultra", "serial": "4C530001", "present": true, "state": "present",
		"state_reason": "", "running": false, "progress": 0.0, "files_done": 0.0, "files_total": 0.0,
		"bytes_done": 0.0, "bytes_total": 0.0, "rate": 0.0, "eta_seconds": -1.0,
		"last_backup": lastBackup, "last_backup_age_seconds": float64(fixedNow.Unix() - int64(blueStatus.LastBackup)),
		"last_result": "success", "snapshot_count": 14.0, "overdue": true,
	}
	for k, v := range want {
		if b[k] != v {
			t.Errorf("blue %s = %#v, want %#v", k, b[k], v)
		}
	}
	if len(b) != len(want) {
		t.Errorf("blue has %d fields, want %d: %v", len(b), len(want), b)
	}
	if g["path"] != string(green) || g["last_backup"] != nil || g["last_backup_age_seconds"] != nil || g["present"] != false || g["overdue"] != false {
		t.Errorf("green = %v", g)
	}

	// list --json has the same shape.
	code, out, _ = e.run("", "list", "--json")
	var listDoc statusDoc
	if code != 0 || json.Unmarshal([]byte(out), &listDoc) != nil || len(listDoc.Drives) != 2 || listDoc.Drives[1].Name != "green" {
		t.Errorf("list --json: exit %d, %s", code, out)
	}
}

func TestStatusHuman(t *testing.T) {
	e := newEnv(t)
	blue, _ := e.twoDrives()
	e.fake.SetReminderDays(1)
	st := blueStatus
	st.State, st.Progress, st.FilesDone, st.FilesTotal = api.StateBackingUp, 0.5, 10, 20
	st.BytesDone, st.BytesTotal, st.Rate, st.EtaSeconds = 3<<30, 6<<30, 12<<20, 200
	e.fake.SetDrive(t, blue, st)
	code, out, _ := e.run("", "status")
	for _, want := range []string{
		"blue: backing-up 50%, 10/20 files, 3.2 of 6.4 GB, 12.6 MB/s, 3 min left",
		"last backup 2 days ago", "last run success, 14 snapshots",
		"green: absent", "never backed up",
		"blue: backing-up 50%, 10/20 files, 3.2 of 6.4 GB, 12.6 MB/s, 3 min left\n    last backup 2 days ago (2026-11-24 10:00), last run success, 14 snapshots\n    reminder: no backup to this drive for 1 day(s) or more\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "reminder:"); n != 1 {
		t.Errorf("%d reminders, want 1 (green was never backed up, so it is not overdue):\n%s", n, out)
	}
	if code != 0 {
		t.Errorf("exit %d", code)
	}
	// The daemon's reason is what the line says.
	st.State, st.StateReason = api.StateAwaitingPassphrase, "The keyfile was rejected — enter the passphrase"
	e.fake.SetDrive(t, blue, st)
	if _, out, _ := e.run("", "status", "blue"); !strings.Contains(out, "blue: The keyfile was rejected — enter the passphrase\n    enter the passphrase with: plugvault unlock blue\n") {
		t.Errorf("no unlock hint:\n%s", out)
	}
	code, out, _ = e.run("", "status", "green")
	if code != 0 || strings.Contains(out, "blue") || !strings.Contains(out, "green: absent") {
		t.Errorf("status green: exit %d\n%s", code, out)
	}
}

func TestPickDrive(t *testing.T) {
	b := drive{path: api.DrivePath(blueStatus.LuksUUID), st: blueStatus}
	g := drive{path: api.DrivePath(greenStatus.LuksUUID), st: greenStatus}
	both := []drive{b, g}
	for _, tc := range []struct {
		drives []drive
		arg    string
		want   string // name, or "" for an error
		code   int
	}{
		{both, "blue", "blue", 0},
		{both, "0F3C5A7E-1111-4222-8333-944455556666", "blue", 0},
		{both, "0f3d", "green", 0},
		{both, string(g.path), "green", 0},
		{[]drive{g}, "", "green", 0},
		{both, "", "", exitUsage},    // several drives: name one
		{both, "0f3", "", exitUsage}, // ambiguous prefix
		{both, "red", "", exitNotFound},
		{both, "/org/plugvault/PlugVault1/drives/nope", "", exitNotFound},
		{nil, "", "", exitNotFound},
	} {
		d, err := pickDrive(tc.drives, tc.arg)
		if tc.want != "" {
			if err != nil || d.st.Name != tc.want {
				t.Errorf("pickDrive(%q) = %s, %v; want %s", tc.arg, d.st.Name, err, tc.want)
			}
			continue
		}
		if got := exitCode(err); err == nil || got != tc.code {
			t.Errorf("pickDrive(%q) error %v (exit %d), want exit %d", tc.arg, err, got, tc.code)
		}
	}
}

func TestActionVerbs(t *testing.T) {
	e := newEnv(t)
	blue, _ := e.twoDrives()
	e.fake.SetResult(api.MethodListSnapshots, []api.Snapshot{
		{Name: "20261124T080000Z", Created: fixedNow.Add(-52 * time.Hour).Unix(), Files: 5, Bytes: 50, Status: api.SnapshotComplete},
		{Name: "20261125T080000Z", Created: fixedNow.Add(-28 * time.Hour).Unix(), Files: 6, Bytes: 60, Status: api.SnapshotPartial},
	})
	dest := t.TempDir()
	for _, tc := range []struct {
		args   []string
		method string
		args0  []any          // expected arguments before the options
		opts   map[string]any // expected options
		action string         // expected "action" in the JSON reply ("" = not an action doc)
	}{
		{[]string{"backup", "blue"}, api.MethodBackupNow, nil, map[string]any{api.OptNoUserInteraction: true}, "backup"},
		{[]string{"cancel", "--drive", "blue"}, api.MethodCancel, nil, map[string]any{api.OptNoUserInteraction: true}, "cancel"},
		{[]string{"eject", "blue"}, api.MethodEject, nil, map[string]any{api.OptNoUserInteraction: true, api.OptPowerOff: true}, "eject"},
		{[]string{"eject", "blue", "--no-power-off"}, api.MethodEject, nil, map[string]any{api.OptNoUserInteraction: true, api.OptPowerOff: false}, "eject"},
		{[]string{"forget", "blue", "--yes"}, api.MethodForget, []any{blue}, map[string]any{api.OptNoUserInteraction: true, api.OptRemoveKeyslot: false}, "forget"},
		{[]string{"forget", "blue", "--yes", "--remove-keyslot"}, api.MethodForget, []any{blue}, map[string]any{api.OptNoUserInteraction: true, api.OptRemoveKeyslot: true}, "forget"},
		{[]string{"restore", "-d", "blue", "latest", "/home/me/../me/doc.txt", dest}, api.MethodRestore,
			[]any{"20261124T080000Z", "home/me/doc.txt", dest}, map[string]any{api.OptNoUserInteraction: true, api.OptOverwrite: false}, ""},
		{[]string{"restore", "--drive=blue", "--overwrite", "20261125T080000Z", dest}, api.MethodRestore,
			[]any{"20261125T080000Z", "", dest}, map[string]any{api.OptNoUserInteraction: true, api.OptOverwrite: true}, ""},
		{[]string{"verify", "-d", "blue"}, api.MethodVerify, []any{""}, map[string]any{api.OptNoUserInteraction: true}, ""},
		{[]string{"verify", "-d", "blue", "20261124T080000Z"}, api.MethodVerify, []any{"20261124T080000Z"}, map[string]any{api.OptNoUserInteraction: true}, ""},
		{[]string{"browse", "blue"}, api.MethodBrowse, nil, map[string]any{api.OptNoUserInteraction: true}, ""},
	} {
		name := strings.Join(tc.args, " ")
		before := len(e.fake.Calls())
		code, out, errOut := e.run("", append(tc.args, "--json")...)
		if code != 0 {
			t.Errorf("%s: exit %d: %s", name, code, errOut)
			continue
		}
		c := e.lastCall(tc.method)
		if len(e.fake.Calls()) == before || c.Interactive {
			t.Errorf("%s: no call, or an interactive one without a terminal: %v", name, c)
		}
		wantPath := blue
		if tc.method == api.MethodForget {
			wantPath = api.ManagerPath
		}
		if c.Path != wantPath {
			t.Errorf("%s: called on %s, want %s", name, c.Path, wantPath)
		}
		for i, want := range tc.args0 {
			if fmt.Sprint(c.Args[i]) != fmt.Sprint(want) {
				t.Errorf("%s: argument %d = %v, want %v", name, i, c.Args[i], want)
			}
		}
		got := callOpts(t, c)
		for k, v := range tc.opts {
			if got[k] != v {
				t.Errorf("%s: option %s = %v, want %v", name, k, got[k], v)
			}
		}
		if len(got) != len(tc.opts) {
			t.Errorf("%s: options %v, want %v", name, got, tc.opts)
		}
		if tc.action != "" {
			var doc actionDoc
			if err := json.Unmarshal([]byte(out), &doc); err != nil || doc.Drive != string(blue) || doc.Action != tc.action {
				t.Errorf("%s: JSON %q (%v)", name, out, err)
			}
		}
	}
}

func TestQueryVerbsJSON(t *testing.T) {
	e := newEnv(t)
	blue, _ := e.twoDrives()
	snaps := []api.Snapshot{{Name: "20261124T080000Z", Created: fixedNow.Add(-52 * time.Hour).Unix(), Files: 5, Bytes: 50, Status: api.SnapshotComplete, Changed: 3},
		{Name: "20261125T080000Z", Created: fixedNow.Add(-28 * time.Hour).Unix(), Files: 6, Bytes: 60, Status: api.SnapshotComplete, Changed: api.ChangedUnknown}}
	e.fake.SetResult(api.MethodListSnapshots, snaps)
	e.fake.SetResult(api.MethodBrowse, "/run/plugvault/browse/blue")
	e.fake.SetResult(api.MethodVerify, uint64(42), []string{"home/a: size differs"})

	code, out, _ := e.run("", "snapshots", "blue", "--json")
	var sd struct {
		Drive     string           `json:"drive"`
		Snapshots []map[string]any `json:"snapshots"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &sd) != nil || sd.Drive != string(blue) || len(sd.Snapshots) != 2 {
		t.Fatalf("snapshots --json: exit %d: %s", code, out)
	}
	s := sd.Snapshots[0]
	wantCreated := time.Unix(snaps[0].Created, 0).UTC().Format(time.RFC3339)
	if s["name"] != snaps[0].Name || s["created"] != wantCreated || s["created_unix"] != float64(snaps[0].Created) ||
		s["files"] != 5.0 || s["bytes"] != 50.0 || s["status"] != "complete" || s["changed"] != 3.0 || len(s) != 7 {
		t.Errorf("snapshot JSON = %v", s)
	}
	if c, ok := sd.Snapshots[1]["changed"]; !ok || c != nil {
		t.Errorf("a snapshot that did not record its changes: changed = %v (present %v), want null", c, ok)
	}
	code, out, _ = e.run("", "snapshots", "blue")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || !strings.Contains(lines[0], "CHANGED") ||
		strings.Fields(lines[1])[4] != "3" || strings.Fields(lines[2])[4] != "-" {
		t.Errorf("snapshots table (exit %d):\n%s", code, out)
	}

	code, _, _ = e.run("", "browse", "--json")
	if code != exitUsage {
		t.Errorf("browse without DRIVE and two drives: exit %d, want %d", code, exitUsage)
	}
	code, out, _ = e.run("", "browse", "blue")
	if code != 0 || out != "/run/plugvault/browse/blue\n" {
		t.Errorf("browse printed %q (exit %d), want just the path", out, code)
	}
	code, out, _ = e.run("", "browse", "blue", "--json")
	var bd map[string]string
	if code != 0 || json.Unmarshal([]byte(out), &bd) != nil || bd["path"] != "/run/plugvault/browse/blue" || bd["drive"] != string(blue) {
		t.Errorf("browse --json = %q", out)
	}

	code, out, _ = e.run("", "verify", "-d", "blue", "--json")
	var vd struct {
		Drive    string   `json:"drive"`
		Snapshot string   `json:"snapshot"`
		Checked  uint64   `json:"checked"`
		Problems []string `json:"problems"`
	}
	if json.Unmarshal([]byte(out), &vd) != nil || vd.Drive != string(blue) || vd.Checked != 42 || len(vd.Problems) != 1 || vd.Problems[0] != "home/a: size differs" {
		t.Errorf("verify --json = %q", out)
	}
	if code != exitFailed {
		t.Errorf("verify with problems: exit %d, want %d", code, exitFailed)
	}
}

func TestExitCodes(t *testing.T) {
	e := newEnv(t)
	e.fake.AddDrive(t, blueStatus)
	for _, tc := range []struct {
		err  error
		code int
		kind string
	}{
		{api.ErrNotAuthorized, exitNotAuthorized, "not-authorized"},
		{api.ErrNotAuthorizedCanObtain, exitNotAuthorized, "not-authorized"},
		{api.ErrNotAuthorizedDismissed, exitNotAuthorized, "not-authorized"},
		{api.ErrBusy, exitBusy, "busy"},
		{api.ErrNotPresent, exitNotPresent, "not-present"},
		{api.ErrBadPassphrase, exitBadPassphrase, "bad-passphrase"},
		{api.ErrNotFound, exitNotFound, "not-found"},
		{api.ErrCancelled, exitCancelled, "cancelled"},
		{api.ErrInvalidArgument, exitUsage, "usage"},
		{api.ErrFailed, exitFailed, "failed"},
	} {
		e.fake.FailNext(api.MethodBackupNow, fmt.Errorf("cannot back up to blue: %w", tc.err))
		code, out, errOut := e.run("", "backup", "--json")
		if code != tc.code {
			t.Errorf("%v: exit %d, want %d", tc.err, code, tc.code)
		}
		var doc struct {
			Error struct {
				Message  string `json:"message"`
				Kind     string `json:"kind"`
				ExitCode int    `json:"exit_code"`
			} `json:"error"`
		}
		if out != "" || json.Unmarshal([]byte(errOut), &doc) != nil || doc.Error.Kind != tc.kind || doc.Error.ExitCode != tc.code ||
			!strings.Contains(doc.Error.Message, "cannot back up to blue: "+tc.err.Error()) {
			t.Errorf("%v: stdout %q, stderr %q", tc.err, out, errOut)
		}
		code, _, errOut = e.run("", "backup")
		if code != tc.code || !strings.HasPrefix(errOut, "plugvault: cannot start a backup to blue: ") {
			t.Errorf("%v (human): exit %d, stderr %q", tc.err, code, errOut)
		}
	}
	e.fake.FailNext(api.MethodBackupNow, nil)

	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"frobnicate"}, exitUsage},
		{[]string{"backup", "--frobnicate"}, exitUsage},
		{[]string{"backup", "blue", "extra"}, exitUsage},
		{[]string{"backup", "red"}, exitNotFound},
		{[]string{"restore", "latest"}, exitUsage},
		{[]string{"completion", "tcsh"}, exitUsage},
	} {
		if code, _, errOut := e.run("", tc.args...); code != tc.code {
			t.Errorf("%v: exit %d, want %d (%s)", tc.args, code, tc.code, errOut)
		}
	}

	// A context cancelled by Ctrl-C is exit 130.
	if got := exitCode(fmt.Errorf("cannot eject: %w", context.Canceled)); got != exitCancelled {
		t.Errorf("context.Canceled: exit %d", got)
	}
}

func TestNoService(t *testing.T) {
	e := newEnv(t)
	e.fake.Conn.Close() // plugvaultd is gone; the bus says ServiceUnknown
	code, _, errOut := e.run("", "status")
	if code != exitNoService || !strings.Contains(errOut, "systemctl status plugvaultd") {
		t.Errorf("exit %d, stderr %q; want %d", code, errOut, exitNoService)
	}
	a := newApp(strings.NewReader(""), &strings.Builder{}, &strings.Builder{})
	a.connect = func(ctx context.Context) (*api.Client, error) { return nil, errors.New("no bus") }
	if code := a.run(t.Context(), []string{"list"}); code != exitNoService {
		t.Errorf("no bus: exit %d, want %d", code, exitNoService)
	}
}

func TestUnlockPassphraseStdin(t *testing.T) {
	e := newEnv(t)
	e.fake.AddDrive(t, blueStatus)
	for _, tc := range []struct{ stdin, want string }{
		{"correct horse\n", "correct horse"},
		{"no newline", "no newline"},
		{"two\n\n", "two\n"},
		{"crlf\r\n", "crlf\r"},
		{" spaces \n", " spaces "},
	} {
		code, _, errOut := e.run(tc.stdin, "unlock", "--passphrase-stdin")
		if code != 0 {
			t.Errorf("%q: exit %d: %s", tc.stdin, code, errOut)
			continue
		}
		c := e.lastCall(api.MethodUnlock)
		if got := string(c.Args[0].([]byte)); got != tc.want || c.Interactive {
			t.Errorf("stdin %q: daemon got %q (interactive %v), want %q", tc.stdin, got, c.Interactive, tc.want)
		}
	}
	n := len(e.fake.Calls())
	if code, _, _ := e.run("\n", "unlock", "--passphrase-stdin"); code != exitUsage {
		t.Errorf("empty passphrase: exit %d", code)
	}
	if code, _, errOut := e.run("secret\n", "unlock"); code != exitUsage || !strings.Contains(errOut, "--passphrase-stdin") {
		t.Errorf("no terminal, no --passphrase-stdin: exit %d, %q", code, errOut)
	}
	for _, c := range e.fake.Calls()[n:] {
		if c.Method == api.MethodUnlock {
			t.Errorf("refused input still reached the daemon: %v", c)
		}
	}
	e.fake.FailNext(api.MethodUnlock, fmt.Errorf("cannot unlock: %w", api.ErrBadPassphrase))
	if code, _, _ := e.run("wrong\n", "unlock", "--passphrase-stdin"); code != exitBadPassphrase {
		t.Errorf("bad passphrase: exit %d", code)
	}
}

func TestUnlockFromTerminalWithoutEcho(t *testing.T) {
	e := newEnv(t)
	e.fake.AddDrive(t, blueStatus)
	master, slave := openPTY(t)
	stderr := newSyncBuffer()
	var stdout strings.Builder
	done := e.runAsync(t.Context(), slave, &stdout, stderr, "unlock", "blue")
	stderr.waitFor(t, "Passphrase for blue: ", 1) // echo is already off when the prompt shows
	if _, err := master.Write([]byte("s3cret pass\n")); err != nil {
		t.Fatal(err)
	}
	if code := waitCode(t, done); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	c := e.lastCall(api.MethodUnlock)
	if got := string(c.Args[0].([]byte)); got != "s3cret pass" {
		t.Errorf("daemon got %q", got)
	}
	if !c.Interactive {
		t.Error("a call from a terminal did not allow interactive authorization")
	}
	if _, ok := callOpts(t, c)[api.OptNoUserInteraction]; ok {
		t.Error("a call from a terminal set auth.no_user_interaction")
	}
	if echo := echoed(t, master, slave); strings.Contains(echo, "s3cret") {
		t.Errorf("the passphrase was echoed: %q", echo)
	}
	// The terminal is restored: typed input echoes again.
	typeLine(t, master, slave, "visible\n")
	if echo := echoed(t, master, slave); !strings.Contains(echo, "visible") {
		t.Errorf("echo was not restored: %q", echo)
	}

	// --non-interactive on a terminal: no interactive authorization.
	if _, err := master.Write([]byte("again\n")); err != nil {
		t.Fatal(err)
	}
	done = e.runAsync(t.Context(), slave, &stdout, stderr, "unlock", "blue", "--non-interactive")
	if code := waitCode(t, done); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if c := e.lastCall(api.MethodUnlock); c.Interactive || callOpts(t, c)[api.OptNoUserInteraction] != true {
		t.Errorf("--non-interactive call: %v interactive=%v", c, c.Interactive)
	}
}

func TestLogPrintsTheCommand(t *testing.T) {
	e := newEnv(t)
	e.fake.AddDrive(t, blueStatus)
	code, out, _ := e.run("", "log", "--since", "2 hours ago", "-n", "50")
	if code != 0 || out != "journalctl --unit=plugvaultd.service --output=short-iso '--since=2 hours ago' --lines=50\n" {
		t.Errorf("log: exit %d, %q", code, out)
	}
	code, out, _ = e.run("", "log", "blue", "--follow", "--json")
	var doc struct{ Argv []string }
	if code != 0 || json.Unmarshal([]byte(out), &doc) != nil ||
		strings.Join(doc.Argv, " ") != "journalctl --unit=plugvaultd.service --output=short-iso --follow --grep="+blueStatus.LuksUUID {
		t.Errorf("log blue --json: exit %d, %q", code, out)
	}
}

func TestHelpForEveryVerb(t *testing.T) {
	for _, v := range verbs {
		if v.summary == "" {
			continue
		}
		var out, errb strings.Builder
		a := newApp(strings.NewReader(""), &out, &errb)
		a.connect = nil // help never connects
		if code := a.run(t.Context(), []string{v.name, "--help"}); code != 0 {
			t.Errorf("%s --help: exit %d: %s", v.name, code, errb.String())
		}
		if !strings.HasPrefix(out.String(), "Usage: plugvault "+v.name) || !strings.Contains(out.String(), "--json") {
			t.Errorf("%s --help:\n%s", v.name, out.String())
		}
		if v.name != "version" && v.name != "help" && !strings.Contains(out.String(), "plugvault "+v.name+" ") &&
			!strings.Contains(out.String(), "plugvault "+v.name+"\n") {
			t.Errorf("%s --help has no example", v.name)
		}
	}
	for _, topic := range []string{"exit-codes", "json", "drive"} {
		var out strings.Builder
		a := newApp(strings.NewReader(""), &out, &out)
		if code := a.run(t.Context(), []string{"help", topic}); code != 0 || out.Len() == 0 {
			t.Errorf("help %s: exit %d", topic, code)
		}
	}
}

func TestExitCodesAreDocumented(t *testing.T) {
	for _, code := range []int{exitOK, exitFailed, exitUsage, exitNotAuthorized, exitBusy, exitNotPresent, exitBadPassphrase, exitNotFound, exitNoService, exitCancelled} {
		if !strings.Contains(exitCodesHelp, fmt.Sprintf("\n  %-4d ", code)) {
			t.Errorf("exit code %d is not in exitCodesHelp", code)
		}
	}
}

func TestBashCompletion(t *testing.T) {
	var out strings.Builder
	a := newApp(strings.NewReader(""), &out, &out)
	if code := a.run(t.Context(), []string{"completion", "bash"}); code != 0 {
		t.Fatalf("exit %d: %s", code, out.String())
	}
	script := out.String()
	bash := lookBash(t)
	f := filepath.Join(t.TempDir(), "plugvault.bash")
	if err := os.WriteFile(f, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, v := range verbs {
		if v.summary == "" {
			continue
		}
		if got := strings.Fields(runBash(t, bash, f, "plugvault "+v.name, 1)); !slices.Contains(got, v.name) {
			t.Errorf("completing %q offers %v", v.name, got)
		}
	}
	// Complete "plugvault ba" in a real bash with the script loaded.
	got := runBash(t, bash, f, "plugvault ba", 1)
	if got != "backup" {
		t.Errorf("completing 'plugvault ba' gave %q, want backup", got)
	}
	got = runBash(t, bash, f, "plugvault enroll --file", 2)
	if got != "--filesystem" {
		t.Errorf("completing 'plugvault enroll --file' gave %q", got)
	}
}

func lookBash(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("bash")
	if err != nil {
		t.Fatalf("bash is not installed: %v", err)
	}
	return p
}

// runBash loads the completion script and completes line (its words; cword is the index of
// the word being completed), returning COMPREPLY joined by spaces.
func runBash(t *testing.T, bash, script, line string, cword int) string {
	t.Helper()
	prog := fmt.Sprintf(`source %q; COMP_WORDS=(%s); COMP_CWORD=%d; _plugvault; echo "${COMPREPLY[*]}"`, script, line, cword)
	out, err := exec.Command(bash, "--norc", "-c", prog).CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestCallErrAvoidsCannotChains(t *testing.T) {
	daemonSaid := fmt.Errorf("cannot enroll: /dev/vda is not a removable USB disk: %w", api.ErrInvalidArgument)
	if got := callErr(daemonSaid, "cannot enroll %s", "/dev/vda"); got.Error() != daemonSaid.Error() || !errors.Is(got, api.ErrInvalidArgument) {
		t.Errorf("callErr kept the chain: %v", got)
	}
	bare := fmt.Errorf("connection closed: %w", api.ErrFailed)
	if got := callErr(bare, "cannot eject %s", "blue"); got.Error() != "cannot eject blue: connection closed: failed" || !errors.Is(got, api.ErrFailed) {
		t.Errorf("callErr = %v", got)
	}
}
