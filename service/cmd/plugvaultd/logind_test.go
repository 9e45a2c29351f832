package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api/apitest"
	"github.com/plugvault/plugvault/service/internal/daemon"
)

// TestMain doubles as apitest.FloodFDsAsNobody's helper.
func TestMain(m *testing.M) {
	apitest.FDFloodMain()
	os.Exit(m.Run())
}

// waitTimeout bounds every wait in these tests; it only decides how long a broken test hangs.
const waitTimeout = 10 * time.Second

// fakeLogin1 stands for systemd-logind's org.freedesktop.login1.Manager on a private bus: it
// records Inhibit calls and hands out the write end of a pipe, like logind's inhibitor FIFO.
type fakeLogin1 struct {
	mu    sync.Mutex
	calls [][4]string
	ends  []*os.File // our ends: EOF once the client closed its fd
	keep  []*os.File
	// hold, when set, is called with the caller's unique name before the reply goes out.
	hold func(caller string)
}

func (f *fakeLogin1) Inhibit(caller dbus.Sender, what, who, why, mode string) (dbus.UnixFD, *dbus.Error) {
	if f.hold != nil {
		f.hold(string(caller))
	}
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

	conn := daemonConn(t, bus.Address)
	// No logind on the bus: nothing, and the manager falls back to no inhibitor.
	if l := newLogind(conn, bus.Address, nil); l != nil {
		t.Fatalf("without logind: %v, want nil", l)
	}

	srv := bus.Conn(t)
	fake := &fakeLogin1{}
	if err := srv.Export(fake, "/org/freedesktop/login1", "org.freedesktop.login1.Manager"); err != nil {
		t.Fatal(err)
	}
	if reply, err := srv.RequestName("org.freedesktop.login1", dbus.NameFlagDoNotQueue); err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("cannot own login1: %v %v", reply, err)
	}
	l := newLogind(conn, bus.Address, nil)
	if l == nil {
		t.Fatal("logind on the bus, but newLogind returned nil")
	}
	sleep := l.PrepareForSleep()
	c, err := l.Inhibit("sleep", "plugvault", "Backing up to A", "delay")
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
	if len(calls) != 1 || calls[0] != [4]string{"sleep", "plugvault", "Backing up to A", "delay"} {
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
	if l := newLogind(nil, "unix:path="+filepath.Join(t.TempDir(), "none"), nil); l != nil {
		t.Errorf("without a bus: %v, want nil", l)
	}
}

