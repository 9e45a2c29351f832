package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/polkit"
	"github.com/plugvault/plugvault/service/internal/users"
)

// Standard D-Bus interfaces every object serves.
const (
	propertiesInterface     = "org.freedesktop.DBus.Properties"
	introspectableInterface = "org.freedesktop.DBus.Introspectable"
)

// Default time limits of a call. godbus hands handlers no context, so each call gets one
// derived from the daemon's root context.
const (
	// DefaultAuthTimeout bounds a polkit check that may not ask the user.
	DefaultAuthTimeout = 25 * time.Second
	// DefaultInteractiveAuthTimeout bounds a polkit check that may show a dialog: a person
	// has to read it and type a password.
	DefaultInteractiveAuthTimeout = 5 * time.Minute
	// DefaultCallTimeout bounds the work a call delegates (Restore and Verify read a whole
	// snapshot, Enroll formats a drive).
	DefaultCallTimeout = 2 * time.Hour
)

// Options configures New.
type Options struct {
	Version      string // the Version property
	ReminderDays uint32 // the ReminderDays property
	// Backend may be nil when it can only be built after the Daemon (the drive manager
	// publishes through it): SetBackends provides it before Start. Until then drive methods
	// fail (after authorization) with Failed "plugvaultd is still starting".
	Backend Backend
	// Enroller may be nil: Enroll, Adopt and Forget then fail (after authorization) with
	// Failed "enrolling is not available yet".
	Enroller   Enroller
	Authorizer polkit.Authorizer
	Logger     *slog.Logger

	// Zero means the default above.
	AuthTimeout            time.Duration
	InteractiveAuthTimeout time.Duration
	CallTimeout            time.Duration
}

// Daemon serves the Manager and the Drive objects on conn and implements Publisher.
type Daemon struct {
	conn     *dbus.Conn
	opts     Options
	log      *slog.Logger
	ctx      context.Context // root of every call's context; cancelled by Close
	cancel   context.CancelFunc
	mgrProps *properties
	intro    map[string]string // introspection data by interface

	backend  atomic.Pointer[Backend]  // see SetBackends
	enroller atomic.Pointer[Enroller] // nil: enrolling is not available

	mu     sync.Mutex // guards drives and serialises property updates with their signals
	drives map[string]*driveEntry
	closed bool
}

// driveEntry is one published drive.
type driveEntry struct {
	uuid   string
	path   dbus.ObjectPath
	status api.DriveStatus // as published
	props  *properties
}

var _ Publisher = (*Daemon)(nil)

