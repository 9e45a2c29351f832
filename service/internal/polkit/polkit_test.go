package polkit_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/apitest"
	"github.com/plugvault/plugvault/service/internal/polkit"
	"github.com/plugvault/plugvault/service/internal/testbus"
)

func TestCheckOutcomes(t *testing.T) {
	apitest.RequireTool(t, "dbus-daemon")
	bus := apitest.StartBus(t, apitest.BusOptions{})
	fake := testbus.StartFakeAuthority(t, bus)
	conn := bus.Conn(t)
	auth := polkit.New(conn, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tc := range []struct {
		outcome testbus.Outcome
		want    error
	}{
		{testbus.Allow, nil},
		{testbus.Deny, api.ErrNotAuthorized},
		{testbus.Challenge, api.ErrNotAuthorizedCanObtain},
		{testbus.Dismissed, api.ErrNotAuthorizedDismissed},
		{testbus.Error, api.ErrNotAuthorized},
		{testbus.Absent, api.ErrNotAuthorized},
	} {
		for _, interactive := range []bool{false, true} {
			fake.SetOutcome(t, tc.outcome)
			fake.Reset()
			details := map[string]string{"drive.name": "work"}
			err := auth.Check(ctx, ":1.42", api.ActionBackup, details, interactive)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("%s: %v, want %v", tc.outcome, err, tc.want)
			}
			checks := fake.Checks()
			if tc.outcome == testbus.Absent {
				if len(checks) != 0 {
					t.Errorf("absent authority got checks")
				}
				continue
			}
			if len(checks) != 1 {
				t.Fatalf("%s: %d checks", tc.outcome, len(checks))
			}
			c := checks[0]
			if c.SubjectName() != ":1.42" || c.Action != api.ActionBackup || c.Details["drive.name"] != "work" || c.Interactive() != interactive || c.CancelID == "" {
				t.Errorf("%s: check %+v", tc.outcome, c)
			}
		}
	}
	// Two checks never share a cancellation id.
	fake.SetOutcome(t, testbus.Allow)
	fake.Reset()
	_ = auth.Check(ctx, ":1.42", api.ActionBackup, nil, false)
	_ = auth.Check(ctx, ":1.42", api.ActionBackup, nil, false)
	if cs := fake.Checks(); len(cs) != 2 || cs[0].CancelID == cs[1].CancelID {
		t.Errorf("cancellation ids %+v", cs)
	}
}

// A check whose context ends is cancelled in polkitd (the dialog goes away) and denied.
func TestCheckCancelled(t *testing.T) {
	apitest.RequireTool(t, "dbus-daemon")
	bus := apitest.StartBus(t, apitest.BusOptions{})
	fake := testbus.StartFakeAuthority(t, bus)
	fake.SetOutcome(t, testbus.Hang)
	auth := polkit.New(bus.Conn(t), nil)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- auth.Check(ctx, ":1.7", api.ActionEject, nil, true) }()
	c := <-fake.CheckCh()
	cancel()
	if err := <-errc; !errors.Is(err, api.ErrNotAuthorized) {
		t.Errorf("cancelled check: %v, want NotAuthorized", err)
	}
	if got := fake.Cancelled(); len(got) != 1 || got[0] != c.CancelID {
		t.Errorf("cancelled %v, want [%s]", got, c.CancelID)
	}
}

func TestCheckWithoutSubject(t *testing.T) {
	auth := polkit.New(nil, nil)
	if err := auth.Check(context.Background(), "", api.ActionBackup, nil, false); !errors.Is(err, api.ErrNotAuthorized) {
		t.Errorf("empty subject: %v", err)
	}
}
