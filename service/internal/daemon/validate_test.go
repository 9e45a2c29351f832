package daemon_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/apitest"
	"github.com/plugvault/plugvault/service/internal/daemon"
	"github.com/plugvault/plugvault/service/internal/drive"
	"github.com/plugvault/plugvault/service/internal/testbus"
)

// Known options of the wrong type are InvalidArgument, after authorization and before the
// backend.
func TestWrongOptionTypes(t *testing.T) {
	env := startEnv(t, testbus.EnvOptions{})
	ctx := ctxT(t)
	bad := map[string]api.Options{
		api.MethodEnroll:          {api.OptName: int32(3)},
		api.MethodAdopt:           {api.OptSecretIsPassphrase: "yes"},
		api.MethodForget:          {api.OptRemoveKeyslot: uint32(1)},
		api.MethodSealKeys:        {api.OptNoUserInteraction: "yes"},
		api.MethodUnlock:          {api.OptNoUserInteraction: "true"},
		api.MethodCheckPassphrase: {api.OptNoUserInteraction: "yes"},
		api.MethodBackupNow:       {api.OptNoUserInteraction: int32(1)},
		api.MethodCancel:          {api.OptNoUserInteraction: []string{"x"}},
		api.MethodEject:           {api.OptPowerOff: "false"},
		api.MethodBrowse:          {api.OptNoUserInteraction: "no"},
		api.MethodRestore:         {api.OptOverwrite: "yes"},
		api.MethodVerify:          {api.OptNoUserInteraction: uint64(0)},
	}
	for _, m := range mutatingMethods(t) {
		env.Polkit.Reset()
		env.Backend.Reset()
		err := m.call(ctx, env.Client, api.DrivePath(uuidOne), bad[m.method])
		wantErr(t, m.method, err, api.ErrInvalidArgument)
		if n := len(env.Polkit.Checks()); n != 1 {
			t.Errorf("%s: %d polkit checks, want 1 (authorize first)", m.method, n)
		}
		if calls := env.Backend.Calls(); len(calls) != 0 {
			t.Errorf("%s: backend got %v", m.method, calls)
		}
	}
	// Unknown options are ignored.
	if err := env.Client.BackupNow(ctx, api.DrivePath(uuidOne), api.Options{"future.option": int32(1)}); err != nil {
		t.Errorf("unknown option: %v", err)
	}
}

// Arguments are validated after authorization; bad ones never reach the backend.
func TestArgumentValidation(t *testing.T) {
	env := startEnv(t, testbus.EnvOptions{})
	ctx := ctxT(t)
	c := env.Client
	drive := api.DrivePath(uuidOne)
	dev := blockDevice(t)
	root := filepath.Dir(dev)
	link := filepath.Join(root, "by-id-usb-stick")
	if err := os.Symlink("sdz", link); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "dir"), 0o700); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		call func() error
		want error
	}{
		{"restore bad snapshot", func() error { return c.Restore(ctx, drive, "../../etc", "", "/tmp/x", nil) }, api.ErrInvalidArgument},
		{"restore partial snapshot", func() error { return c.Restore(ctx, drive, "20261126T083100Z.partial", "", "/tmp/x", nil) }, api.ErrInvalidArgument},
		{"restore dotdot path", func() error { return c.Restore(ctx, drive, "20261126T083100Z", "../etc/shadow", "/tmp/x", nil) }, api.ErrInvalidArgument},
		{"restore inner dotdot", func() error { return c.Restore(ctx, drive, "20261126T083100Z", "home/../../x", "/tmp/x", nil) }, api.ErrInvalidArgument},
		{"restore absolute path", func() error { return c.Restore(ctx, drive, "20261126T083100Z", "/etc/shadow", "/tmp/x", nil) }, api.ErrInvalidArgument},
		{"restore relative destination", func() error { return c.Restore(ctx, drive, "20261126T083100Z", "", "tmp/x", nil) }, api.ErrInvalidArgument},
		{"restore unclean destination", func() error { return c.Restore(ctx, drive, "20261126T083100Z", "", "/tmp/../etc", nil) }, api.ErrInvalidArgument},
		{"verify bad snapshot", func() error { _, _, err := c.Verify(ctx, drive, "latest/..", nil); return err }, api.ErrInvalidArgument},
		{"unlock empty passphrase", func() error { return c.Unlock(ctx, drive, nil, nil) }, api.ErrInvalidArgument},
		{"enroll outside /dev", func() error { _, _, err := c.Enroll(ctx, "/tmp/disk.img", []byte("p"), nil); return err }, api.ErrInvalidArgument},
		{"enroll dotdot", func() error { _, _, err := c.Enroll(ctx, root+"/../etc/passwd", []byte("p"), nil); return err }, api.ErrInvalidArgument},
		{"enroll symlink", func() error { _, _, err := c.Enroll(ctx, link, []byte("p"), nil); return err }, api.ErrInvalidArgument},
		{"adopt directory", func() error { _, err := c.Adopt(ctx, root+"/dir", []byte("p"), nil); return err }, api.ErrInvalidArgument},
		{"enroll missing device", func() error { _, _, err := c.Enroll(ctx, root+"/missing", []byte("p"), nil); return err }, api.ErrNotFound},
		{"enroll bad filesystem", func() error {
			_, _, err := c.Enroll(ctx, dev, []byte("p"), api.Options{api.OptFilesystem: "vfat"})
			return err
		}, api.ErrInvalidArgument},
		{"enroll control character in name", func() error {
			_, _, err := c.Enroll(ctx, dev, []byte("p"), api.Options{api.OptName: "a\nb"})
			return err
		}, api.ErrInvalidArgument},
		{"adopt empty secret", func() error { _, err := c.Adopt(ctx, dev, nil, nil); return err }, api.ErrInvalidArgument},
		{"forget unknown drive", func() error { return c.Forget(ctx, api.DrivePath("no-such-drive"), nil) }, api.ErrNotFound},
	}
	for _, tc := range cases {
		env.Polkit.Reset()
		env.Backend.Reset()
		wantErr(t, tc.name, tc.call(), tc.want)
		if n := len(env.Polkit.Checks()); n != 1 {
			t.Errorf("%s: %d polkit checks, want 1 (authorize first)", tc.name, n)
		}
		if calls := env.Backend.Calls(); len(calls) != 0 {
			t.Errorf("%s: backend got %v", tc.name, calls)
		}
	}
}

