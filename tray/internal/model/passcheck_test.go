package model

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/plugvault/plugvault/service/api"
)

// TestPassCheckClock: a drive plugged in and idle starts its 90-day clock the first time; when
// it falls due the user is asked once, the next question is put off a week and saved, and the
// timer wakes the tray at the due time. Nothing is asked before the saved times are loaded.
func TestPassCheckClock(t *testing.T) {
	m := New()
	st := status(api.StatePresent)
	if acts := up(m, t0, st); len(all[PromptPassCheck](acts))+len(all[SavePassChecks](acts)) != 0 {
		t.Fatalf("prompted before the saved times were loaded: %+v", acts)
	}
	acts := m.Update(t0, PassChecksLoaded{})
	saves := all[SavePassChecks](acts)
	due := t0.Add(PassCheckEvery)
	if len(all[PromptPassCheck](acts)) != 0 || len(saves) != 1 || !saves[0].Due[st.LuksUUID].Equal(due) {
		t.Fatalf("first sight: %+v; want the clock started and saved, no prompt", acts)
	}
	if acts := m.Update(due.Add(-time.Minute), TimerFired{}); len(all[PromptPassCheck](acts)) != 0 {
		t.Errorf("prompted before 90 days: %+v", acts)
	}
	if m.view().timer.After(due) {
		t.Errorf("the timer %v is after the check falls due %v", m.view().timer, due)
	}
	acts = m.Update(due, TimerFired{})
	prompts := all[PromptPassCheck](acts)
	if len(prompts) != 1 || prompts[0].Drive != drivePath || !strings.Contains(prompts[0].Text, "Do you still know the passphrase of Blue stick?") {
		t.Fatalf("when due: %+v", acts)
	}
	if saves := all[SavePassChecks](acts); len(saves) != 1 || !saves[0].Due[st.LuksUUID].Equal(due.Add(PassCheckLaterBy)) {
		t.Errorf("an unanswered prompt does not come back a week later: %+v", acts)
	}
	if acts := m.Update(due.Add(time.Hour), TimerFired{}); len(all[PromptPassCheck](acts)) != 0 {
		t.Errorf("asked twice: %+v", acts)
	}
	if acts := m.Update(due.Add(PassCheckLaterBy), TimerFired{}); len(all[PromptPassCheck](acts)) != 1 {
		t.Errorf("not asked again a week later: %+v", acts)
	}
}

// TestPassCheckEveryState: a due check is asked only of a drive that is plugged in and idle,
// and accepting opens the dialog in check mode only then.
func TestPassCheckEveryState(t *testing.T) {
	for s := range wantEnabled {
		st := status(s)
		want := s == api.StatePresent || s == api.StateSafeToRemove
		m := New()
		up(m, t0, st)
		acts := m.Update(t0, PassChecksLoaded{Due: map[string]time.Time{st.LuksUUID: t0.Add(-time.Hour)}})
		if got := len(all[PromptPassCheck](acts)) == 1; got != want {
			t.Errorf("%s: prompted %v, want %v: %+v", s, got, want, acts)
		}
		acts = m.Update(t0, PassCheckAccepted{Drive: drivePath})
		d, ok := find[ShowDialog](acts)
		if got := ok && d.Check; got != want {
			t.Errorf("%s: check dialog %v, want %v: %+v", s, got, want, acts)
		}
	}
}

func checkDialog(t *testing.T) *Model {
	t.Helper()
	m := New()
	st := status(api.StatePresent)
	up(m, t0, st)
	m.Update(t0, PassChecksLoaded{Due: map[string]time.Time{st.LuksUUID: t0}})
	acts := m.Update(t0, PassCheckAccepted{Drive: drivePath})
	d, ok := find[ShowDialog](acts)
	if !ok || !d.Check || d.Submit != "Check" || !strings.Contains(d.Heading, "Blue stick") ||
		!strings.Contains(strings.Join(d.Details, "\n"), "nothing is unlocked") {
		t.Fatalf("accepting: %+v", acts)
	}
	return m
}