// daemonConn is plugvaultd's connection to the bus (daemon.ConnectBus).
func daemonConn(t *testing.T, address string) *dbus.Conn {
	t.Helper()
	conn, err := daemon.ConnectBus(context.Background(), address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// Under the stock system bus policy any user may send a unicast signal, with fds, to any
// connection. uid 65534 sends 300 signals carrying an fd, one carrying an array of fds and one
// a dict of fds to each connection the daemon's logind client has: the daemon's own, where
// PrepareForSleep arrives, and the inhibitor's, while it waits for logind's reply. The
// process's fd count stays flat, nothing panics, the inhibitor is taken and released, and
// logind's PrepareForSleep still arrives.
func TestLogindIgnoresFDsFromOtherUsers(t *testing.T) {
	apitest.RequireRoot(t) // the sender runs as another uid
	apitest.RequireTool(t, "dbus-daemon")
	bus := apitest.StartBus(t, apitest.BusOptions{Policy: apitest.StockSystemPolicy(t) +
		`<policy user="root"><allow own="org.freedesktop.login1"/><allow send_destination="org.freedesktop.login1"/></policy>`})
	if err := os.Chmod(bus.Dir, 0o755); err != nil { // the socket's directory, for uid 65534
		t.Fatal(err)
	}
	helper := apitest.UnprivilegedCopy(t)
	const floods = 300

	srv := bus.Conn(t)
	callers, proceed := make(chan string, 1), make(chan struct{})
	fake := &fakeLogin1{hold: func(caller string) { callers <- caller; <-proceed }}
	if err := srv.Export(fake, "/org/freedesktop/login1", "org.freedesktop.login1.Manager"); err != nil {
		t.Fatal(err)
	}
	if reply, err := srv.RequestName("org.freedesktop.login1", dbus.NameFlagDoNotQueue); err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("cannot own login1: %v %v", reply, err)
	}
	conn := daemonConn(t, bus.Address)
	l := newLogind(conn, bus.Address, nil)
	sleep := l.PrepareForSleep()
	before := apitest.OpenFDs(t)

	// The daemon's connection.
	apitest.FloodFDsAsNobody(t, helper, bus.Address, conn.Names()[0], floods)
	// logind's signal comes after the flood: once it is in, the flood has been read.
	if err := srv.Emit("/org/freedesktop/login1", "org.freedesktop.login1.Manager.PrepareForSleep", true); err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-sleep:
		if !v {
			t.Error("PrepareForSleep(false), want true")
		}
	case <-time.After(waitTimeout):
		t.Fatal("PrepareForSleep never arrived")
	}
	// Not equality: the runtime may hold a transient fd (a pidfd of the helper) at either count.
	if after := apitest.OpenFDs(t); after > before {
		t.Errorf("%d open fds after %d signals with fds to the daemon's connection, %d before", after, floods, before)
	}

	// The inhibitor's connection, flooded while logind holds its reply back.
	type result struct {
		c   io.Closer
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := l.Inhibit("sleep", "plugvault", "Backing up to A", "delay")
		done <- result{c, err}
	}()
	var caller string
	select {
	case caller = <-callers:
	case <-time.After(waitTimeout):
		t.Fatal("Inhibit never reached logind")
	}
	apitest.FloodFDsAsNobody(t, helper, bus.Address, caller, floods)
	close(proceed)
	var res result
	select {
	case res = <-done:
	case <-time.After(inhibitTimeout + waitTimeout):
		t.Fatal("Inhibit did not return")
	}
	if res.err != nil {
		t.Fatalf("Inhibit after a flood: %v", res.err)
	}
	fake.mu.Lock()
	end := fake.ends[0]
	for _, w := range fake.keep {
		w.Close()
	}
	fake.keep = nil
	fake.mu.Unlock()
	if err := res.c.Close(); err != nil {
		t.Fatal(err)
	}
	_ = end.SetReadDeadline(time.Now().Add(waitTimeout))
	if n, err := end.Read(make([]byte, 1)); n != 0 || err == nil || os.IsTimeout(err) {
		t.Errorf("inhibitor not released: %d %v", n, err)
	}
	end.Close()
	if after := apitest.OpenFDs(t); after > before {
		t.Errorf("%d open fds after %d signals with fds to the inhibitor's connection, %d before", after, floods, before)
	}
}

// refusingLogin1 stands for a logind that refuses every inhibitor lock.
type refusingLogin1 struct{}

func (refusingLogin1) Inhibit(what, who, why, mode string) (dbus.UnixFD, *dbus.Error) {
	return -1, dbus.NewError("org.freedesktop.DBus.Error.AccessDenied", []any{"refused for the test"})
}

// Inhibit reports logind's refusal, and the bus's when logind is gone, as errors.
func TestLogindInhibitErrors(t *testing.T) {
	apitest.RequireTool(t, "dbus-daemon")
	bus := apitest.StartBus(t, apitest.BusOptions{})
	srv := bus.Conn(t)
	if err := srv.Export(refusingLogin1{}, "/org/freedesktop/login1", "org.freedesktop.login1.Manager"); err != nil {
		t.Fatal(err)
	}
	if reply, err := srv.RequestName("org.freedesktop.login1", dbus.NameFlagDoNotQueue); err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("cannot own login1: %v %v", reply, err)
	}
	l := newLogind(daemonConn(t, bus.Address), bus.Address, nil)
	if c, err := l.Inhibit("sleep", "plugvault", "x", "delay"); err == nil || !strings.Contains(err.Error(), "refused for the test") {
		t.Errorf("Inhibit refused by logind = %v, %v", c, err)
	}
	if _, err := srv.ReleaseName("org.freedesktop.login1"); err != nil {
		t.Fatal(err)
	}
	if c, err := l.Inhibit("sleep", "plugvault", "x", "delay"); err == nil || !strings.Contains(err.Error(), "NameHasNoOwner") {
		t.Errorf("Inhibit without logind = %v, %v", c, err)
	}
}
