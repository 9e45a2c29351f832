package daemon_test

import (
	"context"
	"reflect"
	"sort"
	"sync"
	"testing"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/testbus"
)

// nextEvent returns the next event of the given kind.
func nextEvent(t *testing.T, ctx context.Context, events <-chan api.Event, kind api.EventKind) api.Event {
	t.Helper()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("event channel closed")
			}
			if ev.Kind == kind {
				return ev
			}
		case <-ctx.Done():
			t.Fatalf("no event of kind %d", kind)
		}
	}
}

// watch subscribes to the daemon's signals and waits until the daemon is seen running.
func watch(t *testing.T, ctx context.Context, env *testbus.Env) <-chan api.Event {
	t.Helper()
	events, err := env.Client.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	nextEvent(t, ctx, events, api.EventServiceUp)
	return events
}

func keys(m map[string]dbus.Variant) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// UpdateDrive emits exactly one PropertiesChanged carrying exactly the changed properties,
// and none when nothing changed.
func TestUpdateDriveEmitsOnePropertiesChanged(t *testing.T) {
	env := startEnv(t, testbus.EnvOptions{})
	ctx := ctxT(t)
	events := watch(t, ctx, env)

	st := testbus.SampleDrive(uuidOne, "work")
	st.Present = true
	st.State = api.StateBackingUp
	st.Progress = 0.25
	env.Daemon.UpdateDrive(uuidOne, st)
	env.Daemon.UpdateDrive(uuidOne, st) // no change: no signal
	st2 := st
	st2.FilesDone = 10
	env.Daemon.UpdateDrive(uuidOne, st2)

	ev := nextEvent(t, ctx, events, api.EventDriveChanged)
	if ev.Drive != api.DrivePath(uuidOne) {
		t.Errorf("first change on %s", ev.Drive)
	}
	if got, want := keys(ev.Changed), []string{api.PropPresent, api.PropProgress, api.PropState}; !reflect.DeepEqual(got, want) {
		t.Errorf("first PropertiesChanged carries %v, want %v", got, want)
	}
	if ev.Changed[api.PropState].Value() != string(api.StateBackingUp) || ev.Changed[api.PropProgress].Value() != 0.25 || ev.Changed[api.PropPresent].Value() != true {
		t.Errorf("first PropertiesChanged values %v", ev.Changed)
	}
	// The no-op update sent nothing: the next signal is the third update's.
	ev = nextEvent(t, ctx, events, api.EventDriveChanged)
	if got := keys(ev.Changed); !reflect.DeepEqual(got, []string{api.PropFilesDone}) || ev.Changed[api.PropFilesDone].Value() != uint64(10) {
		t.Errorf("second PropertiesChanged carries %v, want only FilesDone=10", ev.Changed)
	}
	got, err := env.Client.DriveStatus(ctx, api.DrivePath(uuidOne))
	if err != nil {
		t.Fatal(err)
	}
	if got != st2 {
		t.Errorf("DriveStatus = %+v, want %+v", got, st2)
	}
}

// Enroll publishes the new drive (Drives, DriveAdded); Forget removes it (DriveRemoved).
func TestEnrollAndForgetAnnounce(t *testing.T) {
	env := startEnv(t, testbus.EnvOptions{})
	ctx := ctxT(t)
	events := watch(t, ctx, env)
	path, _, err := env.Client.Enroll(ctx, blockDevice(t), []byte("pw"), api.Options{api.OptName: "travel"})
	if err != nil {
		t.Fatal(err)
	}
	if want := api.DrivePath(env.Backend.EnrollUUID()); path != want {
		t.Errorf("Enroll returned %s, want %s", path, want)
	}
	if ev := nextEvent(t, ctx, events, api.EventDriveAdded); ev.Drive != path {
		t.Errorf("DriveAdded %s, want %s", ev.Drive, path)
	}
	drives, err := env.Client.ListDrives(ctx)
	if err != nil || len(drives) != 3 {
		t.Fatalf("ListDrives = %v, %v", drives, err)
	}
	st, err := env.Client.DriveStatus(ctx, path)
	if err != nil || st.Name != "travel" {
		t.Errorf("new drive %+v, %v", st, err)
	}
	if err := env.Client.Forget(ctx, path, api.Options{api.OptRemoveKeyslot: true}); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, ctx, events, api.EventDriveRemoved); ev.Drive != path {
		t.Errorf("DriveRemoved %s, want %s", ev.Drive, path)
	}
	calls := env.Backend.Calls()
	if last := calls[len(calls)-1]; last.Method != "Forget" || last.Args[0] != true {
		t.Errorf("last backend call %+v, want Forget with remove_keyslot", last)
	}
	if _, err := env.Client.DriveStatus(ctx, path); err == nil {
		t.Error("the forgotten drive is still exported")
	}
}

// Handlers and publishing run concurrently; -race checks them.
func TestConcurrentCallsAndUpdates(t *testing.T) {
	env := startEnv(t, testbus.EnvOptions{})
	ctx := ctxT(t)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			if err := env.Client.BackupNow(ctx, api.DrivePath(uuidTwo), nil); err != nil {
				t.Error(err)
			}
		}()
		go func(i int) {
			defer wg.Done()
			st := testbus.SampleDrive(uuidTwo, "home")
			st.FilesDone = uint64(i)
			env.Daemon.UpdateDrive(uuidTwo, st)
		}(i)
	}
	wg.Wait()
	if n := len(env.Backend.Calls()); n != 8 {
		t.Errorf("backend got %d calls, want 8", n)
	}
}

// ListDrives and ListSnapshots need no authorization.
func TestUnauthorizedReads(t *testing.T) {
	env := startEnv(t, testbus.EnvOptions{})
	ctx := ctxT(t)
	env.Polkit.SetOutcome(t, testbus.Deny)
	want := []api.Snapshot{
		{Name: "20261125T083100Z", Created: 1795595460, Files: 3, Bytes: 4096, Status: api.SnapshotComplete, Changed: api.ChangedUnknown},
		{Name: "20261126T083100Z", Created: 1795681860, Files: 3, Bytes: 4096, Status: api.SnapshotComplete, Changed: 2},
	}
	env.Backend.SetSnapshots(want)
	got, err := env.Client.ListSnapshots(ctx, api.DrivePath(uuidOne))
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("ListSnapshots = %v, %v", got, err)
	}
	drives, err := env.Client.ListDrives(ctx)
	if err != nil || !reflect.DeepEqual(drives, []dbus.ObjectPath{api.DrivePath(uuidOne), api.DrivePath(uuidTwo)}) {
		t.Errorf("ListDrives = %v, %v", drives, err)
	}
	if n := len(env.Polkit.Checks()); n != 0 {
		t.Errorf("%d polkit checks for reads", n)
	}
}
