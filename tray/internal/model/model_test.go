package model

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

const drivePath = dbus.ObjectPath(api.DrivesPathPrefix + "1234")

func status(s api.State) api.DriveStatus {
	return api.DriveStatus{Name: "Blue stick", LuksUUID: "1234abcd-0000-4000-8000-000000000001", Label: "plugvault",
		Vendor: "SanDisk", Model: "Ultra", Serial: "4C530001", Present: s != api.StateAbsent, State: s,
		LastBackup: uint64(t0.Add(-2 * time.Hour).Unix()), LastResult: api.ResultSuccess, EtaSeconds: -1}
}

func up(m *Model, now time.Time, sts ...api.DriveStatus) []Action {
	ev := ServiceUp{ReminderDays: 7}
	for i, st := range sts {
		p := drivePath
		if i > 0 {
			p = dbus.ObjectPath(fmt.Sprintf("%s%d", api.DrivesPathPrefix, 5000+i))
		}
		ev.Drives = append(ev.Drives, api.DriveEntry{Path: p, Status: st})
	}
	return m.Update(now, ev)
}

// changeOf is the DriveChanged that sets props on the drive's status, as api.WatchDrives
// delivers it.
func changeOf(m *Model, p dbus.ObjectPath, props map[string]any) DriveChanged {
	st := m.drives[p].st
	c := map[string]dbus.Variant{}
	for k, v := range props {
		c[k] = dbus.MakeVariant(v)
	}
	if err := st.Apply(c); err != nil {
		panic(err)
	}
	return DriveChanged{Path: p, Status: st}
}

func find[T Action](acts []Action) (T, bool) {
	var zero T
	for _, a := range acts {
		if v, ok := a.(T); ok {
			return v, true
		}
	}
	return zero, false
}

