package apitest

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"sort"
	"sync"
	"testing"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/props"
)

// Call is one method call the fake received.
type Call struct {
	Path        dbus.ObjectPath
	Method      string // member name, e.g. "Unlock"
	Args        []any  // the arguments after the sender, options last
	Interactive bool   // the caller allowed interactive authorization
}

// FakeHeaderBackup is what the fakes return for Enroll's header backup when the
// header_backup option is true (a real one is a LUKS header, 16 MiB by default).
var FakeHeaderBackup = []byte("LUKS\xba\xbe fake header backup")

// FakeService stands for plugvaultd in client tests: it owns org.plugvault.PlugVault1 on a
// private bus, serves the contract's objects with the real introspection XML, records every
// call, answers with scripted errors, and lets the test change drive properties. Its
// properties are served by service/api/props, as the daemon's are, so Get, GetAll, Set and
// PropertiesChanged behave the same.
type FakeService struct {
	Conn *dbus.Conn

	mu       sync.Mutex
	calls    []Call
	errs     map[string]error // method -> error to answer with
	results  map[string][]any // method -> extra return values
	drives   map[dbus.ObjectPath]*props.Properties
	mgrProps *props.Properties
	callCh   chan Call
	lastJob  uint64
	holdJobs bool
	jobCh    chan *FakeJob
	// needPass: the passphrase a drive's Browse waits for (see NeedPassphrase).
	needPass map[dbus.ObjectPath]*passWait
}

// passWait is a Browse waiting for Unlock to bring the right passphrase.
type passWait struct {
	want []byte
	ok   chan struct{}
}

// StartFakeService connects to bus, exports the Manager and owns the name. It is stopped at
// cleanup (closing its connection releases the name).
func StartFakeService(t testing.TB, bus *Bus) *FakeService {
	t.Helper()
	conn := bus.Conn(t)
	f := &FakeService{Conn: conn, errs: map[string]error{}, results: map[string][]any{},
		drives: map[dbus.ObjectPath]*props.Properties{}, callCh: make(chan Call, 256), jobCh: make(chan *FakeJob, 16),
		needPass: map[dbus.ObjectPath]*passWait{}}
	if err := conn.ExportMethodTable(f.managerMethods(), api.ManagerPath, api.ManagerInterface); err != nil {
		t.Fatal(err)
	}
	f.mgrProps = props.New(api.ManagerInterface, map[string]any{
		api.PropVersion:      "0.0.0-fake",
		api.PropDrives:       []dbus.ObjectPath{},
		api.PropReminderDays: uint32(7),
	})
	if err := f.mgrProps.Export(conn, api.ManagerPath); err != nil {
		t.Fatal(err)
	}
	f.exportIntrospection(api.ManagerPath)
	reply, err := conn.RequestName(api.BusName, dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("fake service cannot own %s: %v (reply %v)", api.BusName, err, reply)
	}
	return f
}

func (f *FakeService) exportIntrospection(path dbus.ObjectPath) {
	_ = f.Conn.Export(introspect.Introspectable(api.IntrospectXML), path, "org.freedesktop.DBus.Introspectable")
}

