package testbus

import (
	"context"
	"log/slog"
	"testing"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/apitest"
	"github.com/plugvault/plugvault/service/internal/daemon"
	"github.com/plugvault/plugvault/service/internal/polkit"
)

// Env is a running daemon on a private bus.
type Env struct {
	Bus       *apitest.Bus
	Polkit    *FakeAuthority
	Backend   *FakeBackend
	Daemon    *daemon.Daemon
	Conn      *dbus.Conn  // the daemon's connection (with the fd guard)
	Client    *api.Client // a separate client connection
	ClientBus *dbus.Conn  // the client's connection
}

// EnvOptions tunes Start.
type EnvOptions struct {
	// Drives are published before the name is owned.
	Drives []api.DriveStatus
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Bus, when set, is used instead of a new private bus.
	Bus *apitest.Bus
	// RealPolkit skips the fake authority: the test runs the real polkitd (StartPolkitd) on
	// Bus; Env.Polkit is nil.
	RealPolkit bool
	// FDPassing connects the daemon with godbus's own unix transport, which negotiates fd
	// passing, guarded only by daemon.CloseUnixFDs (to test that guard). By default the
	// daemon connects like plugvaultd does, with daemon.ConnectBus (no fd passing).
	FDPassing bool
	// Options, when set, are passed to daemon.New; Authorizer is filled in when nil.
	Options daemon.Options
}

// Start runs a private bus (skipping or, under CI, failing when dbus-daemon is missing), the
// fake polkit authority, and the real daemon objects with a fake backend; it owns the bus
// name and returns a client on its own connection. Everything stops at cleanup.
func Start(t testing.TB, o EnvOptions) *Env {
	t.Helper()
	apitest.RequireTool(t, "dbus-daemon")
	bus := o.Bus
	if bus == nil {
		bus = apitest.StartBus(t, apitest.BusOptions{})
	}
	env := &Env{Bus: bus, Backend: NewFakeBackend()}
	if !o.RealPolkit {
		env.Polkit = StartFakeAuthority(t, bus)
	}
	var conn *dbus.Conn
	var err error
	if o.FDPassing {
		conn, err = dbus.Connect(bus.Address, dbus.WithIncomingInterceptor(daemon.CloseUnixFDs))
	} else {
		conn, err = daemon.ConnectBus(context.Background(), bus.Address)
	}
	if err != nil {
		t.Fatalf("cannot connect the daemon to the private bus: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	env.Conn = conn
	opts := o.Options
	if opts.Version == "" {
		opts.Version = "0.1.0-test"
	}
	if opts.Authorizer == nil {
		opts.Authorizer = polkit.New(conn, o.Logger)
	}
	if opts.Logger == nil {
		opts.Logger = o.Logger
	}
	d, err := daemon.New(conn, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	env.Daemon = d
	env.Backend.Publisher = d
	for _, st := range o.Drives {
		if err := d.AddDrive(st.LuksUUID, st); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Start(env.Backend, env.Backend); err != nil {
		t.Fatal(err)
	}
	env.ClientBus = bus.Conn(t)
	env.Client = api.NewClient(env.ClientBus)
	return env
}

// SampleDrive returns a drive status for tests.
func SampleDrive(uuid, name string) api.DriveStatus {
	return api.DriveStatus{
		Name: name, LuksUUID: uuid, Label: name + "-label", Vendor: "SanDisk", Model: "Ultra",
		Serial: "4C530001" + name, State: api.StateAbsent, EtaSeconds: -1,
	}
}
