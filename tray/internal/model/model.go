package model

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
)

// maxLogLines bounds each drive's event log.
const maxLogLines = 200

// Model is the tray's state. The zero value is not usable: call New.
type Model struct {
	now          time.Time
	up           bool
	reminderDays uint32
	version      string // plugvaultd's, "" while it is not running
	drives       map[dbus.ObjectPath]*drive

	dialog        dbus.ObjectPath // drive whose passphrase dialog is open, or ""
	dialogMessage string
	dialogBusy    bool
	dialogCheck   bool            // the dialog checks the passphrase (CheckPassphrase) instead of unlocking
	dialogDone    bool            // check mode: the right passphrase was typed
	dialogWrong   bool            // check mode: a wrong passphrase was typed
	logOpen       dbus.ObjectPath // drive whose log window is open, or ""

	// restoreChecked: when each drive (by LUKS UUID) was last prompted for a restore check;
	// nil until RestoreChecksLoaded.
	restoreChecked map[string]time.Time
	// passDue: when each drive's (by LUKS UUID) passphrase check falls due; nil until
	// PassChecksLoaded.
	passDue map[string]time.Time

	shown   view // what the tray shows now, to send only changes
	started bool
}

type drive struct {
	st        api.DriveStatus
	dismissed bool   // the user cancelled the passphrase dialog while this awaiting period lasts
	reminded  uint64 // LastBackup value a reminder was sent for (0 = none)
	log       []string
}

type view struct {
	icon    SetIcon
	tooltip string
	menu    []MenuItem
	timer   time.Time
}

// New returns a model that starts with the service not running (until ServiceUp).
func New() *Model {
	return &Model{drives: map[dbus.ObjectPath]*drive{}}
}

// Update applies ev at time now and returns the actions to take, in order. The first call
// always returns SetIcon, SetTooltip and SetMenu; later calls return them only when they change.
func (m *Model) Update(now time.Time, ev Event) []Action {
	m.now = now
	var acts []Action
	switch ev := ev.(type) {
	case ServiceUp:
		acts = m.serviceUp(ev)
	case ServiceDown:
		acts = m.serviceDown()
	case DriveChanged:
		acts = m.driveChanged(ev)
	case DriveAdded:
		if m.up {
			if _, ok := m.drives[ev.Path]; !ok {
				m.drives[ev.Path] = &drive{st: ev.Status}
				acts = m.enter(ev.Path, "", ev.Status.State)
			}
		}
	case DriveRemoved:
		acts = m.removeDrive(ev.Path)
	case ManagerChanged:
		m.reminderDays = ev.ReminderDays
	case TimerFired:
		// Relative times and due reminders are recomputed below.
	case MenuClicked:
		acts = m.clicked(ev.Key)
	case DialogSubmitted:
		if ev.Drive == m.dialog && !m.dialogBusy && !m.dialogDone {
			m.dialogBusy = true
			m.dialogMessage = "Unlocking…"
			if m.dialogCheck {
				m.dialogMessage = "Checking…"
			}
			acts = append(acts, m.showDialog())
		}
	case DialogCancelled:
		switch {
		case ev.Drive == m.dialog && m.dialogCheck:
			if !m.dialogDone {
				acts = append(acts, m.postponePassCheck(ev.Drive)...)
			}
			acts = append(acts, m.closeDialog()...)
		case ev.Drive == m.dialog:
			m.drives[ev.Drive].dismissed = true
			acts = append(acts, m.closeDialog()...)
		case m.drives[ev.Drive] != nil:
			m.drives[ev.Drive].dismissed = true
		}
	case UnlockDone:
		acts = m.unlockDone(ev)
	case CallDone:
		acts = m.callDone(ev)
	case LogClosed:
		m.logOpen = ""
	case PassChecksLoaded:
		m.passDue = copyTimes(ev.Due)
	case PassCheckAccepted:
		acts = m.passCheckAccepted(ev.Drive)
	case PassCheckLater:
		acts = m.postponePassCheck(ev.Drive)
	case PassCheckDone:
		acts = m.passCheckDone(ev)
	case RestoreChecksLoaded:
		m.restoreChecked = copyTimes(ev.Checked)
	}
	acts = append(acts, m.reminders()...)
	acts = append(acts, m.restoreChecks()...)
	acts = append(acts, m.passChecks()...)
	return append(acts, m.refresh()...)
}