func all[T Action](acts []Action) []T {
	var out []T
	for _, a := range acts {
		if v, ok := a.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// wantEnabled is the specification of which menu items make sense in which state (the drive
// is present in every state but absent).
var wantEnabled = map[api.State]map[ItemKind]bool{
	api.StateAbsent:             {ItemShowLog: true},
	api.StatePresent:            {ItemBackupNow: true, ItemEject: true, ItemBrowse: true, ItemRestore: true, ItemShowLog: true},
	api.StateUnlocking:          {ItemCancel: true, ItemEject: true, ItemShowLog: true},
	api.StateAwaitingPassphrase: {ItemUnlock: true, ItemCancel: true, ItemEject: true, ItemShowLog: true},
	api.StateMounting:           {ItemCancel: true, ItemEject: true, ItemShowLog: true},
	api.StateBackingUp:          {ItemCancel: true, ItemEject: true, ItemShowLog: true},
	api.StateFinishing:          {ItemEject: true, ItemShowLog: true},
	api.StateUnmounting:         {ItemShowLog: true},
	api.StateLocking:            {ItemShowLog: true},
	api.StateSafeToRemove:       {ItemBackupNow: true, ItemEject: true, ItemBrowse: true, ItemRestore: true, ItemShowLog: true},
	api.StateFailed:             {ItemBackupNow: true, ItemEject: true, ItemBrowse: true, ItemRestore: true, ItemShowLog: true},
}

var wantIcon = map[api.State]Icon{
	api.StateAbsent: IconIdle, api.StatePresent: IconIdle, api.StateUnlocking: IconWorking,
	api.StateAwaitingPassphrase: IconAttention, api.StateMounting: IconWorking, api.StateBackingUp: IconWorking,
	api.StateFinishing: IconWorking, api.StateUnmounting: IconWorking, api.StateLocking: IconWorking,
	api.StateSafeToRemove: IconSafe, api.StateFailed: IconAttention,
}

// wantLine holds a piece of each state's status line.
var wantLine = map[api.State]string{
	api.StateAbsent: "Blue stick: Last backup 2 hours ago", api.StatePresent: "Blue stick: Plugged in · Last backup 2 hours ago",
	api.StateUnlocking: "Unlocking Blue stick", api.StateAwaitingPassphrase: "Blue stick: Passphrase needed",
	api.StateMounting: "Preparing Blue stick", api.StateBackingUp: "Backing up to Blue stick:",
	api.StateFinishing: "Backing up to Blue stick: finishing", api.StateUnmounting: "Unmounting Blue stick",
	api.StateLocking: "Locking Blue stick", api.StateSafeToRemove: "Blue stick: Safe to remove",
	api.StateFailed: "Blue stick: Backup failed",
}

func TestSpecCoversEveryState(t *testing.T) {
	for _, s := range api.States {
		if _, ok := wantEnabled[s]; !ok {
			t.Errorf("no menu expectation for %s", s)
		}
		if _, ok := wantIcon[s]; !ok {
			t.Errorf("no icon expectation for %s", s)
		}
		if _, ok := wantLine[s]; !ok {
			t.Errorf("no status line expectation for %s", s)
		}
	}
}

// checkMenu checks a one-drive menu in state s: the status line (containing line), a separator
// under it, exactly the actions of the specification (enabled; the others left out, not
// greyed), Show log, a separator, then About and Quit.
func checkMenu(t *testing.T, s api.State, line string, menu []MenuItem) {
	t.Helper()
	kinds := map[ItemKind]bool{}
	for i, it := range menu {
		kinds[it.Key.Kind] = true
		switch it.Key.Kind {
		case ItemSeparator, ItemHeadSeparator:
			if !it.Separator() {
				t.Errorf("%s: item %d is not drawn as a separator", s, i)
			}
			continue
		case ItemQuit, ItemAbout, ItemSetup:
			if !it.Enabled || it.Key.Drive != "" {
				t.Errorf("%s: %q enabled=%v drive=%q", s, it.Label, it.Enabled, it.Key.Drive)
			}
			continue
		case ItemStatus:
			if !strings.Contains(it.Label, line) || it.Enabled {
				t.Errorf("%s: status line %q (enabled %v) does not contain %q", s, it.Label, it.Enabled, line)
			}
			if i+1 >= len(menu) || menu[i+1].Key.Kind != ItemHeadSeparator {
				t.Errorf("%s: no separator under the status line", s)
			}
		default:
			if !wantEnabled[s][it.Key.Kind] || !it.Enabled {
				t.Errorf("%s: item %q shown (enabled=%v); it does not apply", s, it.Label, it.Enabled)
			}
		}
		if it.Key.Drive != drivePath {
			t.Errorf("%s: item %q belongs to %q", s, it.Label, it.Key.Drive)
		}
	}
	for k, want := range wantEnabled[s] {
		if want && !kinds[k] {
			t.Errorf("%s: menu lacks item kind %d", s, k)
		}
	}
	for _, k := range []ItemKind{ItemStatus, ItemHeadSeparator, ItemShowLog, ItemSeparator, ItemSetup, ItemAbout, ItemQuit} {
		if !kinds[k] {
			t.Errorf("%s: menu lacks item kind %d", s, k)
		}
	}
	if n := len(menu); n < 2 || menu[n-2].Key.Kind != ItemAbout || menu[n-1].Key.Kind != ItemQuit {
		t.Errorf("%s: the menu does not end with About, Quit: %+v", s, menu)
	}
}

// TestEveryStateOnServiceUp: the state read afresh gives the icon, tooltip and menu of the
// specification, and only a drive that awaits its passphrase raises a notification and the
// dialog.
func TestEveryStateOnServiceUp(t *testing.T) {
	for _, s := range api.States {
		t.Run(string(s), func(t *testing.T) {
			m := New()
			acts := up(m, t0, status(s))
			icon, ok := find[SetIcon](acts)
			if !ok || icon.Icon != wantIcon[s] {
				t.Errorf("icon %+v, want %v", icon, wantIcon[s])
			}
			tip, _ := find[SetTooltip](acts)
			if !strings.Contains(tip.Text, wantLine[s]) {
				t.Errorf("tooltip %q does not contain %q", tip.Text, wantLine[s])
			}
			menu, _ := find[SetMenu](acts)
			checkMenu(t, s, wantLine[s], menu.Items)
			notes := all[Notify](acts)
			_, dialog := find[ShowDialog](acts)
			if s == api.StateAwaitingPassphrase {
				if len(notes) != 1 || !strings.Contains(notes[0].Summary, "Passphrase needed for Blue stick") || !dialog {
					t.Errorf("notifications %+v, dialog %v", notes, dialog)
				}
			} else if len(notes) != 0 || dialog {
				t.Errorf("unexpected notifications %+v or dialog %v", notes, dialog)
			}
		})
	}
}

// wantNotification is the specification of the transition notifications: the summary's start,
// or "" for none.
func wantNotification(from, to api.State) string {
	switch {
	case to == api.StateAwaitingPassphrase:
		return "Passphrase needed for Blue stick"
	case to == api.StateBackingUp:
		return "Backing up to Blue stick"
	case to == api.StateSafeToRemove && from.Running():
		return "Backup complete: safe to remove Blue stick"
	case to == api.StateFailed && (from == api.StateUnlocking || from == api.StateAwaitingPassphrase):
		return "Cannot unlock Blue stick"
	case to == api.StateFailed:
		return "Backup to Blue stick failed"
	case to == api.StateAbsent && (from == api.StateMounting || from == api.StateBackingUp ||
		from == api.StateFinishing || from == api.StateUnmounting || from == api.StateLocking):
		return "Blue stick was removed too early"
	}
	return ""
}

// TestEveryTransition drives a drive from every state to every other state, with a reason as
// the daemon gives one, and checks icon, tooltip (the reason is the status line), menu,
// notifications and the dialog.
func TestEveryTransition(t *testing.T) {
	for _, from := range api.States {
		for _, to := range api.States {
			if from == to {
				continue
			}
			t.Run(string(from)+"->"+string(to), func(t *testing.T) {
				m := New()
				up(m, t0, status(from))
				reason := "Reason for " + string(to)
				if to == api.StateFailed {
					reason = "the drive is full"
				}
				props := map[string]any{api.PropState: string(to), api.PropPresent: to != api.StateAbsent, api.PropStateReason: reason}
				acts := m.Update(t0.Add(time.Second), changeOf(m, drivePath, props))
				icon, tip, menu := m.View()
				if icon.Icon != wantIcon[to] {
					t.Errorf("icon %v, want %v", icon.Icon, wantIcon[to])
				}
				line := "Blue stick: " + reason
				if !strings.Contains(tip, line) {
					t.Errorf("tooltip %q does not contain %q", tip, line)
				}
				checkMenu(t, to, line, menu)
				if wantIcon[from] != wantIcon[to] {
					if a, ok := find[SetIcon](acts); !ok || a.Icon != wantIcon[to] {
						t.Errorf("no SetIcon %v in %+v", wantIcon[to], acts)
					}
				} else if a, ok := find[SetIcon](acts); ok {
					t.Errorf("icon did not change but SetIcon %+v was sent", a)
				}
				if _, ok := find[SetMenu](acts); !ok {
					t.Errorf("menu not updated")
				}
				notes := all[Notify](acts)
				want := wantNotification(from, to)
				switch {
				case want == "" && len(notes) > 0:
					t.Errorf("unexpected notifications %+v", notes)
				case want != "" && (len(notes) != 1 || !strings.HasPrefix(notes[0].Summary, want)):
					t.Errorf("notifications %+v, want one starting %q", notes, want)
				}
				if to == api.StateFailed && (len(notes) != 1 || !strings.Contains(notes[0].Body, "the drive is full")) {
					t.Errorf("failure notification does not say why: %+v", notes)
				}
				dlg, shown := find[ShowDialog](acts)
				_, hidden := find[HideDialog](acts)
				switch {
				case to == api.StateAwaitingPassphrase:
					if !shown || dlg.Drive != drivePath {
						t.Errorf("dialog not shown: %+v", acts)
					}
				case from == api.StateAwaitingPassphrase:
					if !hidden {
						t.Errorf("dialog not hidden: %+v", acts)
					}
				default:
					if shown || hidden {
						t.Errorf("dialog touched: %+v", acts)
					}
				}
			})
		}
	}
}

// TestEveryClick clicks every menu item in every state: an enabled action item produces
// exactly its action, a disabled one nothing.
func TestEveryClick(t *testing.T) {
	method := map[ItemKind]string{ItemBackupNow: api.MethodBackupNow, ItemCancel: api.MethodCancel,
		ItemEject: api.MethodEject, ItemBrowse: api.MethodBrowse}
	for _, s := range api.States {
		for _, k := range []ItemKind{ItemStatus, ItemUnlock, ItemBackupNow, ItemCancel, ItemEject, ItemBrowse, ItemRestore, ItemShowLog} {
			m := New()
			up(m, t0, status(s))
			if s == api.StateAwaitingPassphrase {
				m.Update(t0, DialogCancelled{Drive: drivePath})
			}
			acts := m.Update(t0, MenuClicked{Key: MenuKey{drivePath, k}})
			call, called := find[Call](acts)
			dlg, dialog := find[ShowDialog](acts)
			lg, logShown := find[ShowLog](acts)
			rs, restore := find[OpenRestore](acts)
			enabled := wantEnabled[s][k]
			switch {
			case method[k] != "":
				if called != enabled || (called && (call.Method != method[k] || call.Drive != drivePath)) {
					t.Errorf("%s: click %d: call %+v (called %v), enabled %v", s, k, call, called, enabled)
				}
			case k == ItemUnlock:
				if dialog != enabled || (dialog && dlg.Drive != drivePath) {
					t.Errorf("%s: Enter passphrase: dialog %v, enabled %v", s, dialog, enabled)
				}
			case k == ItemRestore:
				if restore != enabled || (restore && (rs.Drive != drivePath || !strings.Contains(rs.Title, "Blue stick"))) {
					t.Errorf("%s: Restore files: %+v (opened %v), enabled %v", s, rs, restore, enabled)
				}
			case k == ItemShowLog:
				if !logShown || lg.Drive != drivePath || len(lg.Lines) == 0 {
					t.Errorf("%s: Show log: %+v", s, lg)
				}
			default:
				if called || dialog || logShown || restore {
					t.Errorf("%s: informational item did something: %+v", s, acts)
				}
			}
		}
	}
	m := New()
	up(m, t0)
	if _, ok := find[Quit](m.Update(t0, MenuClicked{Key: MenuKey{Kind: ItemQuit}})); !ok {
		t.Error("Quit does not quit")
	}
}

// TestServiceDownAndBack: in every state the service going away shows "not running" and hides
// the dialog; coming back restores the state without repeating notifications (except the
// passphrase request, which is still pending).
func TestServiceDownAndBack(t *testing.T) {
	for _, s := range api.States {
		m := New()
		up(m, t0, status(s))
		acts := m.Update(t0, ServiceDown{})
		icon, tip, menu := m.View()
		if icon.Icon != IconOffline || !strings.Contains(tip, "not running") {
			t.Errorf("%s: down shows %v %q", s, icon.Icon, tip)
		}
		for _, it := range menu {
			if it.Enabled != (it.Key.Kind == ItemQuit || it.Key.Kind == ItemAbout) {
				t.Errorf("%s: down: item %q enabled=%v", s, it.Label, it.Enabled)
			}
		}
		if _, hidden := find[HideDialog](acts); hidden != (s == api.StateAwaitingPassphrase) {
			t.Errorf("%s: down: dialog hidden=%v", s, hidden)
		}
		// Property changes while down are ignored; the next ServiceUp carries the truth.
		if acts := m.Update(t0, changeOf(m, drivePath, map[string]any{api.PropState: "backing-up"})); len(all[Notify](acts)) != 0 {
			t.Errorf("%s: notification while down", s)
		}
		acts = up(m, t0.Add(time.Minute), status(s))
		if icon, _, _ := m.View(); icon.Icon != wantIcon[s] {
			t.Errorf("%s: back up shows %v", s, icon.Icon)
		}
		notes := all[Notify](acts)
		if (len(notes) == 1) != (s == api.StateAwaitingPassphrase) || len(notes) > 1 {
			t.Errorf("%s: back up notified %+v", s, notes)
		}
	}
}

func TestDriveRemovedAndAdded(t *testing.T) {
	for _, s := range api.States {
		m := New()
		up(m, t0, status(s))
		m.Update(t0, DriveRemoved{Path: drivePath})
		_, tip, menu := m.View()
		if !strings.Contains(tip, "no backup drives") || len(menu) != 5 {
			t.Errorf("%s: after removal: %q %+v", s, tip, menu)
		}
		acts := m.Update(t0, DriveAdded{Path: drivePath, Status: status(s)})
		if icon, _, _ := m.View(); icon.Icon != wantIcon[s] {
			t.Errorf("%s: added drive shows %v", s, icon.Icon)
		}
		if _, ok := find[SetMenu](acts); !ok {
			t.Errorf("%s: menu not rebuilt", s)
		}
	}
}

// The daemon's StateReason is the status line, with a backup's progress or the age of the
// last backup after it.
func TestStatusLineShowsTheReason(t *testing.T) {
	for _, c := range []struct {
		state  api.State
		reason string
		total  uint64
		want   string
	}{
		{api.StatePresent, "Plugged in", 0, "Blue stick: Plugged in · Last backup 2 hours ago"},
		{api.StateAbsent, "The drive was removed", 0, "Blue stick: The drive was removed · Last backup 2 hours ago"},
		{api.StateAwaitingPassphrase, "The passphrase was wrong — try again", 0, "Blue stick: The passphrase was wrong — try again"},
		{api.StateBackingUp, "Looking for changes (12 files found)", 0, "Blue stick: Looking for changes (12 files found)"},
		{api.StateBackingUp, "Backing up 3 of 4 files", 2_900_000_000, "Blue stick: Backing up 3 of 4 files · 42% · 1.2 of 2.9 GB · 3 min left"},
		{api.StateSafeToRemove, "Safe to remove", 0, "Blue stick: Safe to remove"},
		{api.StateFailed, "The backup failed:   the drive\nis full", 0, "Blue stick: The backup failed: the drive is full"},
	} {
		st := status(c.state)
		st.StateReason, st.Progress, st.BytesDone, st.BytesTotal, st.EtaSeconds = c.reason, 0.42, 1_234_000_000, c.total, 180
		if got := StatusLine(t0, st); got != c.want {
			t.Errorf("%s: got %q, want %q", c.state, got, c.want)
		}
	}
}

func TestStatusLineFormats(t *testing.T) {
	st := status(api.StateBackingUp)
	st.Progress, st.BytesDone, st.BytesTotal, st.EtaSeconds = 0.42, 1_234_000_000, 2_900_000_000, 180
	if got, want := StatusLine(t0, st), "Backing up to Blue stick: 42% · 1.2 of 2.9 GB · 3 min left"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	st.EtaSeconds = -1
	if got, want := StatusLine(t0, st), "Backing up to Blue stick: 42% · 1.2 of 2.9 GB"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	st.BytesTotal = 0
	if got := StatusLine(t0, st); !strings.Contains(got, "counting files") {
		t.Errorf("scan phase: %q", got)
	}
	st = status(api.StateAbsent)
	st.LastBackup = 0
	if got := StatusLine(t0, st); got != "Blue stick: Never backed up" {
		t.Errorf("never: %q", got)
	}
	if got := DriveName(api.DriveStatus{LuksUUID: "deadbeef-1111"}); got != "drive deadbeef" {
		t.Errorf("DriveName fallback: %q", got)
	}
}

func TestProgressIcon(t *testing.T) {
	m := New()
	st := status(api.StateBackingUp)
	st.BytesTotal, st.Progress = 100, 0.5
	acts := up(m, t0, st)
	if icon, _ := find[SetIcon](acts); icon.Icon != IconWorking || icon.Step != ProgressSteps/2 {
		t.Errorf("icon %+v", icon)
	}
	acts = m.Update(t0, changeOf(m, drivePath, map[string]any{api.PropProgress: 0.51}))
	if _, ok := find[SetIcon](acts); ok {
		t.Error("icon resent although its step did not change")
	}
	if _, ok := find[SetTooltip](acts); !ok {
		t.Error("tooltip not updated with the progress")
	}
	acts = m.Update(t0, changeOf(m, drivePath, map[string]any{api.PropProgress: 1.0}))
	if icon, _ := find[SetIcon](acts); icon.Step != ProgressSteps {
		t.Errorf("full progress icon %+v", icon)
	}
}

func TestSeveralDrives(t *testing.T) {
	m := New()
	a, b := status(api.StateBackingUp), status(api.StateAwaitingPassphrase)
	b.Name, b.LuksUUID = "Red stick", "5678"
	c := status(api.StateAwaitingPassphrase)
	c.Name, c.LuksUUID = "Green stick", "9abc"
	acts := up(m, t0, a, b, c)
	icon, tip, menu := m.View()
	if icon.Icon != IconAttention {
		t.Errorf("attention must win over working: %v", icon.Icon)
	}
	if strings.Count(tip, "\n") != 2 || !strings.Contains(tip, "Red stick") || !strings.Contains(tip, "Backing up to Blue stick") {
		t.Errorf("tooltip %q", tip)
	}
	// Each drive: status line, separator, the actions of its state, separator; then Set up,
	// About, Quit.
	want := 3
	for _, st := range []api.DriveStatus{a, b, c} {
		want += 3
		for _, on := range wantEnabled[st.State] {
			if on {
				want++
			}
		}
	}
	if len(menu) != want {
		t.Errorf("menu has %d items, want %d", len(menu), want)
	}
	dialogs := all[ShowDialog](acts)
	if len(dialogs) != 1 || len(all[Notify](acts)) != 2 {
		t.Fatalf("one dialog at a time, one notification each: %+v", acts)
	}
	first := dialogs[0].Drive
	// Cancelling the first dialog opens the other drive's.
	acts = m.Update(t0, DialogCancelled{Drive: first})
	next, ok := find[ShowDialog](acts)
	if !ok || next.Drive == first {
		t.Fatalf("next dialog not opened: %+v", acts)
	}
	acts = m.Update(t0, DialogCancelled{Drive: next.Drive})
	if _, ok := find[HideDialog](acts); !ok {
		t.Errorf("last dialog not hidden: %+v", acts)
	}
	// A cancelled dialog comes back from the menu.
	acts = m.Update(t0, MenuClicked{Key: MenuKey{first, ItemUnlock}})
	if d, ok := find[ShowDialog](acts); !ok || d.Drive != first {
		t.Errorf("Enter passphrase… did not reopen: %+v", acts)
	}
}

func TestPassphraseDialogFlow(t *testing.T) {
	m := New()
	acts := up(m, t0, status(api.StateAwaitingPassphrase))
	d, ok := find[ShowDialog](acts)
	if !ok {
		t.Fatal("no dialog")
	}
	joined := strings.Join(d.Details, "\n")
	for _, want := range []string{"plugvault", "SanDisk Ultra", "4C530001", "1234abcd"} {
		if !strings.Contains(joined, want) {
			t.Errorf("details %q lack %q", joined, want)
		}
	}
	if !strings.Contains(d.Heading, "Blue stick") || !strings.Contains(d.Title, "Blue stick") {
		t.Errorf("dialog does not name the drive: %+v", d)
	}
	acts = m.Update(t0, DialogSubmitted{Drive: drivePath})
	if d, _ := find[ShowDialog](acts); !d.Busy {
		t.Errorf("not busy while unlocking: %+v", d)
	}
	acts = m.Update(t0, UnlockDone{Drive: drivePath, Err: fmt.Errorf("cannot unlock: %w", api.ErrBadPassphrase)})
	if d, _ := find[ShowDialog](acts); d.Busy || !strings.Contains(d.Message, "Wrong passphrase") {
		t.Errorf("wrong passphrase not shown inline: %+v", d)
	}
	acts = m.Update(t0, DialogSubmitted{Drive: drivePath})
	acts = append(acts, m.Update(t0, UnlockDone{Drive: drivePath})...)
	if _, ok := find[HideDialog](acts); !ok {
		t.Errorf("dialog not hidden after unlock: %+v", acts)
	}
	// The state then moves on: no dialog comes back.
	acts = m.Update(t0, changeOf(m, drivePath, map[string]any{api.PropState: "mounting"}))
	if _, ok := find[ShowDialog](acts); ok {
		t.Error("dialog reopened")
	}
	// Other failures are shown inline too.
	m = New()
	up(m, t0, status(api.StateAwaitingPassphrase))
	m.Update(t0, DialogSubmitted{Drive: drivePath})
	acts = m.Update(t0, UnlockDone{Drive: drivePath, Err: errors.New("drive not present")})
	if d, _ := find[ShowDialog](acts); !strings.Contains(d.Message, "drive not present") {
		t.Errorf("error not shown: %+v", d)
	}
}

func TestCallResults(t *testing.T) {
	m := New()
	up(m, t0, status(api.StatePresent))
	acts := m.Update(t0, CallDone{Drive: drivePath, Method: api.MethodBrowse, Dir: "/run/plugvault/browse/x"})
	if o, ok := find[OpenFolder](acts); !ok || o.Path != "/run/plugvault/browse/x" {
		t.Errorf("browse did not open the folder: %+v", acts)
	}
	acts = m.Update(t0, CallDone{Drive: drivePath, Method: api.MethodBackupNow, Err: fmt.Errorf("a run is going on: %w", api.ErrBusy)})
	if n, ok := find[Notify](acts); !ok || !strings.Contains(n.Summary, "Cannot back up to Blue stick") || !strings.Contains(n.Body, "A run is going on") {
		t.Errorf("failure not notified: %+v", acts)
	}
	acts = m.Update(t0, CallDone{Drive: drivePath, Method: api.MethodEject, Err: api.ErrNotAuthorizedDismissed})
	if len(all[Notify](acts)) != 0 {
		t.Errorf("a dismissed authentication is the user's choice, not an error: %+v", acts)
	}
}

func TestReminders(t *testing.T) {
	st := status(api.StateAbsent)
	st.LastBackup = uint64(t0.Add(-6 * 24 * time.Hour).Unix())
	m := New()
	acts := up(m, t0, st)
	if len(all[Notify](acts)) != 0 {
		t.Fatalf("reminder before it is due: %+v", acts)
	}
	// The timer is the earlier of the label change (one day boundary) and the due time.
	timer, _ := find[SetTimer](acts)
	due := time.Unix(int64(st.LastBackup), 0).Add(7 * 24 * time.Hour)
	if timer.At.IsZero() || timer.At.After(due) {
		t.Fatalf("timer %v, reminder due %v", timer.At, due)
	}
	acts = m.Update(due, TimerFired{})
	n := all[Notify](acts)
	if len(n) != 1 || n[0].Summary != "No backup to Blue stick for 7 days" {
		t.Fatalf("reminder %+v", n)
	}
	if acts := m.Update(due.Add(time.Hour), TimerFired{}); len(all[Notify](acts)) != 0 {
		t.Errorf("reminder repeated: %+v", acts)
	}
	// A new backup re-arms it; lowering ReminderDays makes it due at once.
	newLast := uint64(due.Add(-3 * 24 * time.Hour).Unix())
	m.Update(due, changeOf(m, drivePath, map[string]any{api.PropLastBackup: newLast}))
	acts = m.Update(due, ManagerChanged{ReminderDays: 2})
	if n := all[Notify](acts); len(n) != 1 || n[0].Summary != "No backup to Blue stick for 3 days" {
		t.Errorf("reminder after ReminderDays changed: %+v", n)
	}
	// 0 turns reminders off; a running drive is never reminded.
	m = New()
	m.Update(t0, ServiceUp{ReminderDays: 0, Drives: []api.DriveEntry{{Path: drivePath, Status: st}}})
	if acts := m.Update(t0.Add(30*24*time.Hour), TimerFired{}); len(all[Notify](acts)) != 0 {
		t.Errorf("reminder with ReminderDays 0: %+v", acts)
	}
	run := status(api.StateBackingUp)
	run.LastBackup = st.LastBackup
	m = New()
	if acts := up(m, t0.Add(30*24*time.Hour), run); len(all[Notify](acts)) != 0 {
		t.Errorf("reminder during a backup: %+v", acts)
	}
}

func TestLabelsFollowTheClock(t *testing.T) {
	m := New()
	acts := up(m, t0, status(api.StateAbsent)) // last backup 2 hours ago
	timer, _ := find[SetTimer](acts)
	if want := t0.Add(time.Hour); !timer.At.Equal(want) {
		t.Fatalf("timer %v, want %v (when the label reads 3 hours)", timer.At, want)
	}
	acts = m.Update(timer.At, TimerFired{})
	if tip, _ := find[SetTooltip](acts); !strings.Contains(tip.Text, "3 hours ago") {
		t.Errorf("tooltip %q", tip.Text)
	}
}

func TestLogFollows(t *testing.T) {
	m := New()
	up(m, t0, status(api.StatePresent))
	m.Update(t0, MenuClicked{Key: MenuKey{drivePath, ItemShowLog}})
	acts := m.Update(t0, changeOf(m, drivePath, map[string]any{api.PropState: "failed", api.PropStateReason: "the drive is full"}))
	lg, ok := find[ShowLog](acts)
	if !ok || !strings.Contains(strings.Join(lg.Lines, "\n"), "failed: the drive is full") {
		t.Errorf("log not updated: %+v", lg)
	}
	m.Update(t0, LogClosed{})
	acts = m.Update(t0, changeOf(m, drivePath, map[string]any{api.PropState: "present"}))
	if _, ok := find[ShowLog](acts); ok {
		t.Error("closed log window updated")
	}
}

func TestFirstUpdateSendsEverything(t *testing.T) {
	m := New()
	acts := m.Update(t0, ServiceDown{})
	if _, ok := find[SetIcon](acts); !ok {
		t.Error("no icon")
	}
	if _, ok := find[SetMenu](acts); !ok {
		t.Error("no menu")
	}
	if icon, _ := find[SetIcon](acts); icon.Icon != IconOffline {
		t.Errorf("starts with %v", icon.Icon)
	}
	if acts := m.Update(t0, ServiceDown{}); len(acts) != 0 {
		t.Errorf("nothing changed but %+v", acts)
	}
}

// TestAbout: About names the product and the service's version, or says that it is not running.
func TestAbout(t *testing.T) {
	m := New()
	m.Update(t0, ServiceDown{})
	a, ok := find[ShowAbout](m.Update(t0, MenuClicked{Key: MenuKey{Kind: ItemAbout}}))
	if !ok || a.Title != "About "+AppName || !strings.Contains(strings.Join(a.Lines, "\n"), "not running") {
		t.Errorf("About while the service is down: %+v (shown %v)", a, ok)
	}
	m.Update(t0, ServiceUp{Version: "1.2.3"})
	a, ok = find[ShowAbout](m.Update(t0, MenuClicked{Key: MenuKey{Kind: ItemAbout}}))
	if !ok || !strings.Contains(strings.Join(a.Lines, "\n"), "plugvaultd 1.2.3") {
		t.Errorf("About: %+v (shown %v)", a, ok)
	}
}

// TestRestoreCheck: a drive with backups that is plugged in and idle starts its monthly clock
// the first time; a month later the user is asked to check a restore, once, and the time is
// saved. Nothing is asked before the saved times are loaded, or for a drive that is busy.
func TestRestoreCheck(t *testing.T) {
	m := New()
	st := status(api.StateSafeToRemove)
	if acts := up(m, t0, st); len(all[PromptRestoreCheck](acts))+len(all[SaveRestoreChecks](acts)) != 0 {
		t.Fatalf("prompted before the saved times were loaded: %+v", acts)
	}
	acts := m.Update(t0, RestoreChecksLoaded{})
	saves := all[SaveRestoreChecks](acts)
	if len(all[PromptRestoreCheck](acts)) != 0 || len(saves) != 1 || !saves[0].Checked[st.LuksUUID].Equal(t0) {
		t.Fatalf("first sight: %+v; want the clock started and saved, no prompt", acts)
	}
	later := t0.Add(RestoreCheckEvery - time.Minute)
	if acts := m.Update(later, TimerFired{}); len(all[PromptRestoreCheck](acts)) != 0 {
		t.Errorf("prompted before a month: %+v", acts)
	}
	if m.view().timer.After(t0.Add(RestoreCheckEvery)) {
		t.Errorf("the timer %v is after the check falls due", m.view().timer)
	}
	due := t0.Add(RestoreCheckEvery)
	acts = m.Update(due, TimerFired{})
	prompts := all[PromptRestoreCheck](acts)
	if len(prompts) != 1 || prompts[0].Drive != drivePath || !strings.Contains(prompts[0].Text, "Blue stick") {
		t.Fatalf("a month later: %+v", acts)
	}
	if saves := all[SaveRestoreChecks](acts); len(saves) != 1 || !saves[0].Checked[st.LuksUUID].Equal(due) {
		t.Errorf("the prompt's time is not saved: %+v", acts)
	}
	if acts := m.Update(due.Add(time.Hour), TimerFired{}); len(all[PromptRestoreCheck](acts)) != 0 {
		t.Errorf("asked twice: %+v", acts)
	}
	// Busy or unplugged: not asked, even when due.
	for _, s := range []api.State{api.StateBackingUp, api.StateAbsent} {
		m := New()
		up(m, t0, status(s))
		acts := m.Update(t0.Add(2*RestoreCheckEvery), RestoreChecksLoaded{Checked: map[string]time.Time{st.LuksUUID: t0}})
		if len(all[PromptRestoreCheck](acts)) != 0 {
			t.Errorf("%s: prompted: %+v", s, acts)
		}
	}
	// The prompt's button is the drive's Restore item.
	m = New()
	up(m, t0, st)
	if _, ok := find[OpenRestore](m.Update(t0, MenuClicked{Key: MenuKey{drivePath, ItemRestore}})); !ok {
		t.Error("the Restore item does not open the Restore window")
	}
}

func TestSetupItemAndPassphraseHint(t *testing.T) {
	m := New()
	up(m, t0)
	if a, ok := find[OpenSetup](m.Update(t0, MenuClicked{Key: MenuKey{Kind: ItemSetup}})); !ok || !strings.Contains(a.Title, "Set up") {
		t.Errorf("Set up a new drive: %+v (%v)", a, ok)
	}
	for p, wantOK := range map[string]bool{"": false, "short": false, "abcdefgh": true, "correct horse battery staple": true} {
		hint, ok := PassphraseHint(p)
		if ok != wantOK || (p != "" && hint == "") {
			t.Errorf("PassphraseHint(%q) = %q, %v", p, hint, ok)
		}
	}
	if h, _ := PassphraseHint("correct horse battery staple"); h != "Strong" {
		t.Errorf("four words: %q", h)
	}
}

// TestFailureNoticeFitsTheReason: a stick refused while unlocking (here an impostor) is told
// with the daemon's reason alone, and so is a drive a program keeps from being locked; only a
// failure while backing up suggests backing up again. The step comes from FailedIn; a service
// that does not send it is judged by the state the drive left.
func TestFailureNoticeFitsTheReason(t *testing.T) {
	const impostor = "This stick claims to be Blue stick but is not: its encryption header is not the drive's; it was left alone"
	const inUse = "The drive is still in use and could not be locked — close the programs using it, then eject it"
	for _, tc := range []struct {
		from    api.State
		in      api.State // FailedIn ("": not sent)
		reason  string
		summary string
		advice  bool
	}{
		{api.StateUnlocking, "", impostor, "Cannot unlock Blue stick", false},
		{api.StateLocking, api.StateUnlocking, impostor, "Cannot unlock Blue stick", false},
		{api.StateAwaitingPassphrase, "", "Blue stick's identity has not been recorded yet", "Cannot unlock Blue stick", false},
		{api.StateLocking, api.StateBackingUp, "The backup failed: the drive is full", "Backup to Blue stick failed", true},
		{api.StateLocking, api.StateMounting, "The drive's filesystem cannot be recognised", "Backup to Blue stick failed", true},
		{api.StateBackingUp, "", "The backup failed: the drive is full", "Backup to Blue stick failed", true},
		{api.StateLocking, api.StateLocking, inUse, "Cannot close Blue stick", false},
		{api.StateUnmounting, api.StateUnmounting, inUse, "Cannot close Blue stick", false},
		{api.StateLocking, "", "The backup failed: the drive is full", "Backup to Blue stick failed", true},
	} {
		m := New()
		up(m, t0, status(tc.from))
		acts := m.Update(t0, changeOf(m, drivePath, map[string]any{api.PropState: "failed", api.PropStateReason: tc.reason,
			api.PropFailedIn: string(tc.in)}))
		notes := all[Notify](acts)
		if len(notes) != 1 {
			t.Fatalf("from %s: notifications %+v", tc.from, notes)
		}
		n := notes[0]
		if n.Summary != tc.summary || !strings.HasPrefix(n.Body, tc.reason+".") || n.Tag != string(drivePath) || !n.Urgent {
			t.Errorf("from %s: %+v; want summary %q and the reason first", tc.from, n, tc.summary)
		}
		if got := strings.Contains(n.Body, "Back up now"); got != tc.advice {
			t.Errorf("from %s: body %q; advice to back up again %v, want %v", tc.from, n.Body, got, tc.advice)
		}
	}
}
