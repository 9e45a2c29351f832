package daemon_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/daemon"
	"github.com/plugvault/plugvault/service/internal/testbus"
)

const (
	uuidOne = "6e1f0c0a-7d2b-4c55-9a8e-0f1e2d3c4b5a"
	uuidTwo = "a3b4c5d6-0000-4111-8222-333344445555"
)

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// startEnv starts the daemon with two drives.
func startEnv(t *testing.T, o testbus.EnvOptions) *testbus.Env {
	t.Helper()
	if o.Drives == nil {
		o.Drives = []api.DriveStatus{testbus.SampleDrive(uuidOne, "work"), testbus.SampleDrive(uuidTwo, "home")}
	}
	return testbus.Start(t, o)
}

// blockDevice returns a device that Enroll and Adopt accept: a stand-in under a temporary
// device root (daemon.FakeBlockDevice). TestValidDevice checks the real rules with real nodes.
func blockDevice(t *testing.T) string {
	t.Helper()
	return daemon.FakeBlockDevice(t)
}

// mutating is every method that needs authorization, with a call that passes validation.
type mutating struct {
	iface, method string
	call          func(ctx context.Context, c *api.Client, drive dbus.ObjectPath, opts api.Options) error
}

func mutatingMethods(t *testing.T) []mutating {
	dev := blockDevice(t)
	return []mutating{
		{api.ManagerInterface, api.MethodEnroll, func(ctx context.Context, c *api.Client, _ dbus.ObjectPath, o api.Options) error {
			_, _, err := c.Enroll(ctx, dev, []byte("correct horse"), o)
			return err
		}},
		{api.ManagerInterface, api.MethodAdopt, func(ctx context.Context, c *api.Client, _ dbus.ObjectPath, o api.Options) error {
			_, err := c.Adopt(ctx, dev, []byte("keyfile bytes"), o)
			return err
		}},
		{api.ManagerInterface, api.MethodForget, func(ctx context.Context, c *api.Client, d dbus.ObjectPath, o api.Options) error {
			return c.Forget(ctx, d, o)
		}},
		{api.ManagerInterface, api.MethodSealKeys, func(ctx context.Context, c *api.Client, _ dbus.ObjectPath, o api.Options) error {
			_, err := c.SealKeys(ctx, o)
			return err
		}},
		{api.DriveInterface, api.MethodUnlock, func(ctx context.Context, c *api.Client, d dbus.ObjectPath, o api.Options) error {
			return c.Unlock(ctx, d, []byte("pass phrase"), o)
		}},
		{api.DriveInterface, api.MethodCheckPassphrase, func(ctx context.Context, c *api.Client, d dbus.ObjectPath, o api.Options) error {
			return c.CheckPassphrase(ctx, d, []byte("pass phrase"), o)
		}},
		{api.DriveInterface, api.MethodBackupNow, func(ctx context.Context, c *api.Client, d dbus.ObjectPath, o api.Options) error {
			return c.BackupNow(ctx, d, o)
		}},
		{api.DriveInterface, api.MethodCancel, func(ctx context.Context, c *api.Client, d dbus.ObjectPath, o api.Options) error {
			return c.Cancel(ctx, d, o)
		}},
		{api.DriveInterface, api.MethodEject, func(ctx context.Context, c *api.Client, d dbus.ObjectPath, o api.Options) error {
			return c.Eject(ctx, d, o)
		}},
		{api.DriveInterface, api.MethodBrowse, func(ctx context.Context, c *api.Client, d dbus.ObjectPath, o api.Options) error {
			_, err := c.Browse(ctx, d, o)
			return err
		}},
		{api.DriveInterface, api.MethodRestore, func(ctx context.Context, c *api.Client, d dbus.ObjectPath, o api.Options) error {
			return c.Restore(ctx, d, "20261126T083100Z", "home/ann/notes.txt", "/home/ann/restored", o)
		}},
		{api.DriveInterface, api.MethodVerify, func(ctx context.Context, c *api.Client, d dbus.ObjectPath, o api.Options) error {
			_, _, err := c.Verify(ctx, d, "", o)
			return err
		}},
	}
}

// state is everything a client can see, to prove a call changed nothing.
type state struct {
	drives   []dbus.ObjectPath
	statuses map[dbus.ObjectPath]api.DriveStatus
}

func readState(t *testing.T, ctx context.Context, c *api.Client) state {
	t.Helper()
	drives, err := c.ListDrives(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s := state{drives: drives, statuses: map[dbus.ObjectPath]api.DriveStatus{}}
	for _, d := range drives {
		st, err := c.DriveStatus(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		s.statuses[d] = st
	}
	return s
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Errorf("%s: got error %v, want success", what, err)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Errorf("%s: got error %v, want %v (%s)", what, err, want, api.ErrorName(want))
	}
}