// New exports the Manager on conn. Drives are added with AddDrive; Start then owns the bus name.
func New(conn *dbus.Conn, opts Options) (*Daemon, error) {
	if conn == nil || opts.Authorizer == nil {
		return nil, errors.New("internal error: daemon.New needs a connection and an authorizer")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.AuthTimeout <= 0 {
		opts.AuthTimeout = DefaultAuthTimeout
	}
	if opts.InteractiveAuthTimeout <= 0 {
		opts.InteractiveAuthTimeout = DefaultInteractiveAuthTimeout
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = DefaultCallTimeout
	}
	intro, err := introspection()
	if err != nil {
		return nil, err
	}
	d := &Daemon{conn: conn, opts: opts, log: opts.Logger, drives: map[string]*driveEntry{}, intro: intro}
	d.SetBackends(opts.Backend, opts.Enroller)
	d.ctx, d.cancel = context.WithCancel(context.Background())
	d.mgrProps = newProperties(api.ManagerInterface, map[string]any{
		api.PropVersion:      opts.Version,
		api.PropDrives:       []dbus.ObjectPath{},
		api.PropReminderDays: opts.ReminderDays,
	})
	if err := d.exportObject(api.ManagerPath, api.ManagerInterface, &Manager{d: d}, d.mgrProps); err != nil {
		d.cancel()
		return nil, err
	}
	return d, nil
}

// SetBackends sets the Backend and the Enroller (nil: not available). main calls it once the
// drive manager, which publishes through the Daemon, exists, and before Start.
func (d *Daemon) SetBackends(b Backend, e Enroller) {
	if b != nil {
		d.backend.Store(&b)
	}
	if e != nil {
		d.enroller.Store(&e)
	}
}

// currentBackend returns the Backend, or one that answers that the daemon is starting.
func (d *Daemon) currentBackend() Backend {
	if b := d.backend.Load(); b != nil {
		return *b
	}
	return startingBackend{}
}

// currentEnroller returns the Enroller, or nil.
func (d *Daemon) currentEnroller() Enroller {
	if e := d.enroller.Load(); e != nil {
		return *e
	}
	return nil
}

// exportObject exports obj, its properties and its introspection data (from the contract) at
// path.
func (d *Daemon) exportObject(path dbus.ObjectPath, iface string, obj any, props *properties) error {
	if err := d.conn.Export(obj, path, iface); err != nil {
		return fmt.Errorf("cannot export %s: %w", path, err)
	}
	if err := d.conn.Export(props, path, propertiesInterface); err != nil {
		return fmt.Errorf("cannot export %s: %w", path, err)
	}
	if err := d.conn.Export(introspect.Introspectable(d.intro[iface]), path, introspectableInterface); err != nil {
		return fmt.Errorf("cannot export %s: %w", path, err)
	}
	return nil
}

func (d *Daemon) unexportObject(path dbus.ObjectPath, iface string) {
	for _, i := range []string{iface, propertiesInterface, introspectableInterface} {
		_ = d.conn.Export(nil, path, i)
	}
}

// Start owns the bus name. Call it after the drives known at startup have been added: with
// Type=dbus, owning the name tells systemd the service is ready.
func (d *Daemon) Start() error {
	reply, err := d.conn.RequestName(api.BusName, dbus.NameFlagDoNotQueue)
	if err != nil {
		return fmt.Errorf("cannot own %s: %w", api.BusName, err)
	}
	if reply != dbus.RequestNameReplyPrimaryOwner {
		return fmt.Errorf("cannot own %s: another process owns it", api.BusName)
	}
	d.log.Info("serving on the bus", "name", api.BusName)
	return nil
}

// Close cancels the calls in progress, releases the name and unexports every object. The
// connection stays open (the caller owns it).
func (d *Daemon) Close() {
	d.cancel()
	d.mu.Lock()
	d.closed = true
	entries := make([]*driveEntry, 0, len(d.drives))
	for _, e := range d.drives {
		entries = append(entries, e)
	}
	d.drives = map[string]*driveEntry{}
	d.mu.Unlock()
	_, _ = d.conn.ReleaseName(api.BusName)
	for _, e := range entries {
		d.unexportObject(e.path, api.DriveInterface)
	}
	d.unexportObject(api.ManagerPath, api.ManagerInterface)
}

// AddDrive implements Publisher: it exports a Drive object for the drive and announces it
// (Drives changes, DriveAdded).
func (d *Daemon) AddDrive(uuid string, st api.DriveStatus) error {
	if uuid == "" {
		return errors.New("internal error: cannot publish a drive without a LUKS UUID")
	}
	st.LuksUUID = uuid
	path := api.DrivePath(uuid)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errors.New("cannot publish a drive: the daemon is shutting down")
	}
	for _, e := range d.drives {
		if e.path == path {
			return fmt.Errorf("cannot publish drive %s: %s is already published", uuid, path)
		}
	}
	e := &driveEntry{uuid: uuid, path: path, status: st, props: newProperties(api.DriveInterface, st.Props())}
	if err := d.exportObject(path, api.DriveInterface, &Drive{d: d, uuid: uuid}, e.props); err != nil {
		d.unexportObject(path, api.DriveInterface)
		return err
	}
	d.drives[uuid] = e
	d.publishDrivesLocked()
	if err := d.conn.Emit(api.ManagerPath, api.ManagerInterface+"."+api.SignalDriveAdded, path); err != nil {
		d.log.Warn("cannot announce a drive", "drive", uuid, "error", err)
	}
	d.log.Info("drive published", "drive", uuid, "path", string(path))
	return nil
}