// AddDrive exports a drive with the given status and announces it (Drives, DriveAdded).
func (f *FakeService) AddDrive(t testing.TB, st api.DriveStatus) dbus.ObjectPath {
	t.Helper()
	path := api.DrivePath(st.LuksUUID)
	if err := f.Conn.ExportMethodTable(f.driveMethods(path), path, api.DriveInterface); err != nil {
		t.Fatal(err)
	}
	p := props.New(api.DriveInterface, st.Props())
	if err := p.Export(f.Conn, path); err != nil {
		t.Fatal(err)
	}
	f.exportIntrospection(path)
	f.mu.Lock()
	f.drives[path] = p
	paths := f.drivePathsLocked()
	f.mu.Unlock()
	f.setManager(t, api.PropDrives, paths)
	if err := f.Conn.Emit(api.ManagerPath, api.ManagerInterface+"."+api.SignalDriveAdded, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// RemoveDrive unexports a drive and announces it (Drives, DriveRemoved).
func (f *FakeService) RemoveDrive(t testing.TB, path dbus.ObjectPath) {
	t.Helper()
	f.mu.Lock()
	delete(f.drives, path)
	paths := f.drivePathsLocked()
	f.mu.Unlock()
	for _, iface := range []string{api.DriveInterface, props.Interface, "org.freedesktop.DBus.Introspectable"} {
		_ = f.Conn.Export(nil, path, iface)
	}
	f.setManager(t, api.PropDrives, paths)
	if err := f.Conn.Emit(api.ManagerPath, api.ManagerInterface+"."+api.SignalDriveRemoved, path); err != nil {
		t.Fatal(err)
	}
}

func (f *FakeService) drivePathsLocked() []dbus.ObjectPath {
	paths := make([]dbus.ObjectPath, 0, len(f.drives))
	for p := range f.drives {
		paths = append(paths, p)
	}
	sort.Slice(paths, func(i, j int) bool { return paths[i] < paths[j] })
	return paths
}

// SetDrive publishes a new status for a drive: every property that differs is emitted in
// PropertiesChanged, like the daemon does.
func (f *FakeService) SetDrive(t testing.TB, path dbus.ObjectPath, st api.DriveStatus) {
	t.Helper()
	f.mu.Lock()
	p := f.drives[path]
	f.mu.Unlock()
	if p == nil {
		t.Fatalf("fake service has no drive %s", path)
	}
	if err := p.Emit(f.Conn, path, p.Update(st.Props())); err != nil {
		t.Fatal(err)
	}
}

// NeedPassphrase makes the next Browse of drive behave as plugvaultd's does when the keyfile
// cannot open the drive: the drive goes to awaiting-passphrase and the call waits until an
// Unlock brings pass (a wrong one fails with BadPassphrase), then the drive is present again.
func (f *FakeService) NeedPassphrase(drive dbus.ObjectPath, pass []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.needPass[drive] = &passWait{want: append([]byte(nil), pass...), ok: make(chan struct{})}
}

// setState publishes drive's State and StateReason.
func (f *FakeService) setState(drive dbus.ObjectPath, state api.State, reason string) {
	f.mu.Lock()
	p := f.drives[drive]
	f.mu.Unlock()
	if p != nil {
		_ = p.Emit(f.Conn, drive, p.Update(map[string]any{api.PropState: string(state), api.PropStateReason: reason}))
	}
}

// SetReminderDays changes the Manager's ReminderDays property. It panics when the change
// cannot be announced (the fake's connection is gone).
func (f *FakeService) SetReminderDays(days uint32) {
	changed := f.mgrProps.Update(map[string]any{api.PropReminderDays: days})
	if err := f.mgrProps.Emit(f.Conn, api.ManagerPath, changed); err != nil {
		panic("fake service cannot announce ReminderDays: " + err.Error())
	}
}

// setManager changes a Manager property and emits PropertiesChanged when it changed.
func (f *FakeService) setManager(t testing.TB, name string, value any) {
	t.Helper()
	if err := f.mgrProps.Emit(f.Conn, api.ManagerPath, f.mgrProps.Update(map[string]any{name: value})); err != nil {
		t.Fatal(err)
	}
}

// FailNext makes every later call of method answer err (a sentinel of service/api, wrapped
// with a message) until it is set to nil. For Restore and Verify, only authorization errors
// and InvalidArgument fail the call; the job of the call fails with any other error.
func (f *FakeService) FailNext(method string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.errs, method)
		return
	}
	f.errs[method] = err
}

// SetResult sets the return values of a method that returns something (ListSnapshots: a
// []api.Snapshot; Browse: a string; Verify: uint64 and []string, which its job's Completed
// carries; Enroll: an ObjectPath and
// the header backup []byte (default: FakeHeaderBackup when the header_backup option is true);
// Adopt: an ObjectPath).
func (f *FakeService) SetResult(method string, values ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.results[method] = values
}

// Calls returns every call received so far.
func (f *FakeService) Calls() []Call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Call(nil), f.calls...)
}

// CallCh delivers each call as it is received (buffered; tests that ignore it lose nothing but
// the notifications).
func (f *FakeService) CallCh() <-chan Call { return f.callCh }

func (f *FakeService) record(path dbus.ObjectPath, method string, msg dbus.Message, args ...any) *dbus.Error {
	c := Call{Path: path, Method: method, Args: args, Interactive: msg.Flags&dbus.FlagAllowInteractiveAuthorization != 0}
	f.mu.Lock()
	f.calls = append(f.calls, c)
	err := f.errs[method]
	f.mu.Unlock()
	select {
	case f.callCh <- c:
	default:
	}
	return api.ToDBusError(err)
}

// failure turns record's answer back into a Go error.
func (f *FakeService) failure(derr *dbus.Error) error {
	if derr == nil {
		return nil
	}
	return api.FromDBusError(*derr)
}

func (f *FakeService) result(method string, i int, def any) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r := f.results[method]; i < len(r) {
		return r[i]
	}
	return def
}