// TestPassCheckDialog: wrong, then right; the outcome is shown in the dialog and only the
// right passphrase starts the clock afresh.
func TestPassCheckDialog(t *testing.T) {
	m := checkDialog(t)
	uuid := status(api.StatePresent).LuksUUID
	if d, _ := find[ShowDialog](m.Update(t0, DialogSubmitted{Drive: drivePath})); !d.Busy || d.Message != "Checking…" {
		t.Errorf("while checking: %+v", d)
	}
	// An Unlock outcome does not touch the check dialog.
	if acts := m.Update(t0, UnlockDone{Drive: drivePath}); len(all[ShowDialog](acts))+len(all[HideDialog](acts)) != 0 {
		t.Errorf("UnlockDone changed the check dialog: %+v", acts)
	}
	acts := m.Update(t0, PassCheckDone{Drive: drivePath, Err: fmt.Errorf("check: %w", api.ErrBadPassphrase)})
	d, _ := find[ShowDialog](acts)
	if d.Busy || d.Done || d.Dismiss != "Give up" || !strings.Contains(d.Message, "not the passphrase") ||
		!strings.Contains(d.Message, "set a new one while the keyfile still works") || len(all[SavePassChecks](acts)) != 0 {
		t.Errorf("wrong passphrase: %+v", acts)
	}
	m.Update(t0, DialogSubmitted{Drive: drivePath})
	acts = m.Update(t0, PassCheckDone{Drive: drivePath})
	d, _ = find[ShowDialog](acts)
	if !d.Done || d.Busy || d.Dismiss != "Close" || !strings.Contains(d.Message, "That is the right passphrase") {
		t.Errorf("right passphrase: %+v", d)
	}
	if s := all[SavePassChecks](acts); len(s) != 1 || !s[0].Due[uuid].Equal(t0.Add(PassCheckEvery)) {
		t.Errorf("the check is not recorded: %+v", acts)
	}
	if acts := m.Update(t0, DialogSubmitted{Drive: drivePath}); len(acts) != 0 {
		t.Errorf("submitted after the right passphrase: %+v", acts)
	}
	acts = m.Update(t0, DialogCancelled{Drive: drivePath})
	if _, ok := find[HideDialog](acts); !ok || len(all[SavePassChecks](acts)) != 0 {
		t.Errorf("closing after the right passphrase: %+v", acts)
	}
}

// TestPassCheckPutOff: Later, and giving up in the dialog, put the check off a week.
func TestPassCheckPutOff(t *testing.T) {
	uuid := status(api.StatePresent).LuksUUID
	later := t0.Add(time.Hour)
	m := checkDialog(t)
	m.Update(t0, DialogSubmitted{Drive: drivePath})
	m.Update(t0, PassCheckDone{Drive: drivePath, Err: api.ErrBadPassphrase})
	acts := m.Update(later, DialogCancelled{Drive: drivePath})
	if s := all[SavePassChecks](acts); len(s) != 1 || !s[0].Due[uuid].Equal(later.Add(PassCheckLaterBy)) {
		t.Errorf("giving up: %+v", acts)
	}
	if _, ok := find[HideDialog](acts); !ok || m.drives[drivePath].dismissed {
		t.Errorf("giving up: %+v (dismissed %v)", acts, m.drives[drivePath].dismissed)
	}
	acts = m.Update(later, PassCheckLater{Drive: drivePath})
	if s := all[SavePassChecks](acts); len(s) != 1 || !s[0].Due[uuid].Equal(later.Add(PassCheckLaterBy)) {
		t.Errorf("Later: %+v", acts)
	}
}

// TestPassCheckYieldsToUnlock: when the drive starts a run that needs the passphrase, the
// check dialog becomes the unlock dialog; a check outcome that arrives then is dropped.
func TestPassCheckYieldsToUnlock(t *testing.T) {
	m := checkDialog(t)
	m.Update(t0, changeOf(m, drivePath, map[string]any{api.PropState: string(api.StateUnlocking)}))
	acts := m.Update(t0, changeOf(m, drivePath, map[string]any{api.PropState: string(api.StateAwaitingPassphrase)}))
	d, ok := find[ShowDialog](acts)
	if !ok || d.Check || d.Submit != "Unlock" {
		t.Errorf("awaiting the passphrase: %+v", acts)
	}
	if acts := m.Update(t0, PassCheckDone{Drive: drivePath}); len(acts) != 0 {
		t.Errorf("a check outcome changed the unlock dialog: %+v", acts)
	}
	// A check is not accepted while the unlock dialog is open.
	if acts := m.Update(t0, PassCheckAccepted{Drive: drivePath}); len(acts) != 0 {
		t.Errorf("accepted over the unlock dialog: %+v", acts)
	}
}