// UpdateDrive implements Publisher: it compares st with what was published and emits one
// PropertiesChanged carrying every property that changed (none when nothing did).
func (d *Daemon) UpdateDrive(uuid string, st api.DriveStatus) {
	st.LuksUUID = uuid
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.drives[uuid]
	if e == nil {
		d.log.Debug("update of a drive that is not published", "drive", uuid)
		return
	}
	old := e.status.Props()
	changed := map[string]dbus.Variant{}
	for k, v := range st.Props() {
		if old[k] != v {
			changed[k] = dbus.MakeVariant(v)
		}
	}
	e.status = st
	if len(changed) == 0 {
		return
	}
	e.props.update(changed)
	if err := d.conn.Emit(e.path, propertiesInterface+".PropertiesChanged", api.DriveInterface, changed, []string{}); err != nil {
		d.log.Warn("cannot emit PropertiesChanged", "drive", uuid, "error", err)
	}
}

// RemoveDrive implements Publisher: it unexports the drive and announces it (Drives changes,
// DriveRemoved). Removing a drive that is not published does nothing.
func (d *Daemon) RemoveDrive(uuid string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.drives[uuid]
	if e == nil {
		return
	}
	delete(d.drives, uuid)
	d.unexportObject(e.path, api.DriveInterface)
	d.publishDrivesLocked()
	if err := d.conn.Emit(api.ManagerPath, api.ManagerInterface+"."+api.SignalDriveRemoved, e.path); err != nil {
		d.log.Warn("cannot announce a removed drive", "drive", uuid, "error", err)
	}
	d.log.Info("drive unpublished", "drive", uuid)
}

// drivePathsLocked returns the sorted object paths of every drive.
func (d *Daemon) drivePathsLocked() []dbus.ObjectPath {
	paths := make([]dbus.ObjectPath, 0, len(d.drives))
	for _, e := range d.drives {
		paths = append(paths, e.path)
	}
	sort.Slice(paths, func(i, j int) bool { return paths[i] < paths[j] })
	return paths
}

func (d *Daemon) publishDrivesLocked() {
	paths := d.drivePathsLocked()
	changed := map[string]dbus.Variant{api.PropDrives: dbus.MakeVariant(paths)}
	d.mgrProps.update(changed)
	if err := d.conn.Emit(api.ManagerPath, propertiesInterface+".PropertiesChanged", api.ManagerInterface, changed, []string{}); err != nil {
		d.log.Warn("cannot emit PropertiesChanged", "error", err)
	}
}

// drive returns a copy of the published status of the drive, or false.
func (d *Daemon) drive(uuid string) (api.DriveStatus, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.drives[uuid]
	if e == nil {
		return api.DriveStatus{}, false
	}
	return e.status, true
}

// driveByPath returns the UUID and status of the drive published at path, or false.
func (d *Daemon) driveByPath(path dbus.ObjectPath) (string, api.DriveStatus, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, e := range d.drives {
		if e.path == path {
			return e.uuid, e.status, true
		}
	}
	return "", api.DriveStatus{}, false
}

// uidOf resolves a run_as user name to its uid through NSS; false when it cannot (an unknown
// user is nobody's drive: only the second polkit check lets anyone at it).
func (d *Daemon) uidOf(ctx context.Context, name string) (uint32, bool) {
	if name == "root" {
		return 0, true
	}
	u, err := users.Default.Lookup(ctx, name)
	if err != nil {
		d.log.Warn("cannot resolve a drive's run_as user", "user", name, "error", err)
		return 0, false
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	return uint32(uid), err == nil
}

// callContext is the context of a call that needs no authorization.
func (d *Daemon) callContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(d.ctx, d.opts.CallTimeout)
}
