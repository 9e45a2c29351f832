package daemon_test

import (
	"context"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/apitest"
	"github.com/plugvault/plugvault/service/internal/daemon"
	"github.com/plugvault/plugvault/service/internal/enroll"
	"github.com/plugvault/plugvault/service/internal/polkit"
	"github.com/plugvault/plugvault/service/internal/testbus"
)

// outcomeErrors is the error a call gets for each polkit outcome.
var outcomeErrors = map[testbus.Outcome]error{
	testbus.Allow:     nil,
	testbus.Deny:      api.ErrNotAuthorized,
	testbus.Challenge: api.ErrNotAuthorizedCanObtain,
	testbus.Dismissed: api.ErrNotAuthorizedDismissed,
	testbus.Error:     api.ErrNotAuthorized,
	testbus.Absent:    api.ErrNotAuthorized,
}

// Every mutating method x every polkit outcome: the right error, exactly one check with the
// method's action and the caller as subject, the backend reached only when allowed, and no
// property changed by a refused call.
func TestEveryMethodEveryPolkitOutcome(t *testing.T) {
	env := startEnv(t, testbus.EnvOptions{})
	ctx := ctxT(t)
	drive := api.DrivePath(uuidOne)
	caller := env.ClientBus.Names()[0]
	want := outcomeErrors
	for _, m := range mutatingMethods(t) {
		for _, outcome := range testbus.Outcomes {
			name := m.method + "/" + string(outcome)
			env.Polkit.SetOutcome(t, outcome)
			env.Polkit.Reset()
			env.Backend.Reset()
			before := readState(t, ctx, env.Client)

			err := m.call(ctx, env.Client, drive, nil)
			wantErr(t, name, err, want[outcome])

			checks := env.Polkit.Checks()
			if outcome == testbus.Absent {
				if len(checks) != 0 {
					t.Errorf("%s: the absent authority got %d checks", name, len(checks))
				}
			} else if len(checks) != 1 {
				t.Errorf("%s: polkit got %d checks, want 1", name, len(checks))
			} else {
				c := checks[0]
				if wantAction := api.MethodActions[m.iface+"."+m.method]; c.Action != wantAction {
					t.Errorf("%s: action %q, want %q", name, c.Action, wantAction)
				}
				if c.SubjectName() != caller {
					t.Errorf("%s: subject %+v, want system-bus-name %s", name, c.Subject, caller)
				}
				if c.Interactive() {
					t.Errorf("%s: interactive check although the caller did not allow interaction", name)
				}
				if c.Details["polkit.message"] == "" {
					t.Errorf("%s: no polkit.message in %v", name, c.Details)
				}
				if m.iface == api.DriveInterface || m.method == api.MethodForget {
					for k, v := range map[string]string{"drive.name": "work", "drive.label": "work-label", "drive.serial": "4C530001work", "drive.uuid": uuidOne} {
						if c.Details[k] != v {
							t.Errorf("%s: detail %s = %q, want %q", name, k, c.Details[k], v)
						}
					}
				} else if m.method != api.MethodSealKeys && c.Details["drive.device"] == "" {
					// SealKeys concerns every drive: its message is the whole detail.
					t.Errorf("%s: details %v do not name the device", name, c.Details)
				}
			}

			calls := env.Backend.Calls()
			if outcome == testbus.Allow {
				if len(calls) != 1 || calls[0].Method != m.method {
					t.Errorf("%s: backend calls %v, want one %s", name, calls, m.method)
				}
			} else if len(calls) != 0 {
				t.Errorf("%s: an unauthorized call reached the backend: %v", name, calls)
			}
			if outcome != testbus.Allow {
				if after := readState(t, ctx, env.Client); !reflect.DeepEqual(before, after) {
					t.Errorf("%s: an unauthorized call changed the state:\nbefore %+v\nafter  %+v", name, before, after)
				}
			} else {
				// Enroll/Adopt published a drive, Forget removed one: put the fixture back.
				env.Daemon.RemoveDrive(env.Backend.EnrollUUID())
				if m.method == api.MethodForget {
					if err := env.Daemon.AddDrive(uuidOne, testbus.SampleDrive(uuidOne, "work")); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
	}
}

// Interaction is allowed only when the caller set ALLOW_INTERACTIVE_AUTHORIZATION and did not
// set auth.no_user_interaction; a wrongly typed auth.no_user_interaction counts as set and is
// then rejected.
func TestInteractiveOnlyWhenAllowed(t *testing.T) {
	env := startEnv(t, testbus.EnvOptions{})
	ctx := ctxT(t)
	drive := api.DrivePath(uuidOne)
	cases := []struct {
		flag        bool
		opts        api.Options
		interactive bool
		err         error
	}{
		{false, nil, false, nil},
		{true, nil, true, nil},
		{true, api.Options{api.OptNoUserInteraction: false}, true, nil},
		{true, api.Options{api.OptNoUserInteraction: true}, false, nil},
		{false, api.Options{api.OptNoUserInteraction: false}, false, nil},
		{true, api.Options{api.OptNoUserInteraction: "no"}, false, api.ErrInvalidArgument},
	}
	for _, m := range mutatingMethods(t) {
		for _, c := range cases {
			env.Polkit.Reset()
			env.Backend.Reset()
			env.Client.SetInteractive(c.flag)
			err := m.call(ctx, env.Client, drive, c.opts)
			env.Daemon.RemoveDrive(env.Backend.EnrollUUID())
			if m.method == api.MethodForget && err == nil {
				if err := env.Daemon.AddDrive(uuidOne, testbus.SampleDrive(uuidOne, "work")); err != nil {
					t.Fatal(err)
				}
			}
			name := m.method
			wantErr(t, name, err, c.err)
			checks := env.Polkit.Checks()
			if len(checks) != 1 {
				t.Fatalf("%s: %d checks, want 1", name, len(checks))
			}
			if checks[0].Interactive() != c.interactive {
				t.Errorf("%s flag=%v opts=%v: interactive=%v, want %v", name, c.flag, c.opts, checks[0].Interactive(), c.interactive)
			}
		}
	}
}

// Until Start nothing is exported: no call can reach a drive before the backends are there.
// Drives added before Start are served once it has run, with what was published meanwhile.
func TestNothingServedBeforeStart(t *testing.T) {
	apitest.RequireTool(t, "dbus-daemon")
	bus := apitest.StartBus(t, apitest.BusOptions{})
	conn, err := daemon.ConnectBus(context.Background(), bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	d, err := daemon.New(conn, daemon.Options{Authorizer: polkit.New(conn, nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	if err := d.AddDrive(uuidOne, testbus.SampleDrive(uuidOne, "work")); err != nil {
		t.Fatal(err)
	}
	st := testbus.SampleDrive(uuidOne, "work")
	st.State, st.Present = api.StatePresent, true
	d.UpdateDrive(uuidOne, st)

	client := bus.Conn(t)
	daemonName := conn.Names()[0]
	ctx := ctxT(t)
	for _, path := range []dbus.ObjectPath{api.ManagerPath, api.DrivePath(uuidOne)} {
		var v dbus.Variant
		err := client.Object(daemonName, path).CallWithContext(ctx, "org.freedesktop.DBus.Properties.Get", 0, api.ManagerInterface, api.PropVersion).Store(&v)
		// godbus answers UnknownInterface (or UnknownObject) for a path nothing is exported on.
		var derr dbus.Error
		if !errors.As(err, &derr) || (derr.Name != "org.freedesktop.DBus.Error.UnknownObject" && derr.Name != "org.freedesktop.DBus.Error.UnknownInterface") {
			t.Errorf("%s before Start: %v, want UnknownObject or UnknownInterface", path, err)
		}
	}
	if err := d.Start(nil, nil); err == nil {
		t.Error("Start without backends must fail")
	}
	fake := testbus.NewFakeBackend()
	if err := d.Start(fake, fake); err != nil {
		t.Fatal(err)
	}
	c := api.NewClient(client)
	paths, err := c.ListDrives(ctx)
	if err != nil || len(paths) != 1 || paths[0] != api.DrivePath(uuidOne) {
		t.Fatalf("Drives after Start = %v, %v", paths, err)
	}
	got, err := c.DriveStatus(ctx, paths[0])
	if err != nil || got.State != api.StatePresent {
		t.Errorf("drive after Start = %+v, %v; want the state published before Start", got, err)
	}
}

// A hanging interactive check is cancelled with CancelCheckAuthorization when the daemon
// stops, and the call is refused.
func TestInteractiveCheckCancelled(t *testing.T) {
	env := startEnv(t, testbus.EnvOptions{})
	ctx := ctxT(t)
	env.Polkit.SetOutcome(t, testbus.Hang)
	env.Client.SetInteractive(true)
	errc := make(chan error, 1)
	go func() { errc <- env.Client.BackupNow(ctx, api.DrivePath(uuidOne), nil) }()
	var check testbus.Check
	select {
	case check = <-env.Polkit.CheckCh():
	case <-ctx.Done():
		t.Fatal("no polkit check arrived")
	}
	if !check.Interactive() {
		t.Fatal("the check is not interactive")
	}
	env.Daemon.Close()
	err := <-errc
	if !errors.Is(err, api.ErrNotAuthorized) {
		t.Errorf("BackupNow: %v, want NotAuthorized", err)
	}
	cancelled := env.Polkit.Cancelled()
	if len(cancelled) != 1 || cancelled[0] != check.CancelID {
		t.Errorf("cancelled %v, want [%s]", cancelled, check.CancelID)
	}
	if calls := env.Backend.Calls(); len(calls) != 0 {
		t.Errorf("backend got %v", calls)
	}
}

// Passphrases reach the backend intact and are zeroed when the call returns.
func TestSecretsZeroed(t *testing.T) {
	env := startEnv(t, testbus.EnvOptions{})
	ctx := ctxT(t)
	for _, m := range mutatingMethods(t) {
		if m.method != api.MethodUnlock && m.method != api.MethodCheckPassphrase && m.method != api.MethodEnroll && m.method != api.MethodAdopt {
			continue
		}
		env.Backend.Reset()
		if err := m.call(ctx, env.Client, api.DrivePath(uuidOne), nil); err != nil {
			t.Fatal(err)
		}
		env.Daemon.RemoveDrive(env.Backend.EnrollUUID())
		calls := env.Backend.Calls()
		if len(calls) != 1 || len(calls[0].Secret) == 0 {
			t.Fatalf("%s: backend calls %v", m.method, calls)
		}
		for _, b := range calls[0].SecretRef {
			if b != 0 {
				t.Errorf("%s: the secret was not zeroed after the call: %q", m.method, calls[0].SecretRef)
				break
			}
		}
		if m.method == api.MethodUnlock || m.method == api.MethodCheckPassphrase {
			if string(calls[0].Secret) != "pass phrase" || calls[0].UUID != uuidOne || calls[0].Method != m.method {
				t.Errorf("%s call %+v", m.method, calls[0])
			}
			continue
		}
		switch r := calls[0].Args[0].(type) {
		case enroll.Request:
			if string(calls[0].Secret) != "correct horse" || r.Name != "plugvault" || r.Filesystem != "btrfs" {
				t.Errorf("enroll request %+v secret %q", r, calls[0].Secret)
			}
		case enroll.AdoptRequest:
			// Without add_keyfile_slot, a keyfile's slow slot gets a fast one beside it.
			if string(calls[0].Secret) != "keyfile bytes" || r.SecretIsPassphrase || !r.AddKeyfileSlot {
				t.Errorf("adopt request %+v secret %q", r, calls[0].Secret)
			}
		}
	}
}

// brokenAuthorizer fails without saying why in api terms.
type brokenAuthorizer struct{}

func (brokenAuthorizer) Check(context.Context, string, string, map[string]string, bool) error {
	return errors.New("the authorizer is broken")
}

// An Authorizer error that wraps no api sentinel still denies.
func TestBrokenAuthorizerDenies(t *testing.T) {
	env := startEnv(t, testbus.EnvOptions{Options: daemon.Options{Authorizer: brokenAuthorizer{}}})
	ctx := ctxT(t)
	for _, m := range mutatingMethods(t) {
		if err := m.call(ctx, env.Client, api.DrivePath(uuidOne), nil); !errors.Is(err, api.ErrNotAuthorized) {
			t.Errorf("%s: %v, want NotAuthorized", m.method, err)
		}
	}
	if calls := env.Backend.Calls(); len(calls) != 0 {
		t.Errorf("backend got %v", calls)
	}
}

// A drive's backups belong to its run_as user: Browse, Restore, Verify, Cancel and Eject by
// anyone else need org.plugvault.manage-other-users-drive as well (a second check, after the
// method's own action allowed the call, naming the drive and its user); the other methods
// do not. The run_as user (here the user running the test) needs only the method's action.
func TestOtherUsersDriveNeedsTheSecondAction(t *testing.T) {
	env := startEnv(t, testbus.EnvOptions{})
	ctx := ctxT(t)
	drive := api.DrivePath(uuidOne)
	for _, owner := range []string{"plugvault-test-no-such-user", "root", ""} {
		env.Backend.SetRunAs(owner)
		if owner != "plugvault-test-no-such-user" && os.Getuid() == 0 {
			continue // root owns these drives
		}
		for _, m := range mutatingMethods(t) {
			other, needs := api.OtherUserActions[m.iface+"."+m.method]
			for outcome, wantErr := range outcomeErrors {
				if outcome == testbus.Absent {
					continue // polkitd is there or not for both checks
				}
				name := owner + "/" + m.method + "/" + string(outcome)
				env.Polkit.SetActionOutcome(api.ActionManageOtherUsersDrive, outcome)
				env.Polkit.Reset()
				env.Backend.Reset()
				err := m.call(ctx, env.Client, drive, nil)
				env.Daemon.RemoveDrive(env.Backend.EnrollUUID())
				if m.method == api.MethodForget && err == nil {
					if err := env.Daemon.AddDrive(uuidOne, testbus.SampleDrive(uuidOne, "work")); err != nil {
						t.Fatal(err)
					}
				}
				checks := env.Polkit.Checks()
				if !needs {
					if err != nil || len(checks) != 1 {
						t.Errorf("%s: %v after %d checks, want success after 1", name, err, len(checks))
					}
					continue
				}
				if !errors.Is(err, wantErr) || wantErr == nil && err != nil {
					t.Errorf("%s: %v, want %v", name, err, wantErr)
				}
				if len(checks) != 2 || checks[0].Action != api.MethodActions[m.iface+"."+m.method] || checks[1].Action != other {
					t.Errorf("%s: checks %+v, want the method's action, then %s", name, checks, other)
					continue
				}
				wantUser := owner
				if owner == "" {
					wantUser = "root"
				}
				if d := checks[1].Details; d["drive.uuid"] != uuidOne || d["drive.user"] != wantUser || !strings.Contains(d["polkit.message"], "another user") {
					t.Errorf("%s: details %v", name, d)
				}
				if calls := env.Backend.Calls(); (outcome == testbus.Allow) != (len(calls) == 1) {
					t.Errorf("%s: backend calls %v", name, calls)
				}
			}
		}
	}
	env.Polkit.ClearActionOutcomes()

	// When the method's own action is refused, nobody asks for the second one.
	env.Backend.SetRunAs("plugvault-test-no-such-user")
	env.Polkit.SetOutcome(t, testbus.Deny)
	env.Polkit.Reset()
	if _, err := env.Client.Browse(ctx, drive, nil); !errors.Is(err, api.ErrNotAuthorized) {
		t.Errorf("Browse: %v", err)
	}
	if checks := env.Polkit.Checks(); len(checks) != 1 || checks[0].Action != api.ActionBrowse {
		t.Errorf("checks %+v, want only %s", checks, api.ActionBrowse)
	}
}
