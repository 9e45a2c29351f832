package api_test

import (
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/apitest"
)

var (
	watchBlue  = api.DriveStatus{Name: "blue", LuksUUID: "11111111-0000-4000-8000-000000000001", Present: true, State: api.StatePresent, StateReason: "Plugged in", EtaSeconds: -1}
	watchGreen = api.DriveStatus{Name: "green", LuksUUID: "22222222-0000-4000-8000-000000000002", State: api.StateAbsent, EtaSeconds: -1}
)

// nextDrivesEvent returns the next event, failing the test if none comes (a hang is a bug, not
// a timing: the 10 s only bound a broken test).
func nextDrivesEvent(t *testing.T, events <-chan api.DrivesEvent) api.DrivesEvent {
	t.Helper()
	select {
	case ev, ok := <-events:
		if !ok {
			t.Fatal("the watch ended")
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10 s")
	}
	return api.DrivesEvent{}
}

// wantChange checks that ev reports path changing to st.
func wantChange(t *testing.T, ev api.DrivesEvent, path dbus.ObjectPath, st api.DriveStatus, changed ...string) {
	t.Helper()
	if ev.Kind != api.EventDriveChanged || ev.Drive != path || ev.Status != st || !slices.Equal(ev.Changed, changed) {
		t.Fatalf("got %+v\nwant the change of %s to %+v (changed %v)", ev, path, st, changed)
	}
}

func wantUp(t *testing.T, ev api.DrivesEvent, drives ...api.DriveEntry) {
	t.Helper()
	if ev.Kind != api.EventServiceUp || !slices.Equal(ev.Drives, drives) || ev.Err != nil {
		t.Fatalf("got %+v\nwant EventServiceUp with %+v", ev, drives)
	}
}

func TestWatchDrivesDeliversStateThenChanges(t *testing.T) {
	_, fake, client := startFake(t)
	blue := fake.AddDrive(t, watchBlue)
	events, err := client.WatchDrives(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	ev := nextDrivesEvent(t, events)
	wantUp(t, ev, api.DriveEntry{Path: blue, Status: watchBlue})
	if ev.ReminderDays != 7 || ev.Version != "0.0.0-fake" {
		t.Errorf("manager state %d %q", ev.ReminderDays, ev.Version)
	}

	st := watchBlue
	st.State, st.StateReason, st.Progress = api.StateBackingUp, "Backing up 1 of 4 files", 0.25
	fake.SetDrive(t, blue, st)
	wantChange(t, nextDrivesEvent(t, events), blue, st, api.PropProgress, api.PropState, api.PropStateReason)

	green := fake.AddDrive(t, watchGreen)
	if ev := nextDrivesEvent(t, events); ev.Kind != api.EventDriveAdded || ev.Drive != green || ev.Status != watchGreen {
		t.Fatalf("got %+v, want green added", ev)
	}
	fake.SetReminderDays(3)
	if ev := nextDrivesEvent(t, events); ev.Kind != api.EventManagerChanged || ev.ReminderDays != 3 {
		t.Fatalf("got %+v, want ReminderDays 3", ev)
	}
	fake.RemoveDrive(t, green)
	if ev := nextDrivesEvent(t, events); ev.Kind != api.EventDriveRemoved || ev.Drive != green || ev.ReminderDays != 3 {
		t.Fatalf("got %+v, want green removed", ev)
	}
}

// The daemon restarts (its name changes owner): the watch says it is down, then delivers the
// new instance's whole state, and follows the new owner's signals.
func TestWatchDrivesFollowsRestarts(t *testing.T) {
	bus, fake, client := startFake(t)
	blue := fake.AddDrive(t, watchBlue)
	events, err := client.WatchDrives(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	wantUp(t, nextDrivesEvent(t, events), api.DriveEntry{Path: blue, Status: watchBlue})

	fake.Conn.Close()
	if ev := nextDrivesEvent(t, events); ev.Kind != api.EventServiceDown || ev.Err != nil || ev.ReminderDays != 0 {
		t.Fatalf("got %+v, want EventServiceDown", ev)
	}
	fake2 := apitest.StartFakeService(t, bus)
	st := watchBlue
	st.State, st.StateReason = api.StateSafeToRemove, "Safe to remove"
	fake2.AddDrive(t, st)
	wantUpWith(t, events, blue, st)

	// A forged PropertiesChanged from another connection is not the daemon's.
	forger := bus.Conn(t)
	if err := forger.Emit(blue, "org.freedesktop.DBus.Properties.PropertiesChanged", api.DriveInterface,
		map[string]dbus.Variant{api.PropState: dbus.MakeVariant(string(api.StateFailed))}, []string{}); err != nil {
		t.Fatal(err)
	}
	st2 := st
	st2.State, st2.StateReason = api.StatePresent, "Plugged in"
	fake2.SetDrive(t, blue, st2)
	wantChange(t, nextDrivesEvent(t, events), blue, st2, api.PropState, api.PropStateReason)
}

// What changes between subscribing and reading is in what is read and is not delivered again
// (no state goes backwards); what changes after the read is delivered, in order.
func TestWatchDrivesSubscribeReadRace(t *testing.T) {
	_, fake, client := startFake(t)
	blue := fake.AddDrive(t, watchBlue)
	mounting, backingUp, finishing := watchBlue, watchBlue, watchBlue
	mounting.State, mounting.StateReason = api.StateMounting, "Mounting the drive"
	backingUp.State, backingUp.StateReason, backingUp.Progress = api.StateBackingUp, "Preparing the backup", 0.5
	finishing.State, finishing.StateReason, finishing.Progress = api.StateFinishing, "Finishing the backup", 1
	var green dbus.ObjectPath
	reads := 0
	hook := func(point string) {
		if reads > 0 && point == "read" {
			t.Errorf("the state was read again")
		}
		switch point {
		case "read":
			// Subscribed, not read yet: both changes are in the state read.
			fake.SetDrive(t, blue, mounting)
			fake.SetDrive(t, blue, backingUp)
		case "read-drives":
			// The Manager was read without green; its DriveAdded follows.
			green = fake.AddDrive(t, watchGreen)
		case "read-done":
			reads++
			// Read, not delivered yet: this change comes after the state.
			fake.SetDrive(t, blue, finishing)
		}
	}
	events, err := api.WatchDrivesHooked(ctx(t), client, hook)
	if err != nil {
		t.Fatal(err)
	}
	wantUp(t, nextDrivesEvent(t, events), api.DriveEntry{Path: blue, Status: backingUp})
	if ev := nextDrivesEvent(t, events); ev.Kind != api.EventDriveAdded || ev.Drive != green || ev.Status != watchGreen {
		t.Fatalf("got %+v, want green added", ev)
	}
	wantChange(t, nextDrivesEvent(t, events), blue, finishing, api.PropProgress, api.PropState, api.PropStateReason)
	// The next change comes next: nothing stale was queued in between.
	fake.SetDrive(t, blue, watchBlue)
	wantChange(t, nextDrivesEvent(t, events), blue, watchBlue, api.PropProgress, api.PropState, api.PropStateReason)
}

// A drive forgotten between reading the Manager and reading the drive is left out, and its
// DriveRemoved is not delivered for a drive the caller never heard of.
func TestWatchDrivesDriveForgottenWhileReading(t *testing.T) {
	_, fake, client := startFake(t)
	blue := fake.AddDrive(t, watchBlue)
	green := fake.AddDrive(t, watchGreen)
	hook := func(point string) {
		if point != "read-drives" {
			return
		}
		fake.RemoveDrive(t, green)
	}
	events, err := api.WatchDrivesHooked(ctx(t), client, hook)
	if err != nil {
		t.Fatal(err)
	}
	wantUp(t, nextDrivesEvent(t, events), api.DriveEntry{Path: blue, Status: watchBlue})
	st := watchBlue
	st.State = api.StateUnlocking
	fake.SetDrive(t, blue, st)
	wantChange(t, nextDrivesEvent(t, events), blue, st, api.PropState)
}

// With the daemon not running the first event says so, and its start delivers its state.
func TestWatchDrivesServiceStartsLater(t *testing.T) {
	_, err := exec.LookPath("dbus-daemon")
	apitest.Require(t, err == nil, "dbus-daemon is not installed")
	bus := apitest.StartBus(t, apitest.BusOptions{})
	client := api.NewClient(bus.Conn(t))
	events, err := client.WatchDrives(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if ev := nextDrivesEvent(t, events); ev.Kind != api.EventServiceDown || ev.Err != nil {
		t.Fatalf("got %+v, want EventServiceDown", ev)
	}
	fake := apitest.StartFakeService(t, bus)
	blue := fake.AddDrive(t, watchBlue)
	wantUpWith(t, events, blue, watchBlue)
}

// wantUpWith checks that the daemon comes up with exactly one drive, path in state st. The
// watch reads the Manager either before or after the drive's DriveAdded, and both orders end
// with the drive known exactly once.
func wantUpWith(t *testing.T, events <-chan api.DrivesEvent, path dbus.ObjectPath, st api.DriveStatus) {
	t.Helper()
	ev := nextDrivesEvent(t, events)
	if ev.Kind != api.EventServiceUp {
		t.Fatalf("got %+v, want EventServiceUp", ev)
	}
	if len(ev.Drives) > 0 {
		wantUp(t, ev, api.DriveEntry{Path: path, Status: st})
		return
	}
	if ev = nextDrivesEvent(t, events); ev.Kind != api.EventDriveAdded || ev.Drive != path || ev.Status != st {
		t.Fatalf("got %+v, want %s added", ev, path)
	}
}

// Signals are judged by their numbers: one numbered before the read is dropped, and one that
// comes after a higher number (out of order) makes the watch read everything again.
func TestWatchDrivesSequenceNumbers(t *testing.T) {
	_, fake, client := startFake(t)
	blue := fake.AddDrive(t, watchBlue)
	sigs := make(chan *dbus.Signal, 4)
	events, err := api.WatchDrivesFrom(ctx(t), client, sigs)
	if err != nil {
		t.Fatal(err)
	}
	wantUp(t, nextDrivesEvent(t, events), api.DriveEntry{Path: blue, Status: watchBlue})
	changeTo := func(seq dbus.Sequence, s api.State) {
		sigs <- &dbus.Signal{Sender: fake.Conn.Names()[0], Path: blue, Name: "org.freedesktop.DBus.Properties.PropertiesChanged",
			Body: []any{api.DriveInterface, map[string]dbus.Variant{api.PropState: dbus.MakeVariant(string(s))}, []string{}}, Sequence: seq}
	}
	const late = dbus.Sequence(1 << 40) // after every reply of the connection
	changeTo(2, api.StateFailed)        // before the read's reply: already in it
	changeTo(late, api.StateMounting)
	st := watchBlue
	st.State = api.StateMounting
	wantChange(t, nextDrivesEvent(t, events), blue, st, api.PropState)
	changeTo(late-1, api.StateUnlocking) // out of order
	wantUp(t, nextDrivesEvent(t, events), api.DriveEntry{Path: blue, Status: watchBlue})
	changeTo(late+1, api.StateUnlocking)
	st.State = api.StateUnlocking
	wantChange(t, nextDrivesEvent(t, events), blue, st, api.PropState)
}

// A property announced as changed without its value (invalidated) is read again.
func TestWatchDrivesRereadsInvalidatedProperties(t *testing.T) {
	_, fake, client := startFake(t)
	blue := fake.AddDrive(t, watchBlue)
	sigs := make(chan *dbus.Signal, 1)
	events, err := api.WatchDrivesFrom(ctx(t), client, sigs)
	if err != nil {
		t.Fatal(err)
	}
	wantUp(t, nextDrivesEvent(t, events), api.DriveEntry{Path: blue, Status: watchBlue})
	st := watchBlue
	st.State, st.StateReason = api.StateUnlocking, "Unlocking the drive"
	fake.SetDrive(t, blue, st) // its own signal goes to the connection, which the watch does not read
	sigs <- &dbus.Signal{Sender: fake.Conn.Names()[0], Path: blue, Name: "org.freedesktop.DBus.Properties.PropertiesChanged",
		Body: []any{api.DriveInterface, map[string]dbus.Variant{}, []string{api.PropState, api.PropStateReason}}, Sequence: 1 << 40}
	wantChange(t, nextDrivesEvent(t, events), blue, st, api.PropState, api.PropStateReason)
}