// The request the backend receives is the validated one.
func TestRestoreRequest(t *testing.T) {
	env := startEnv(t, testbus.EnvOptions{})
	ctx := ctxT(t)
	err := env.Client.Restore(ctx, api.DrivePath(uuidOne), "20261126T083100Z", "home/ann", "/home/ann/out", api.Options{api.OptOverwrite: true})
	if err != nil {
		t.Fatal(err)
	}
	calls := env.Backend.Calls()
	if len(calls) != 1 {
		t.Fatalf("backend calls %v", calls)
	}
	req := calls[0].Args[0].(drive.RestoreRequest)
	if req.Snapshot != "20261126T083100Z" || req.Path != "home/ann" || req.Destination != "/home/ann/out" || !req.Overwrite {
		t.Errorf("request %+v", req)
	}
	if req.Caller.BusName != env.ClientBus.Names()[0] || req.Caller.UID != uint32(os.Getuid()) || req.Caller.PID != uint32(os.Getpid()) {
		t.Errorf("caller %+v, want bus name %s uid %d pid %d", req.Caller, env.ClientBus.Names()[0], os.Getuid(), os.Getpid())
	}
	if req.Caller.GID != uint32(os.Getgid()) {
		t.Errorf("caller gid %d, want %d", req.Caller.GID, os.Getgid())
	}
}

// A device must be the node itself, not a symlink to it nor under a symlinked directory.
func TestValidDevice(t *testing.T) {
	apitest.RequireRoot(t) // mknod
	dir := t.TempDir()
	daemon.SetDevRoot(t, dir)
	disk := filepath.Join(dir, "sdz")
	if err := unix.Mknod(disk, unix.S_IFBLK|0o600, int(unix.Mkdev(7, 200))); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "disk/by-id"), 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "disk/by-id/usb-stick")
	if err := os.Symlink("../../sdz", link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(".", filepath.Join(dir, "loop")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "file"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(dir, "null"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]error{
		disk:                           nil,
		link:                           api.ErrInvalidArgument,
		filepath.Join(dir, "loop/sdz"): api.ErrInvalidArgument,
		filepath.Join(dir, "file"):     api.ErrInvalidArgument,
		filepath.Join(dir, "missing"):  api.ErrNotFound,
		dir + "/../sdz":                api.ErrInvalidArgument,
		"/dev/sdz":                     api.ErrInvalidArgument,
	} {
		err := daemon.ValidDevice(p)
		if want == nil && err != nil || want != nil && !errors.Is(err, want) {
			t.Errorf("validDevice(%q) = %v, want %v", p, err, want)
		}
	}
}

// Properties are read-only: Set is refused on every object and changes nothing.
func TestPropertiesSetRefused(t *testing.T) {
	env := startEnv(t, testbus.EnvOptions{Options: daemon.Options{ReminderDays: 7}})
	ctx := ctxT(t)
	if days, err := env.Client.ReminderDays(ctx); err != nil || days != 7 {
		t.Fatalf("ReminderDays = %d, %v; want 7", days, err)
	}
	for _, p := range []struct {
		path        dbus.ObjectPath
		iface, name string
		value       any
	}{
		{api.ManagerPath, api.ManagerInterface, api.PropReminderDays, uint32(0)},
		{api.ManagerPath, api.ManagerInterface, api.PropVersion, "9.9"},
		{api.DrivePath(uuidOne), api.DriveInterface, api.PropState, "safe-to-remove"},
		{api.DrivePath(uuidOne), api.DriveInterface, api.PropName, "evil"},
	} {
		obj := env.ClientBus.Object(api.BusName, p.path)
		err := obj.CallWithContext(ctx, "org.freedesktop.DBus.Properties.Set", 0, p.iface, p.name, dbus.MakeVariant(p.value)).Err
		var derr dbus.Error
		if !errors.As(err, &derr) || derr.Name != "org.freedesktop.DBus.Error.PropertyReadOnly" {
			t.Errorf("Set %s.%s: %v, want PropertyReadOnly", p.iface, p.name, err)
		}
		v, err := obj.GetProperty(p.iface + "." + p.name)
		if err != nil || v.Value() == p.value {
			t.Errorf("%s.%s is now %v (%v)", p.iface, p.name, v, err)
		}
	}
	if err := env.Daemon.AddDrive(uuidOne, api.DriveStatus{}); err == nil {
		t.Error("AddDrive of a published drive succeeded")
	}
}
