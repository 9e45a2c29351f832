package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/props"
	"github.com/plugvault/plugvault/service/internal/drive"
	"github.com/plugvault/plugvault/service/internal/polkit"
	"github.com/plugvault/plugvault/service/internal/users"
)

// introspectableInterface is the standard interface every object serves besides its own
// and props.Interface.
const introspectableInterface = "org.freedesktop.DBus.Introspectable"

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
	Authorizer   polkit.Authorizer
	Logger       *slog.Logger

	// Zero means the default above.
	AuthTimeout            time.Duration
	InteractiveAuthTimeout time.Duration
	CallTimeout            time.Duration
}

// Daemon serves the Manager and the Drive objects on conn and implements drive.Publisher.
type Daemon struct {
	conn     *dbus.Conn
	opts     Options
	log      *slog.Logger
	ctx      context.Context // root of every call's context; cancelled by Close
	cancel   context.CancelFunc
	mgrProps *props.Properties
	intro    map[string]string // introspection data by interface

	// Set by Start before any object is exported: no call can reach them earlier.
	backend  Backend
	enroller Enroller
	started  bool // objects are exported; guarded by mu

	mu     sync.Mutex // guards drives and serialises property updates with their signals
	drives map[string]*driveEntry
	closed bool
}

// driveEntry is one published drive.
type driveEntry struct {
	uuid   string
	path   dbus.ObjectPath
	status api.DriveStatus // as published
	props  *props.Properties
}

var _ drive.Publisher = (*Daemon)(nil)

// New prepares the Manager object on conn; nothing is exported yet. Drives known at start-up
// are added with AddDrive (the drive manager, built with the Daemon as its Publisher, does
// that); Start then exports every object and owns the bus name.
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
	d.ctx, d.cancel = context.WithCancel(context.Background())
	d.mgrProps = props.New(api.ManagerInterface, map[string]any{
		api.PropVersion:      opts.Version,
		api.PropDrives:       []dbus.ObjectPath{},
		api.PropReminderDays: opts.ReminderDays,
	})
	return d, nil
}

// exportObject exports obj, its properties and its introspection data (from the contract) at
// path.
func (d *Daemon) exportObject(path dbus.ObjectPath, iface string, obj any, p *props.Properties) error {
	if err := d.conn.Export(obj, path, iface); err != nil {
		return fmt.Errorf("cannot export %s: %w", path, err)
	}
	if err := p.Export(d.conn, path); err != nil {
		return fmt.Errorf("cannot export %s: %w", path, err)
	}
	if err := d.conn.Export(introspect.Introspectable(d.intro[iface]), path, introspectableInterface); err != nil {
		return fmt.Errorf("cannot export %s: %w", path, err)
	}
	return nil
}

func (d *Daemon) unexportObject(path dbus.ObjectPath, iface string) {
	for _, i := range []string{iface, props.Interface, introspectableInterface} {
		_ = d.conn.Export(nil, path, i)
	}
}

// Start serves the drive methods with backend and the configuration methods with enroller:
// it exports the Manager and every drive added so far, then owns the bus name. With
// Type=dbus, owning the name tells systemd the service is ready. Until Start nothing is
// exported, so no call can arrive before the backends are there.
func (d *Daemon) Start(backend Backend, enroller Enroller) error {
	if backend == nil || enroller == nil {
		return errors.New("internal error: daemon.Start needs a backend and an enroller")
	}
	d.mu.Lock()
	if d.started || d.closed {
		d.mu.Unlock()
		return errors.New("internal error: daemon.Start called twice or after Close")
	}
	d.backend, d.enroller = backend, enroller
	if err := d.exportObject(api.ManagerPath, api.ManagerInterface, &Manager{d: d}, d.mgrProps); err != nil {
		d.mu.Unlock()
		return err
	}
	d.started = true
	for _, e := range d.drives {
		if err := d.exportDriveLocked(e); err != nil {
			d.mu.Unlock()
			return err
		}
	}
	d.mgrProps.Update(map[string]any{api.PropDrives: d.drivePathsLocked()})
	d.mu.Unlock()
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

// exportDriveLocked exports e's Drive object.
func (d *Daemon) exportDriveLocked(e *driveEntry) error {
	if err := d.exportObject(e.path, api.DriveInterface, &Drive{d: d, uuid: e.uuid}, e.props); err != nil {
		d.unexportObject(e.path, api.DriveInterface)
		return err
	}
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
	started := d.started
	d.mu.Unlock()
	if !started {
		return
	}
	_, _ = d.conn.ReleaseName(api.BusName)
	for _, e := range entries {
		d.unexportObject(e.path, api.DriveInterface)
	}
	d.unexportObject(api.ManagerPath, api.ManagerInterface)
}

// AddDrive implements drive.Publisher: it exports a Drive object for the drive and announces it
// (Drives changes, DriveAdded). Before Start it only records the drive.
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
	e := &driveEntry{uuid: uuid, path: path, status: st, props: props.New(api.DriveInterface, st.Props())}
	if !d.started {
		d.drives[uuid] = e
		return nil
	}
	if err := d.exportDriveLocked(e); err != nil {
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

// UpdateDrive implements drive.Publisher: it compares st with what was published and emits one
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
	e.status = st
	changed := e.props.Update(st.Props())
	if !d.started {
		return
	}
	if err := e.props.Emit(d.conn, e.path, changed); err != nil {
		d.log.Warn("cannot emit PropertiesChanged", "drive", uuid, "error", err)
	}
}

// RemoveDrive implements drive.Publisher: it unexports the drive and announces it (Drives changes,
// DriveRemoved). Removing a drive that is not published does nothing.
func (d *Daemon) RemoveDrive(uuid string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.drives[uuid]
	if e == nil {
		return
	}
	delete(d.drives, uuid)
	if !d.started {
		return
	}
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
	changed := d.mgrProps.Update(map[string]any{api.PropDrives: d.drivePathsLocked()})
	if err := d.mgrProps.Emit(d.conn, api.ManagerPath, changed); err != nil {
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