func (m *Model) serviceUp(ev ServiceUp) []Action {
	old := m.drives
	m.up = true
	m.reminderDays, m.version = ev.ReminderDays, ev.Version
	m.drives = map[dbus.ObjectPath]*drive{}
	var acts []Action
	for _, s := range ev.Drives {
		d := &drive{st: s.Status}
		if o := old[s.Path]; o != nil {
			d.reminded, d.log = o.reminded, o.log
			d.dismissed = o.dismissed && o.st.State == api.StateAwaitingPassphrase && s.Status.State == api.StateAwaitingPassphrase
		}
		m.drives[s.Path] = d
		m.logf(s.Path, "service running: %s", StatusLine(m.now, s.Status))
	}
	for _, p := range m.paths() {
		acts = append(acts, m.enter(p, "", m.drives[p].st.State)...)
	}
	if m.dialog != "" && m.drives[m.dialog] == nil {
		acts = append(acts, m.closeDialog()...)
	}
	return acts
}

func (m *Model) serviceDown() []Action {
	if !m.up {
		return nil
	}
	m.up = false
	for p := range m.drives {
		m.logf(p, "service stopped")
	}
	var acts []Action
	if m.dialog != "" {
		m.setDialog("", false)
		acts = append(acts, HideDialog{})
	}
	return acts
}

func (m *Model) driveChanged(ev DriveChanged) []Action {
	d := m.drives[ev.Path]
	if !m.up || d == nil {
		return nil
	}
	old := d.st
	d.st = ev.Status
	if old.State == d.st.State {
		if d.st.State == api.StateFailed && old.StateReason != d.st.StateReason {
			m.logf(ev.Path, "failed: %s", d.st.StateReason)
		}
		if ev.Path == m.dialog {
			return []Action{m.showDialog()} // the drive's details may have changed
		}
		return nil
	}
	return m.enter(ev.Path, old.State, d.st.State)
}

// enter handles a drive's transition from old ("" = unknown, after ServiceUp or DriveAdded)
// to its current state: notifications, the dialog and the log.
func (m *Model) enter(p dbus.ObjectPath, old, cur api.State) []Action {
	d := m.drives[p]
	st := d.st
	name := DriveName(st)
	var acts []Action
	if old != "" {
		line := string(cur)
		if st.StateReason != "" {
			line += ": " + st.StateReason
		}
		m.logf(p, "%s", line)
	}
	if cur != api.StateAwaitingPassphrase || m.dialogCheck {
		if cur != api.StateAwaitingPassphrase {
			d.dismissed = false
		}
		if m.dialog == p && (!m.dialogCheck || !passCheckable(st)) {
			acts = append(acts, m.closeDialog()...)
		}
	}
	tag := string(p)
	switch {
	case cur == api.StateAwaitingPassphrase && old != cur:
		body := "Enter the passphrase of " + name + " to unlock it."
		if st.StateReason != "" {
			body = st.StateReason + ". " + body
		}
		acts = append(acts, m.notify(p, Notify{Tag: tag, Summary: "Passphrase needed for " + name, Body: body, Urgent: true, IconName: IconAttention.Name()}))
		if m.dialog == "" {
			m.setDialog(p, false)
			acts = append(acts, m.showDialog())
		}
	case old == "":
		// State read afresh: nothing started or ended in front of us.
	case cur == api.StateBackingUp:
		acts = append(acts, m.notify(p, Notify{Tag: tag, Summary: "Backing up to " + name,
			Body: "Leave the drive plugged in until plugvault says it is safe to remove.", IconName: IconWorking.Name()}))
	case cur == api.StateSafeToRemove && old.Running():
		n := Notify{Tag: tag, Summary: "Backup complete: safe to remove " + name, IconName: IconSafe.Name()}
		switch st.LastResult {
		case api.ResultSuccess:
			n.Body = fmt.Sprintf("The backup to %s is complete. You can unplug it now.", name)
		case api.ResultCancelled:
			n.Summary = "Backup cancelled: safe to remove " + name
			n.Body = "The backup was stopped; the next backup to this drive resumes it. You can unplug it now."
		case api.ResultFailed:
			n.Summary = "Backup failed: safe to remove " + name
			n.Body = "The drive is locked. You can unplug it now."
			if st.StateReason != "" {
				n.Body = st.StateReason + ". " + n.Body
			}
		default:
			n.Summary = "Safe to remove " + name
			n.Body = "The drive is locked. You can unplug it now."
		}
		acts = append(acts, m.notify(p, n))
	case cur == api.StateFailed:
		in := st.FailedIn
		switch {
		case in != "":
		case old == api.StateUnlocking || old == api.StateAwaitingPassphrase:
			in = old
		default:
			// A service that does not send FailedIn tears every later failure down through
			// locking: the state the drive left says no more than "after unlocking".
			in = api.StateBackingUp
		}
		n := failedNotice(name, in, st.StateReason)
		n.Tag = tag
		acts = append(acts, m.notify(p, n))
	case cur == api.StateAbsent && pulledTooEarly(old):
		acts = append(acts, m.notify(p, Notify{Tag: tag, Summary: name + " was removed too early",
			Body:   "The backup was interrupted; plug the drive in again to resume it. Next time wait until plugvault says it is safe to remove.",
			Urgent: true, IconName: IconAttention.Name()}))
	}
	if m.dialog == "" {
		acts = append(acts, m.nextDialog()...)
	}
	return acts
}

