package model

import (
	"errors"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
)

// PassCheckEvery is how often the user is asked whether they still know a drive's passphrase:
// a passphrase that is typed only when the keyfile is lost is easily forgotten.
const PassCheckEvery = 90 * 24 * time.Hour

// PassCheckLaterBy is how long "Later" (or giving up) puts the question off.
const PassCheckLaterBy = 7 * 24 * time.Hour

// PassChecksLoaded carries when each drive's passphrase check (by LUKS UUID) falls due next, as
// the tray saved it; until it arrives no such prompt is made.
type PassChecksLoaded struct{ Due map[string]time.Time }

// PassCheckAccepted says the user chose to check Drive's passphrase now.
type PassCheckAccepted struct{ Drive dbus.ObjectPath }

// PassCheckLater says the user put Drive's passphrase check off.
type PassCheckLater struct{ Drive dbus.ObjectPath }

// PassCheckDone is the outcome of a CheckPassphrase call the dialog made in check mode.
type PassCheckDone struct {
	Drive dbus.ObjectPath
	Err   error
}

func (PassChecksLoaded) isEvent()  {}
func (PassCheckAccepted) isEvent() {}
func (PassCheckLater) isEvent()    {}
func (PassCheckDone) isEvent()     {}

// PromptPassCheck asks the user whether they still know Drive's passphrase; accepting posts
// PassCheckAccepted, putting it off PassCheckLater.
type PromptPassCheck struct {
	Drive dbus.ObjectPath
	Title string
	Text  string
}

// SavePassChecks asks the tray to keep when each drive's passphrase check falls due next.
type SavePassChecks struct{ Due map[string]time.Time }

func (PromptPassCheck) isAction() {}
func (SavePassChecks) isAction()  {}

// passCheckable: plugged in and idle, so that CheckPassphrase can read its header.
func passCheckable(st api.DriveStatus) bool {
	return st.Present && (st.State == api.StatePresent || st.State == api.StateSafeToRemove)
}

// passChecks prompts for the passphrase checks that are due. The first time the tray sees a
// drive plugged in and idle starts its clock; a prompt puts the next one off by PassCheckLaterBy,
// so that an unanswered prompt comes back a week later.
func (m *Model) passChecks() []Action {
	if !m.up || m.passDue == nil {
		return nil
	}
	var acts []Action
	changed := false
	for _, p := range m.paths() {
		st := m.drives[p].st
		if !passCheckable(st) {
			continue
		}
		due, seen := m.passDue[st.LuksUUID]
		if seen && m.now.Before(due) {
			continue
		}
		changed = true
		if !seen {
			m.passDue[st.LuksUUID] = m.now.Add(PassCheckEvery)
			continue
		}
		m.passDue[st.LuksUUID] = m.now.Add(PassCheckLaterBy)
		name := DriveName(st)
		m.logf(p, "asked whether the passphrase is still known")
		acts = append(acts, PromptPassCheck{Drive: p, Title: "Check your passphrase for " + name + " - " + AppName,
			Text: "Do you still know the passphrase of " + name + "? Type it to check it: nothing is unlocked. " +
				"If the keyfile on this computer is ever lost, the passphrase is the only way to your backups."})
	}
	if changed {
		acts = append(acts, m.savePassChecks())
	}
	return acts
}

func (m *Model) savePassChecks() SavePassChecks {
	return SavePassChecks{Due: copyTimes(m.passDue)}
}

// postponePassCheck puts p's check off by PassCheckLaterBy.
func (m *Model) postponePassCheck(p dbus.ObjectPath) []Action {
	d := m.drives[p]
	if d == nil || m.passDue == nil {
		return nil
	}
	m.passDue[d.st.LuksUUID] = m.now.Add(PassCheckLaterBy)
	return []Action{m.savePassChecks()}
}

// passCheckAccepted opens the passphrase dialog in check mode, unless the drive is no longer
// idle or the dialog serves another drive; the prompt then comes back a week later.
func (m *Model) passCheckAccepted(p dbus.ObjectPath) []Action {
	d := m.drives[p]
	if !m.up || d == nil || !passCheckable(d.st) || m.dialog != "" && (!m.dialogCheck || m.dialogBusy) {
		return nil
	}
	m.dialog, m.dialogCheck, m.dialogMessage, m.dialogBusy, m.dialogDone, m.dialogWrong = p, true, "", false, false, false
	return []Action{m.showDialog()}
}

// passCheckDone shows the outcome of a check in the dialog; the right passphrase starts the
// drive's clock afresh.
func (m *Model) passCheckDone(ev PassCheckDone) []Action {
	if ev.Drive != m.dialog || !m.dialogCheck {
		return nil
	}
	m.dialogBusy = false
	name := DriveName(m.drives[ev.Drive].st)
	switch {
	case ev.Err == nil:
		m.logf(ev.Drive, "the passphrase was checked: right")
		m.dialogDone, m.dialogWrong = true, false
		m.dialogMessage = "That is the right passphrase of " + name + ". Nothing was unlocked."
		var acts []Action
		if m.passDue != nil {
			m.passDue[m.drives[ev.Drive].st.LuksUUID] = m.now.Add(PassCheckEvery)
			acts = append(acts, m.savePassChecks())
		}
		return append(acts, m.showDialog())
	case errors.Is(ev.Err, api.ErrBadPassphrase):
		m.logf(ev.Drive, "the passphrase was checked: wrong")
		m.dialogWrong = true
		m.dialogMessage = "That is not the passphrase of " + name + ". Try again, or give up: you can still use the " +
			"keyfile on this computer; if you have forgotten the passphrase, set a new one while the keyfile still works."
	case errors.Is(ev.Err, api.ErrNotAuthorizedDismissed):
		m.dialogMessage = "Authentication was dismissed; press Check to try again"
	case errors.Is(ev.Err, api.ErrNotAuthorized), errors.Is(ev.Err, api.ErrNotAuthorizedCanObtain):
		m.logf(ev.Drive, "cannot check the passphrase: %v", ev.Err)
		m.dialogMessage = "You are not allowed to check this drive's passphrase"
	default:
		m.logf(ev.Drive, "cannot check the passphrase: %v", ev.Err)
		m.dialogMessage = "Cannot check the passphrase: " + ev.Err.Error()
	}
	return []Action{m.showDialog()}
}
