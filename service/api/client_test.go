package api_test

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/apitest"
)

func startFake(t *testing.T) (*apitest.Bus, *apitest.FakeService, *api.Client) {
	t.Helper()
	_, err := exec.LookPath("dbus-daemon")
	apitest.Require(t, err == nil, "dbus-daemon is not installed")
	bus := apitest.StartBus(t, apitest.BusOptions{})
	fake := apitest.StartFakeService(t, bus)
	return bus, fake, api.NewClient(bus.Conn(t))
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestClientCallsAndErrors(t *testing.T) {
	_, fake, client := startFake(t)
	st := api.DriveStatus{Name: "blue", LuksUUID: "11111111-2222-3333-4444-555555555555", State: api.StatePresent, Present: true, EtaSeconds: -1}
	path := fake.AddDrive(t, st)

	drives, err := client.ListDrives(ctx(t))
	if err != nil || len(drives) != 1 || drives[0] != path {
		t.Fatalf("ListDrives = %v, %v; want [%s]", drives, err, path)
	}
	got, err := client.DriveStatus(ctx(t), path)
	if err != nil || got != st {
		t.Fatalf("DriveStatus = %+v, %v; want %+v", got, err, st)
	}

	client.SetInteractive(true)
	pass := []byte("correct horse\n")
	if err := client.Unlock(ctx(t), path, pass, nil); err != nil {
		t.Fatal(err)
	}
	calls := fake.Calls()
	last := calls[len(calls)-1]
	if last.Method != api.MethodUnlock || string(last.Args[0].([]byte)) != "correct horse\n" || !last.Interactive {
		t.Errorf("Unlock arrived as %v (interactive %v)", last, last.Interactive)
	}

	for _, sentinel := range []error{api.ErrBusy, api.ErrNotPresent, api.ErrBadPassphrase, api.ErrNotAuthorizedCanObtain} {
		fake.FailNext(api.MethodBackupNow, fmt.Errorf("cannot back up: %w", sentinel))
		err := client.BackupNow(ctx(t), path, nil)
		if !errors.Is(err, sentinel) || err.Error() != "cannot back up: "+sentinel.Error() {
			t.Errorf("BackupNow error = %v, want one wrapping %v with the daemon's message", err, sentinel)
		}
	}
	fake.FailNext(api.MethodBackupNow, nil)

	v, err := client.Version(ctx(t))
	if err != nil || v != "0.0.0-fake" {
		t.Errorf("Version = %q, %v", v, err)
	}
}

func TestWatchFollowsPropertiesAndService(t *testing.T) {
	bus, fake, client := startFake(t)
	path := fake.AddDrive(t, api.DriveStatus{LuksUUID: "u1", State: api.StatePresent})
	events, err := client.Watch(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	next := func() api.Event {
		t.Helper()
		select {
		case ev := <-events:
			return ev
		case <-time.After(10 * time.Second):
			t.Fatal("no event within 10 s")
		}
		return api.Event{}
	}
	if ev := next(); ev.Kind != api.EventServiceUp {
		t.Fatalf("first event %+v, want EventServiceUp", ev)
	}
	fake.SetDrive(t, path, api.DriveStatus{LuksUUID: "u1", State: api.StateBackingUp, Progress: 0.25})
	ev := next()
	if ev.Kind != api.EventDriveChanged || ev.Drive != path {
		t.Fatalf("got %+v, want a change of %s", ev, path)
	}
	var st api.DriveStatus
	if err := st.Apply(ev.Changed); err != nil || st.State != api.StateBackingUp || st.Progress != 0.25 {
		t.Errorf("changed = %v (%v)", ev.Changed, err)
	}

	// A second client that takes over nothing but emits a forged PropertiesChanged on the same
	// path must be ignored.
	forger := bus.Conn(t)
	_ = forger.Emit(path, "org.freedesktop.DBus.Properties.PropertiesChanged", api.DriveInterface,
		map[string]any{api.PropState: api.StateSafeToRemove}, []string{})
	fake.RemoveDrive(t, path)
	for ev := next(); ev.Kind != api.EventDriveRemoved; ev = next() {
		if ev.Kind == api.EventDriveChanged {
			if st.Apply(ev.Changed); st.State == api.StateSafeToRemove {
				t.Fatal("a forged PropertiesChanged from another connection was delivered")
			}
		}
	}

	fake.Conn.Close() // the service goes away
	for ev := next(); ev.Kind != api.EventServiceDown; ev = next() {
	}
}

// Connect's connection (the CLI's and the tray's) accepts no fds: any user of the system bus
// may send it unicast signals carrying fds, an array of fds among them, which would leak fds
// into the client or kill it (godbus v5.2.4 panics decoding it). The bus refuses them; the
// client's fd count stays flat and it keeps working.
func TestConnectRefusesFDs(t *testing.T) {
	bus, _, _ := startFake(t)
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.Address)
	client, err := api.Connect(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if client.Conn().SupportsUnixFDs() {
		t.Error("the client's connection negotiated fd passing")
	}
	before := apitest.OpenFDs(t)
	if err := apitest.FloodFDs(bus.Address, client.Conn().Names()[0], 100); err != nil {
		t.Fatal(err)
	}
	if _, err := client.ListDrives(ctx(t)); err != nil {
		t.Errorf("the client no longer works: %v", err)
	}
	// The flood's own connection and pipe are closed again; a leak would add 100.
	if after := apitest.OpenFDs(t); after > before {
		t.Errorf("%d open fds after 100 signals with fds, %d before", after, before)
	}
}