// failedNotice is the notification of a drive that failed in step in (the Drive's FailedIn).
// A stick that failed while unlocking was never opened: the reason says what the stick is (not
// the drive, an unreadable header, an unrecorded identity) and what to do, so nothing is added
// to it; backing up again would meet the same stick. A drive that could not be unmounted or
// locked is held by a program: the reason says to close it and eject, and the backup itself
// may have completed, so it is not called a failed backup. Any other failure happened while
// backing up, and the reason is followed by the way to try again.
func failedNotice(name string, in api.State, reason string) Notify {
	n := Notify{Summary: "Backup to " + name + " failed", Urgent: true, IconName: IconAttention.Name()}
	if reason == "" {
		reason = "The service gave no reason; see Show log"
	}
	switch in {
	case api.StateUnlocking, api.StateAwaitingPassphrase:
		n.Summary = "Cannot unlock " + name
		n.Body = reason + "."
	case api.StateUnmounting, api.StateLocking:
		n.Summary = "Cannot close " + name
		n.Body = reason + "."
	default:
		n.Body = reason + ". Fix the problem, then choose Back up now or plug the drive in again."
	}
	return n
}

// pulledTooEarly reports whether pulling the stick in state s interrupted writing: before
// mounting nothing was written, after locking everything is safe.
func pulledTooEarly(s api.State) bool {
	switch s {
	case api.StateMounting, api.StateBackingUp, api.StateFinishing, api.StateUnmounting, api.StateLocking:
		return true
	}
	return false
}

func (m *Model) removeDrive(p dbus.ObjectPath) []Action {
	if m.drives[p] == nil {
		return nil
	}
	delete(m.drives, p)
	var acts []Action
	if m.dialog == p {
		acts = append(acts, m.closeDialog()...)
	}
	if m.logOpen == p {
		m.logOpen = ""
	}
	return acts
}

func (m *Model) notify(p dbus.ObjectPath, n Notify) Notify {
	m.logf(p, "notified: %s", n.Summary)
	return n
}

func (m *Model) logf(p dbus.ObjectPath, format string, args ...any) {
	d := m.drives[p]
	if d == nil {
		return
	}
	d.log = append(d.log, m.now.Format("2006-01-02 15:04:05")+"  "+fmt.Sprintf(format, args...))
	if len(d.log) > maxLogLines {
		d.log = append([]string(nil), d.log[len(d.log)-maxLogLines:]...)
	}
}

// showDialog describes the dialog for the current m.dialog.
func (m *Model) showDialog() ShowDialog {
	st := m.drives[m.dialog].st
	name := DriveName(st)
	var details []string
	if st.Label != "" {
		details = append(details, "Label: "+st.Label)
	}
	if vm := strings.TrimSpace(st.Vendor + " " + st.Model); vm != "" {
		details = append(details, "Model: "+vm)
	}
	if st.Serial != "" {
		details = append(details, "Serial: "+st.Serial)
	}
	if u := ShortUUID(st.LuksUUID); u != "" {
		details = append(details, "UUID: "+u+"…")
	}
	if m.dialogCheck {
		d := ShowDialog{Drive: m.dialog, Title: "Check the passphrase of " + name + " - " + AppName,
			Heading: "Do you still know the passphrase of " + name + "?",
			Details: append(details, "This only checks the passphrase: nothing is unlocked or mounted."),
			Message: m.dialogMessage, Busy: m.dialogBusy, Check: true, Done: m.dialogDone,
			Submit: "Check", Dismiss: "Cancel"}
		switch {
		case m.dialogDone:
			d.Dismiss = "Close"
		case m.dialogWrong:
			d.Dismiss = "Give up"
		}
		return d
	}
	heading := name + " needs its passphrase"
	if st.StateReason != "" {
		heading += " (" + st.StateReason + ")"
	}
	return ShowDialog{Drive: m.dialog, Title: "Unlock " + name + " - plugvault", Heading: heading,
		Details: details, Message: m.dialogMessage, Busy: m.dialogBusy, Submit: "Unlock", Dismiss: "Cancel"}
}