func (f *FakeService) managerMethods() map[string]any {
	p := api.ManagerPath
	return map[string]any{
		api.MethodListDrives: func(msg dbus.Message, opts map[string]dbus.Variant) ([]dbus.ObjectPath, *dbus.Error) {
			if err := f.record(p, api.MethodListDrives, msg, opts); err != nil {
				return nil, err
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.drivePathsLocked(), nil
		},
		api.MethodEnroll: func(msg dbus.Message, device string, pass []byte, opts map[string]dbus.Variant) (dbus.ObjectPath, string, *dbus.Error) {
			if err := f.record(p, api.MethodEnroll, msg, device, append([]byte(nil), pass...), opts); err != nil {
				return "", "", err
			}
			var header []byte
			if v, ok := opts[api.OptHeaderBackup]; ok && v.Value() == true {
				header = FakeHeaderBackup
			}
			return f.result(api.MethodEnroll, 0, api.DrivePath("enrolled")).(dbus.ObjectPath),
				base64.StdEncoding.EncodeToString(f.result(api.MethodEnroll, 1, header).([]byte)), nil
		},
		api.MethodAdopt: func(msg dbus.Message, device string, secret []byte, opts map[string]dbus.Variant) (dbus.ObjectPath, *dbus.Error) {
			if err := f.record(p, api.MethodAdopt, msg, device, append([]byte(nil), secret...), opts); err != nil {
				return "", err
			}
			return f.result(api.MethodAdopt, 0, api.DrivePath("adopted")).(dbus.ObjectPath), nil
		},
		api.MethodForget: func(msg dbus.Message, drive dbus.ObjectPath, opts map[string]dbus.Variant) *dbus.Error {
			return f.record(p, api.MethodForget, msg, drive, opts)
		},
		api.MethodSealKeys: func(msg dbus.Message, opts map[string]dbus.Variant) ([]string, *dbus.Error) {
			if err := f.record(p, api.MethodSealKeys, msg, opts); err != nil {
				return nil, err
			}
			return f.result(api.MethodSealKeys, 0, []string{}).([]string), nil
		},
	}
}

func (f *FakeService) driveMethods(p dbus.ObjectPath) map[string]any {
	simple := func(method string) any {
		return func(msg dbus.Message, opts map[string]dbus.Variant) *dbus.Error {
			return f.record(p, method, msg, opts)
		}
	}
	return map[string]any{
		api.MethodUnlock: func(msg dbus.Message, pass []byte, opts map[string]dbus.Variant) *dbus.Error {
			if err := f.record(p, api.MethodUnlock, msg, append([]byte(nil), pass...), opts); err != nil {
				return err
			}
			f.mu.Lock()
			w := f.needPass[p]
			f.mu.Unlock()
			switch {
			case w == nil:
				return nil
			case !bytes.Equal(pass, w.want):
				f.setState(p, api.StateAwaitingPassphrase, "The passphrase was wrong — try again")
				return api.ToDBusError(fmt.Errorf("cannot unlock: the passphrase is wrong: %w", api.ErrBadPassphrase))
			}
			f.mu.Lock()
			delete(f.needPass, p)
			f.mu.Unlock()
			close(w.ok)
			return nil
		},
		api.MethodCheckPassphrase: func(msg dbus.Message, pass []byte, opts map[string]dbus.Variant) *dbus.Error {
			return f.record(p, api.MethodCheckPassphrase, msg, append([]byte(nil), pass...), opts)
		},
		api.MethodBackupNow: simple(api.MethodBackupNow),
		api.MethodCancel:    simple(api.MethodCancel),
		api.MethodEject:     simple(api.MethodEject),
		api.MethodListSnapshots: func(msg dbus.Message, opts map[string]dbus.Variant) ([]api.Snapshot, *dbus.Error) {
			if err := f.record(p, api.MethodListSnapshots, msg, opts); err != nil {
				return nil, err
			}
			return f.result(api.MethodListSnapshots, 0, []api.Snapshot{}).([]api.Snapshot), nil
		},
		api.MethodBrowse: func(msg dbus.Message, opts map[string]dbus.Variant) (string, *dbus.Error) {
			if err := f.record(p, api.MethodBrowse, msg, opts); err != nil {
				return "", err
			}
			f.mu.Lock()
			w := f.needPass[p]
			f.mu.Unlock()
			if w != nil {
				f.setState(p, api.StateAwaitingPassphrase, "The keyfile is missing — enter the passphrase")
				<-w.ok
				f.setState(p, api.StatePresent, "Open for browsing")
			}
			return f.result(api.MethodBrowse, 0, "/run/plugvault/browse/fake").(string), nil
		},
		api.MethodRestore: func(msg dbus.Message, snap, path, dest string, opts map[string]dbus.Variant) (dbus.ObjectPath, *dbus.Error) {
			return f.startJob(p, api.OperationRestore, api.MethodRestore, f.failure(f.record(p, api.MethodRestore, msg, snap, path, dest, opts)))
		},
		api.MethodVerify: func(msg dbus.Message, snap string, opts map[string]dbus.Variant) (dbus.ObjectPath, *dbus.Error) {
			return f.startJob(p, api.OperationVerify, api.MethodVerify, f.failure(f.record(p, api.MethodVerify, msg, snap, opts)))
		},
	}
}

// String is for test failure messages.
func (c Call) String() string { return fmt.Sprintf("%s.%s%v", c.Path, c.Method, c.Args) }
