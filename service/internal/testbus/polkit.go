// Package testbus runs plugvaultd's real bus objects (service/internal/daemon) on a private
// dbus-daemon, with a fake polkit authority and a recording fake Backend and Enroller, for
// bus-level tests of the daemon, the CLI and the tray.
//
// It is test support: it is never linked into a shipped binary.
package testbus

import (
	"sync"
	"testing"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api/apitest"
	"github.com/plugvault/plugvault/service/internal/polkit"
)

// Outcome is how the fake authority answers CheckAuthorization.
type Outcome string

// The outcomes the fake authority can give.
const (
	Allow     Outcome = "allow"     // authorized
	Deny      Outcome = "deny"      // not authorized, no challenge
	Challenge Outcome = "challenge" // not authorized, authentication would help
	Dismissed Outcome = "dismissed" // the user dismissed the dialog (polkit.dismissed)
	Error     Outcome = "error"     // polkitd answers with a D-Bus error
	Absent    Outcome = "absent"    // polkitd is not on the bus at all
	Hang      Outcome = "hang"      // no answer until the check is cancelled
)

// Outcomes lists every outcome except Hang, for tables.
var Outcomes = []Outcome{Allow, Deny, Challenge, Dismissed, Error, Absent}

// Check is one CheckAuthorization call the fake authority received.
type Check struct {
	Subject  polkit.Subject
	Action   string
	Details  map[string]string
	Flags    uint32
	CancelID string
}

// SubjectName returns the bus name the check was about ("" when the subject was not a
// system-bus-name).
func (c Check) SubjectName() string {
	if c.Subject.Kind != "system-bus-name" {
		return ""
	}
	s, _ := c.Subject.Details["name"].Value().(string)
	return s
}

// Interactive reports whether the check allowed user interaction.
func (c Check) Interactive() bool { return c.Flags&polkit.FlagAllowUserInteraction != 0 }

// FakeAuthority stands for polkitd (org.freedesktop.PolicyKit1): it owns the name on a
// private bus, answers every check with the outcome the test set, and records the checks and
// cancellations.
type FakeAuthority struct {
	conn *dbus.Conn

	mu        sync.Mutex
	outcome   Outcome
	byAction  map[string]Outcome // overrides outcome for some actions
	checks    []Check
	cancelled []string
	pending   map[string]chan struct{}
	owned     bool
	checkCh   chan Check
}

// StartFakeAuthority starts the fake authority on bus with outcome Allow.
func StartFakeAuthority(t testing.TB, bus *apitest.Bus) *FakeAuthority {
	t.Helper()
	a := &FakeAuthority{conn: bus.Conn(t), outcome: Allow, pending: map[string]chan struct{}{}, checkCh: make(chan Check, 64)}
	if err := a.conn.Export(authorityObject{a}, polkit.AuthorityPath, polkit.Interface); err != nil {
		t.Fatal(err)
	}
	a.own(t)
	t.Cleanup(func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		for id, w := range a.pending {
			close(w)
			delete(a.pending, id)
		}
	})
	return a
}

func (a *FakeAuthority) own(t testing.TB) {
	t.Helper()
	reply, err := a.conn.RequestName(polkit.BusName, dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("fake polkit cannot own %s: %v (reply %v)", polkit.BusName, err, reply)
	}
	a.owned = true
}

// SetOutcome sets the answer to every later check. Absent releases the bus name (as if
// polkitd were not running); any other outcome takes it back.
func (a *FakeAuthority) SetOutcome(t testing.TB, o Outcome) {
	t.Helper()
	a.mu.Lock()
	a.outcome = o
	owned := a.owned
	a.mu.Unlock()
	switch {
	case o == Absent && owned:
		if _, err := a.conn.ReleaseName(polkit.BusName); err != nil {
			t.Fatal(err)
		}
		a.mu.Lock()
		a.owned = false
		a.mu.Unlock()
	case o != Absent && !owned:
		a.mu.Lock()
		defer a.mu.Unlock()
		a.own(t)
	}
}

// SetActionOutcome answers checks of action with o (Allow, Deny, Challenge, Dismissed or
// Error), whatever SetOutcome says; Reset does not clear it, ClearActionOutcomes does.
func (a *FakeAuthority) SetActionOutcome(action string, o Outcome) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.byAction == nil {
		a.byAction = map[string]Outcome{}
	}
	a.byAction[action] = o
}

// ClearActionOutcomes undoes every SetActionOutcome.
func (a *FakeAuthority) ClearActionOutcomes() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.byAction = nil
}

// Checks returns every check received so far.
func (a *FakeAuthority) Checks() []Check {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]Check(nil), a.checks...)
}

// CheckCh delivers each check as it arrives (buffered).
func (a *FakeAuthority) CheckCh() <-chan Check { return a.checkCh }

// Reset forgets the recorded checks and cancellations.
func (a *FakeAuthority) Reset() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.checks = nil
	a.cancelled = nil
}

// Cancelled returns the cancellation ids of every CancelCheckAuthorization received.
func (a *FakeAuthority) Cancelled() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.cancelled...)
}

// authorityObject holds the exported methods, so FakeAuthority's own methods stay off the bus.
type authorityObject struct{ a *FakeAuthority }

// CheckAuthorization implements org.freedesktop.PolicyKit1.Authority.CheckAuthorization.
func (o authorityObject) CheckAuthorization(subject polkit.Subject, action string, details map[string]string, flags uint32, cancelID string) (polkit.Result, *dbus.Error) {
	a := o.a
	c := Check{Subject: subject, Action: action, Details: details, Flags: flags, CancelID: cancelID}
	a.mu.Lock()
	a.checks = append(a.checks, c)
	outcome := a.outcome
	if o, ok := a.byAction[action]; ok {
		outcome = o
	}
	var wait chan struct{}
	if outcome == Hang {
		wait = make(chan struct{})
		a.pending[cancelID] = wait
	}
	a.mu.Unlock()
	select {
	case a.checkCh <- c:
	default:
	}
	switch outcome {
	case Allow:
		return polkit.Result{IsAuthorized: true, Details: map[string]string{}}, nil
	case Challenge:
		return polkit.Result{IsChallenge: true, Details: map[string]string{}}, nil
	case Dismissed:
		return polkit.Result{Details: map[string]string{polkit.DetailDismissed: "true"}}, nil
	case Error:
		return polkit.Result{}, dbus.NewError("org.freedesktop.PolicyKit1.Error.Failed", []any{"fake polkit failure"})
	case Hang:
		<-wait
		return polkit.Result{}, dbus.NewError("org.freedesktop.PolicyKit1.Error.Cancelled", []any{"the check was cancelled"})
	default:
		return polkit.Result{Details: map[string]string{}}, nil
	}
}

// CancelCheckAuthorization implements org.freedesktop.PolicyKit1.Authority.CancelCheckAuthorization.
func (o authorityObject) CancelCheckAuthorization(cancelID string) *dbus.Error {
	a := o.a
	a.mu.Lock()
	defer a.mu.Unlock()
	a.cancelled = append(a.cancelled, cancelID)
	if w := a.pending[cancelID]; w != nil {
		close(w)
		delete(a.pending, cancelID)
	}
	return nil
}