// setDialog points the dialog at p ("" = closed) in unlock or check mode, afresh.
func (m *Model) setDialog(p dbus.ObjectPath, check bool) {
	m.dialog, m.dialogCheck = p, check
	m.dialogMessage, m.dialogBusy, m.dialogDone, m.dialogWrong = "", false, false, false
}

// closeDialog hides the dialog and opens the next one that waits, if any.
func (m *Model) closeDialog() []Action {
	m.setDialog("", false)
	if next := m.nextDialog(); len(next) > 0 {
		return next
	}
	return []Action{HideDialog{}}
}

func (m *Model) nextDialog() []Action {
	if !m.up {
		return nil
	}
	for _, p := range m.paths() {
		if d := m.drives[p]; d.st.State == api.StateAwaitingPassphrase && !d.dismissed {
			m.setDialog(p, false)
			return []Action{m.showDialog()}
		}
	}
	return nil
}

func (m *Model) unlockDone(ev UnlockDone) []Action {
	if ev.Drive != m.dialog || m.dialogCheck {
		if ev.Err == nil {
			m.logf(ev.Drive, "unlocked with the passphrase")
		}
		return nil // the state moved on first and closed the dialog
	}
	m.dialogBusy = false
	switch {
	case ev.Err == nil:
		m.logf(ev.Drive, "unlocked with the passphrase")
		// Until the state moves on, the drive still reads awaiting-passphrase: do not ask again.
		m.drives[ev.Drive].dismissed = true
		return m.closeDialog()
	case errors.Is(ev.Err, api.ErrBadPassphrase):
		m.logf(ev.Drive, "wrong passphrase")
		m.dialogMessage = "Wrong passphrase, try again"
	case errors.Is(ev.Err, api.ErrNotAuthorizedDismissed):
		m.dialogMessage = "Authentication was dismissed; press Unlock to try again"
	case errors.Is(ev.Err, api.ErrNotAuthorized), errors.Is(ev.Err, api.ErrNotAuthorizedCanObtain):
		m.logf(ev.Drive, "cannot unlock: %v", ev.Err)
		m.dialogMessage = "You are not allowed to unlock this drive"
	default:
		m.logf(ev.Drive, "cannot unlock: %v", ev.Err)
		m.dialogMessage = "Cannot unlock: " + ev.Err.Error()
	}
	return []Action{m.showDialog()}
}

var verbs = map[string]string{
	api.MethodBackupNow: "back up to",
	api.MethodCancel:    "cancel the backup to",
	api.MethodEject:     "eject",
	api.MethodBrowse:    "browse the backups on",
}

