package drive_test

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api/apitest"
	"github.com/plugvault/plugvault/service/internal/drive"
)

// fakeLogin1 stands for systemd-logind's org.freedesktop.login1.Manager on a private bus: it
// records Inhibit calls and hands out the write end of a pipe, like logind's inhibitor FIFO.
type fakeLogin1 struct {
	mu    sync.Mutex
	calls [][4]string
	ends  []*os.File // our ends: EOF once the client closed its fd
	keep  []*os.File
}

func (f *fakeLogin1) Inhibit(what, who, why, mode string) (dbus.UnixFD, *dbus.Error) {
	r, w, err := os.Pipe()
	if err != nil {
		return 0, dbus.MakeFailedError(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, [4]string{what, who, why, mode})
	f.ends = append(f.ends, r)
	f.keep = append(f.keep, w) // closed after the reply went out
	return dbus.UnixFD(w.Fd()), nil
}

func TestLogindOnABus(t *testing.T) {
	apitest.RequireTool(t, "dbus-daemon")
	bus := apitest.StartBus(t, apitest.BusOptions{})
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.Address)

	// No logind on the bus: a no-op.
	l := drive.NewLogind(nil)
	c, err := l.Inhibit("sleep:handle-lid-switch", "plugvault", "test", "delay")
	if err != nil || c == nil || c.Close() != nil || l.PrepareForSleep() != nil {
		t.Fatalf("without logind: %v %v", c, err)
	}

	srv := bus.Conn(t)
	fake := &fakeLogin1{}
	if err := srv.Export(fake, "/org/freedesktop/login1", "org.freedesktop.login1.Manager"); err != nil {
		t.Fatal(err)
	}
	if reply, err := srv.RequestName("org.freedesktop.login1", dbus.NameFlagDoNotQueue); err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("cannot own login1: %v %v", reply, err)
	}
	l = drive.NewLogind(nil)
	sleep := l.PrepareForSleep()
	c, err = l.Inhibit("sleep:handle-lid-switch", "plugvault", "Backing up to A", "delay")
	if err != nil {
		t.Fatal(err)
	}
	fake.mu.Lock()
	calls := fake.calls
	end := fake.ends[0]
	for _, w := range fake.keep {
		w.Close()
	}
	fake.mu.Unlock()
	if len(calls) != 1 || calls[0] != [4]string{"sleep:handle-lid-switch", "plugvault", "Backing up to A", "delay"} {
		t.Errorf("Inhibit calls %v", calls)
	}
	// Closing releases the lock: logind's end sees EOF.
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	end.SetReadDeadline(time.Now().Add(waitTimeout))
	if n, err := end.Read(make([]byte, 1)); n != 0 || err == nil || os.IsTimeout(err) {
		t.Errorf("inhibitor not released: %d %v", n, err)
	}

	// PrepareForSleep from logind arrives; the same signal from someone else does not, neither
	// broadcast (the match rule filters it) nor sent to our connection by name (no match rule
	// applies to that: the sender is checked).
	other := bus.Conn(t)
	if err := other.Emit("/org/freedesktop/login1", "org.freedesktop.login1.Manager.PrepareForSleep", false); err != nil {
		t.Fatal(err)
	}
	var names []string
	if err := other.BusObject().Call("org.freedesktop.DBus.ListNames", 0).Store(&names); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if !strings.HasPrefix(n, ":") || n == srv.Names()[0] || n == other.Names()[0] {
			continue
		}
		forged := &dbus.Message{Type: dbus.TypeSignal, Headers: map[dbus.HeaderField]dbus.Variant{
			dbus.FieldPath:        dbus.MakeVariant(dbus.ObjectPath("/org/freedesktop/login1")),
			dbus.FieldInterface:   dbus.MakeVariant("org.freedesktop.login1.Manager"),
			dbus.FieldMember:      dbus.MakeVariant("PrepareForSleep"),
			dbus.FieldDestination: dbus.MakeVariant(n),
			dbus.FieldSignature:   dbus.MakeVariant(dbus.SignatureOf(false)),
		}, Body: []any{false}}
		if call := other.Send(forged, nil); call.Err != nil {
			t.Fatal(call.Err)
		}
	}
	// A round trip: the bus has passed the forged signals on before logind's.
	if err := other.BusObject().Call("org.freedesktop.DBus.Peer.Ping", 0).Err; err != nil {
		t.Fatal(err)
	}
	if err := srv.Emit("/org/freedesktop/login1", "org.freedesktop.login1.Manager.PrepareForSleep", true); err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-sleep:
		if !v {
			t.Error("got the forged PrepareForSleep(false) first")
		}
	case <-time.After(waitTimeout):
		t.Fatal("PrepareForSleep never arrived")
	}
}

func TestLogindWithoutBus(t *testing.T) {
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path="+filepath.Join(t.TempDir(), "none"))
	l := drive.NewLogind(nil)
	if l.PrepareForSleep() != nil {
		t.Error("a sleep channel without a bus")
	}
	c, err := l.Inhibit("sleep", "plugvault", "x", "delay")
	if err != nil || c.Close() != nil {
		t.Errorf("Inhibit without a bus: %v", err)
	}
}