func (m *Model) callDone(ev CallDone) []Action {
	d := m.drives[ev.Drive]
	name := "the drive"
	if d != nil {
		name = DriveName(d.st)
	}
	if ev.Err != nil {
		if errors.Is(ev.Err, api.ErrNotAuthorizedDismissed) {
			m.logf(ev.Drive, "%s: authentication dismissed", ev.Method)
			return nil
		}
		verb := verbs[ev.Method]
		if verb == "" {
			verb = ev.Method
		}
		hint := ""
		switch {
		case errors.Is(ev.Err, api.ErrNotAuthorized), errors.Is(ev.Err, api.ErrNotAuthorizedCanObtain):
			hint = " Ask your administrator for permission."
		case errors.Is(ev.Err, api.ErrNotPresent):
			hint = " Plug the drive in and try again."
		case errors.Is(ev.Err, api.ErrBusy):
			hint = " Wait until the drive is idle and try again."
		}
		return []Action{m.notify(ev.Drive, Notify{Tag: string(ev.Drive), Summary: fmt.Sprintf("Cannot %s %s", verb, name),
			Body: capitalize(ev.Err.Error()) + "." + hint, Urgent: true, IconName: IconAttention.Name()})}
	}
	if ev.Method == api.MethodBrowse && ev.Dir != "" {
		m.logf(ev.Drive, "backups opened read-only at %s", ev.Dir)
		return []Action{OpenFolder{Path: ev.Dir}}
	}
	return nil
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func (m *Model) clicked(k MenuKey) []Action {
	var item *MenuItem
	for i := range m.shown.menu {
		if m.shown.menu[i].Key == k {
			item = &m.shown.menu[i]
		}
	}
	if item == nil || !item.Enabled {
		return nil // stale or disabled: the host should not have sent it
	}
	switch k.Kind {
	case ItemQuit:
		return []Action{Quit{}}
	case ItemAbout:
		return []Action{m.about()}
	case ItemSetup:
		return []Action{OpenSetup{Title: "Set up a new backup drive - " + AppName}}
	case ItemBackupNow:
		return []Action{Call{Drive: k.Drive, Method: api.MethodBackupNow}}
	case ItemCancel:
		return []Action{Call{Drive: k.Drive, Method: api.MethodCancel}}
	case ItemEject:
		return []Action{Call{Drive: k.Drive, Method: api.MethodEject}}
	case ItemBrowse:
		return []Action{Call{Drive: k.Drive, Method: api.MethodBrowse}}
	case ItemRestore:
		return []Action{m.openRestore(k.Drive)}
	case ItemUnlock:
		d := m.drives[k.Drive]
		d.dismissed = false
		m.setDialog(k.Drive, false)
		return []Action{m.showDialog()}
	case ItemShowLog:
		m.logOpen = k.Drive
		return []Action{m.showLog()}
	}
	return nil
}

func (m *Model) openRestore(p dbus.ObjectPath) OpenRestore {
	name := DriveName(m.drives[p].st)
	m.logf(p, "restore window opened")
	return OpenRestore{Drive: p, Title: "Restore from " + name + " - " + AppName, Name: name}
}

// AppName is the product's name as the desktop shows it (the SNI Title, window titles, the
// application entry's Name).
const AppName = "Plugvault"

func (m *Model) about() ShowAbout {
	service := "The backup service (plugvaultd) is not running."
	if m.up {
		service = "Backup service: plugvaultd " + m.version
	}
	return ShowAbout{Title: "About " + AppName, Lines: []string{
		AppName + ": backups to your own encrypted USB drives",
		"Plug in your drive: it is unlocked, backed up, locked and safe to remove.",
		service,
		"Licensed under the terms in /usr/share/doc/plugvault.",
	}}
}

func (m *Model) showLog() ShowLog {
	d := m.drives[m.logOpen]
	lines := append([]string(nil), d.log...)
	return ShowLog{Drive: m.logOpen, Title: "plugvault log: " + DriveName(d.st), Lines: lines}
}

// reminders sends the reminders that are due.
func (m *Model) reminders() []Action {
	if !m.up || m.reminderDays == 0 {
		return nil
	}
	var acts []Action
	for _, p := range m.paths() {
		d := m.drives[p]
		due, ok := m.reminderDue(d)
		if !ok || m.now.Before(due) {
			continue
		}
		d.reminded = d.st.LastBackup
		days := int64(m.now.Sub(time.Unix(int64(d.st.LastBackup), 0)) / (24 * time.Hour))
		name := DriveName(d.st)
		acts = append(acts, m.notify(p, Notify{Tag: string(p), Summary: fmt.Sprintf("No backup to %s for %s", name, plural(days, "day")),
			Body: "Plug " + name + " in to back up.", IconName: IconAttention.Name()}))
	}
	return acts
}

// RestoreCheckEvery is how often the user is asked to check that a restore works, as backup
// guides advise: a backup that was never restored from is a hope, not a backup.
const RestoreCheckEvery = 30 * 24 * time.Hour

// restoreChecks prompts for the restore checks that are due. A drive is asked about when it is
// plugged in, idle and has backups; the first time the tray sees such a drive starts its clock.
func (m *Model) restoreChecks() []Action {
	if !m.up || m.restoreChecked == nil {
		return nil
	}
	var acts []Action
	changed := false
	for _, p := range m.paths() {
		st := m.drives[p].st
		if !restoreCheckable(st) {
			continue
		}
		last, seen := m.restoreChecked[st.LuksUUID]
		if seen && m.now.Sub(last) < RestoreCheckEvery {
			continue
		}
		m.restoreChecked[st.LuksUUID], changed = m.now, true
		if !seen {
			continue
		}
		name := DriveName(st)
		m.logf(p, "asked to check a restore")
		acts = append(acts, PromptRestoreCheck{Drive: p, Title: "Check your backups on " + name + " - " + AppName,
			Text: "It has been a month: check that you can get a file back from " + name +
				". Open the Restore window, pick a file you know and restore it to another folder."})
	}
	if changed {
		acts = append(acts, SaveRestoreChecks{Checked: copyTimes(m.restoreChecked)})
	}
	return acts
}

// restoreCheckable: plugged in, idle (the Restore window can open it) and with backups.
func restoreCheckable(st api.DriveStatus) bool {
	return st.Present && st.LastBackup != 0 && (st.State == api.StatePresent || st.State == api.StateSafeToRemove)
}

// reminderDue returns when d's reminder falls due (when it becomes overdue, api.OverdueAt), if
// one is pending: none was sent for this backup and no run is going on.
func (m *Model) reminderDue(d *drive) (time.Time, bool) {
	if d.reminded == d.st.LastBackup || d.st.State.Running() {
		return time.Time{}, false
	}
	return api.OverdueAt(d.st, m.reminderDays)
}

func (m *Model) paths() []dbus.ObjectPath {
	ps := make([]dbus.ObjectPath, 0, len(m.drives))
	for p := range m.drives {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	return ps
}

// refresh computes the view and returns the actions for whatever changed.
func (m *Model) refresh() []Action {
	v := m.view()
	var acts []Action
	if !m.started || v.icon != m.shown.icon {
		acts = append(acts, v.icon)
	}
	if !m.started || v.tooltip != m.shown.tooltip {
		acts = append(acts, SetTooltip{Text: v.tooltip})
	}
	if !m.started || !reflect.DeepEqual(v.menu, m.shown.menu) {
		acts = append(acts, SetMenu{Items: v.menu})
	}
	if !m.started || !v.timer.Equal(m.shown.timer) {
		acts = append(acts, SetTimer{At: v.timer})
	}
	if m.logOpen != "" && m.drives[m.logOpen] != nil {
		// The log window follows the drive's events while it is open.
		acts = append(acts, m.showLog())
	}
	m.shown, m.started = v, true
	return acts
}

// View returns what the tray shows now: icon, tooltip and menu (for tests and the first paint).
func (m *Model) View() (SetIcon, string, []MenuItem) {
	v := m.view()
	return v.icon, v.tooltip, v.menu
}

func (m *Model) view() view {
	var v view
	if !m.up {
		v.icon = SetIcon{Icon: IconOffline, Step: -1}
		v.tooltip = "plugvault: the backup service is not running"
		v.menu = append([]MenuItem{
			{Key: MenuKey{Kind: ItemService}, Label: "Backup service not running"},
			{Key: MenuKey{Kind: ItemSeparator}},
		}, appItems()...)
		return v
	}
	paths := m.paths()
	var lines []string
	working, attention, safe := false, false, false
	var progress float64
	var backingUp int
	for _, p := range paths {
		st := m.drives[p].st
		line := StatusLine(m.now, st)
		lines = append(lines, line)
		switch {
		case st.State == api.StateAwaitingPassphrase || st.State == api.StateFailed:
			attention = true
		case st.State.Running():
			working = true
			if st.State == api.StateBackingUp && st.BytesTotal > 0 {
				progress += st.Progress
				backingUp++
			}
		case st.State == api.StateSafeToRemove:
			safe = true
		}
		v.menu = append(v.menu, driveItems(p, st, line)...)
		if st.LastBackup != 0 {
			v.timer = earliest(v.timer, api.NextAgeChange(m.now, time.Unix(int64(st.LastBackup), 0)))
		}
		if due, ok := m.reminderDue(m.drives[p]); ok {
			v.timer = earliest(v.timer, due)
		}
		if last, ok := m.restoreChecked[st.LuksUUID]; ok && restoreCheckable(st) {
			v.timer = earliest(v.timer, last.Add(RestoreCheckEvery))
		}
		if due, ok := m.passDue[st.LuksUUID]; ok && passCheckable(st) {
			v.timer = earliest(v.timer, due)
		}
	}
	if len(paths) == 0 {
		v.menu = append(v.menu,
			MenuItem{Key: MenuKey{Kind: ItemService}, Label: "No backup drives set up yet"},
			MenuItem{Key: MenuKey{Kind: ItemSeparator}})
		lines = []string{"plugvault: no backup drives set up"}
	}
	v.menu = append(v.menu, MenuItem{Key: MenuKey{Kind: ItemSetup}, Label: "Set up a new drive…", Enabled: true})
	v.menu = append(v.menu, appItems()...)
	v.tooltip = strings.Join(lines, "\n")
	switch {
	case attention:
		v.icon = SetIcon{Icon: IconAttention, Step: -1}
	case working:
		v.icon = SetIcon{Icon: IconWorking, Step: -1}
		if backingUp > 0 {
			v.icon.Step = progressStep(progress / float64(backingUp))
		}
	case safe:
		v.icon = SetIcon{Icon: IconSafe, Step: -1}
	default:
		v.icon = SetIcon{Icon: IconIdle, Step: -1}
	}
	return v
}

// driveItems is a drive's section of the menu: its status line (informational), a separator,
// the actions that apply in its state, Show log and a separator. Actions that cannot apply are
// left out rather than greyed, as desktop menus do.
func driveItems(p dbus.ObjectPath, st api.DriveStatus, line string) []MenuItem {
	idle := st.Present && (st.State == api.StatePresent || st.State == api.StateSafeToRemove || st.State == api.StateFailed)
	items := []MenuItem{{Key: MenuKey{p, ItemStatus}, Label: line}, {Key: MenuKey{p, ItemHeadSeparator}}}
	for _, a := range []struct {
		kind  ItemKind
		label string
		ok    bool
	}{
		{ItemUnlock, "Enter passphrase…", st.State == api.StateAwaitingPassphrase},
		{ItemBackupNow, "Back up now", idle},
		{ItemCancel, "Cancel backup", cancellable(st.State)},
		{ItemEject, "Eject", st.Present && ejectable(st.State)},
		{ItemBrowse, "Browse backups", idle},
		{ItemRestore, "Restore files…", idle},
		{ItemShowLog, "Show log", true},
	} {
		if a.ok {
			items = append(items, MenuItem{Key: MenuKey{p, a.kind}, Label: a.label, Enabled: true})
		}
	}
	return append(items, MenuItem{Key: MenuKey{p, ItemSeparator}})
}

// appItems ends every menu.
func appItems() []MenuItem {
	return []MenuItem{
		{Key: MenuKey{Kind: ItemAbout}, Label: "About " + AppName, Enabled: true},
		{Key: MenuKey{Kind: ItemQuit}, Label: "Quit", Enabled: true},
	}
}

func progressStep(p float64) int {
	s := int(p * ProgressSteps)
	switch {
	case s < 0 || p != p:
		return 0
	case s > ProgressSteps:
		return ProgressSteps
	}
	return s
}

// cancellable: a run that has not started writing its snapshot's end can be stopped.
func cancellable(s api.State) bool {
	switch s {
	case api.StateUnlocking, api.StateAwaitingPassphrase, api.StateMounting, api.StateBackingUp:
		return true
	}
	return false
}

// ejectable: everything but a drive that is already on its way out (or gone).
func ejectable(s api.State) bool {
	switch s {
	case api.StateAbsent, api.StateUnmounting, api.StateLocking:
		return false
	}
	return true
}

// copyTimes returns a copy of times that is never nil.
func copyTimes(times map[string]time.Time) map[string]time.Time {
	out := make(map[string]time.Time, len(times))
	for k, v := range times {
		out[k] = v
	}
	return out
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}

// PassphraseHint rates a new drive's passphrase for the setup window: ok is false when it is
// too short to accept (under 8 characters); the hint says how strong it is in words.
func PassphraseHint(p string) (hint string, ok bool) {
	n := len([]rune(p))
	words := len(strings.Fields(p))
	switch {
	case n == 0:
		return "", false
	case n < 8:
		return "Too short: use at least 8 characters, better a few words", false
	case n >= 20 || words >= 4:
		return "Strong", true
	case n >= 12:
		return "Good; a few more words make it strong", true
	}
	return "Weak: several words are easier to remember and much harder to guess", true
}
