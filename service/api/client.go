package api

import (
	"context"
	"encoding/base64"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/godbus/dbus/v5"
)

// Options is the a{sv} argument of every method, in Go form.
type Options map[string]any

func (o Options) variants() map[string]dbus.Variant {
	m := make(map[string]dbus.Variant, len(o))
	for k, v := range o {
		m[k] = dbus.MakeVariant(v)
	}
	return m
}

// Client is the typed client of plugvaultd, used by the CLI and the tray. Every call takes a
// context; D-Bus errors come back as Go errors that wrap the sentinels in errors.go.
type Client struct {
	conn        *dbus.Conn
	ownConn     bool
	interactive bool
}

// Connect connects to the system bus (DBUS_SYSTEM_BUS_ADDRESS is honoured, which the tests
// use) with DialBus; the connection closes when ctx ends. It accepts no UNIX fds, so no other
// user of the bus can leak fds into the CLI or the tray, or crash them with an array of fds.
func Connect(ctx context.Context) (*Client, error) {
	conn, err := DialBus(ctx, SystemBusAddress(), nil, dbus.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("cannot connect to the system bus: %w", err)
	}
	return &Client{conn: conn, ownConn: true}, nil
}

// NewClient wraps an existing connection; Close leaves it open.
func NewClient(conn *dbus.Conn) *Client { return &Client{conn: conn} }

// Conn returns the underlying connection.
func (c *Client) Conn() *dbus.Conn { return c.conn }

// SetInteractive sets whether calls allow polkit to ask the user to authenticate (the
// ALLOW_INTERACTIVE_AUTHORIZATION flag). The tray always sets it; the CLI only when stdin is a
// terminal. Interactive calls can block for as long as the user takes: give them a long ctx.
func (c *Client) SetInteractive(interactive bool) { c.interactive = interactive }

// Close closes the connection if Connect opened it.
func (c *Client) Close() error {
	if c.ownConn {
		return c.conn.Close()
	}
	return nil
}

func (c *Client) call(ctx context.Context, path dbus.ObjectPath, iface, method string, out []any, args ...any) error {
	call := <-c.conn.SendWithContext(ctx, c.newCall(path, iface, method, args), make(chan *dbus.Call, 1)).Done
	if call.Err != nil {
		return FromDBusError(call.Err)
	}
	if len(out) > 0 {
		if err := call.Store(out...); err != nil {
			return fmt.Errorf("cannot decode the reply of %s: %w", method, err)
		}
	}
	return nil
}

// newCall builds the method call message by hand: godbus's Object.Call masks out
// ALLOW_INTERACTIVE_AUTHORIZATION (v5.2.4 keeps only NO_AUTO_START and NO_REPLY_EXPECTED), and
// without that flag polkit may never ask the user.
func (c *Client) newCall(path dbus.ObjectPath, iface, method string, args []any) *dbus.Message {
	msg := &dbus.Message{Type: dbus.TypeMethodCall, Headers: map[dbus.HeaderField]dbus.Variant{
		dbus.FieldPath:        dbus.MakeVariant(path),
		dbus.FieldDestination: dbus.MakeVariant(BusName),
		dbus.FieldInterface:   dbus.MakeVariant(iface),
		dbus.FieldMember:      dbus.MakeVariant(method),
	}, Body: args}
	if c.interactive {
		msg.Flags |= dbus.FlagAllowInteractiveAuthorization
	}
	if len(args) > 0 {
		msg.Headers[dbus.FieldSignature] = dbus.MakeVariant(dbus.SignatureOf(args...))
	}
	return msg
}

func (c *Client) options(o Options) map[string]dbus.Variant {
	if o == nil {
		o = Options{}
	}
	return o.variants()
}

func (c *Client) getProperty(ctx context.Context, path dbus.ObjectPath, iface, name string, out any) error {
	var v dbus.Variant
	if err := c.call(ctx, path, "org.freedesktop.DBus.Properties", "Get", []any{&v}, iface, name); err != nil {
		return err
	}
	return dbus.Store([]any{v.Value()}, out)
}

// Version returns the daemon's version.
func (c *Client) Version(ctx context.Context) (string, error) {
	var s string
	err := c.getProperty(ctx, ManagerPath, ManagerInterface, PropVersion, &s)
	return s, err
}

// ReminderDays returns the reminder threshold in days (0 = no reminders).
func (c *Client) ReminderDays(ctx context.Context) (uint32, error) {
	var d uint32
	err := c.getProperty(ctx, ManagerPath, ManagerInterface, PropReminderDays, &d)
	return d, err
}

// ListDrives returns the object paths of every enrolled drive.
func (c *Client) ListDrives(ctx context.Context) ([]dbus.ObjectPath, error) {
	var drives []dbus.ObjectPath
	err := c.call(ctx, ManagerPath, ManagerInterface, MethodListDrives, []any{&drives}, c.options(nil))
	return drives, err
}

// DriveStatus reads every property of a drive in one call.
func (c *Client) DriveStatus(ctx context.Context, drive dbus.ObjectPath) (DriveStatus, error) {
	var props map[string]dbus.Variant
	var st DriveStatus
	if err := c.call(ctx, drive, "org.freedesktop.DBus.Properties", "GetAll", []any{&props}, DriveInterface); err != nil {
		return st, err
	}
	err := st.Apply(props)
	return st, err
}

// Enroll formats device as a new backup drive (destroying its contents). headerBackup is the
// LUKS header backup when opts set OptHeaderBackup, else empty; storing it is the caller's job.
func (c *Client) Enroll(ctx context.Context, device string, passphrase []byte, opts Options) (drive dbus.ObjectPath, headerBackup []byte, err error) {
	var encoded string
	if err = c.call(ctx, ManagerPath, ManagerInterface, MethodEnroll, []any{&drive, &encoded}, device, passphrase, c.options(opts)); err != nil {
		return drive, nil, err
	}
	if headerBackup, err = base64.StdEncoding.DecodeString(encoded); err != nil {
		return drive, nil, fmt.Errorf("cannot read the header backup plugvaultd returned: %w", err)
	}
	return drive, headerBackup, nil
}

// Adopt registers a LUKS device that was prepared by hand.
func (c *Client) Adopt(ctx context.Context, device string, secret []byte, opts Options) (dbus.ObjectPath, error) {
	var drive dbus.ObjectPath
	err := c.call(ctx, ManagerPath, ManagerInterface, MethodAdopt, []any{&drive}, device, secret, c.options(opts))
	return drive, err
}

// Forget unregisters a drive.
func (c *Client) Forget(ctx context.Context, drive dbus.ObjectPath, opts Options) error {
	return c.call(ctx, ManagerPath, ManagerInterface, MethodForget, nil, drive, c.options(opts))
}

// SealKeys seals the plain keyfiles in /etc/plugvault/keys and returns the ones it sealed.
func (c *Client) SealKeys(ctx context.Context, opts Options) ([]string, error) {
	var sealed []string
	err := c.call(ctx, ManagerPath, ManagerInterface, MethodSealKeys, []any{&sealed}, c.options(opts))
	return sealed, err
}

// Unlock unlocks a drive that awaits its passphrase. The caller zeroes passphrase afterwards.
func (c *Client) Unlock(ctx context.Context, drive dbus.ObjectPath, passphrase []byte, opts Options) error {
	return c.call(ctx, drive, DriveInterface, MethodUnlock, nil, passphrase, c.options(opts))
}

// CheckPassphrase tells whether passphrase opens the plugged-in drive, without unlocking
// anything; a wrong one fails with an error wrapping ErrBadPassphrase. The caller zeroes
// passphrase afterwards.
func (c *Client) CheckPassphrase(ctx context.Context, drive dbus.ObjectPath, passphrase []byte, opts Options) error {
	return c.call(ctx, drive, DriveInterface, MethodCheckPassphrase, nil, passphrase, c.options(opts))
}

// BackupNow starts a run on a present, idle drive.
func (c *Client) BackupNow(ctx context.Context, drive dbus.ObjectPath, opts Options) error {
	return c.call(ctx, drive, DriveInterface, MethodBackupNow, nil, c.options(opts))
}

// Cancel stops a running backup.
func (c *Client) Cancel(ctx context.Context, drive dbus.ObjectPath, opts Options) error {
	return c.call(ctx, drive, DriveInterface, MethodCancel, nil, c.options(opts))
}

// Eject cancels, unmounts, locks and powers a drive off; it returns when it is safe to remove.
func (c *Client) Eject(ctx context.Context, drive dbus.ObjectPath, opts Options) error {
	return c.call(ctx, drive, DriveInterface, MethodEject, nil, c.options(opts))
}

// ListSnapshots returns the drive's snapshots as of its last unlock, oldest first.
func (c *Client) ListSnapshots(ctx context.Context, drive dbus.ObjectPath) ([]Snapshot, error) {
	var snaps []Snapshot
	err := c.call(ctx, drive, DriveInterface, MethodListSnapshots, []any{&snaps}, c.options(nil))
	return snaps, err
}

// Browse mounts the drive read-only and returns where.
func (c *Client) Browse(ctx context.Context, drive dbus.ObjectPath, opts Options) (string, error) {
	var path string
	err := c.call(ctx, drive, DriveInterface, MethodBrowse, []any{&path}, c.options(opts))
	return path, err
}

// Apply stores the properties in props (as from GetAll or PropertiesChanged) into s. Unknown
// names are ignored, so newer daemons can add properties; a known name with the wrong type is
// an error.
func (s *DriveStatus) Apply(props map[string]dbus.Variant) error {
	v := reflect.ValueOf(s).Elem()
	names := make([]string, 0, len(props))
	for name := range props {
		names = append(names, name)
	}
	sort.Strings(names)
	var bad []string
	for _, name := range names {
		f := v.FieldByName(name)
		if !f.IsValid() {
			continue
		}
		val := reflect.ValueOf(props[name].Value())
		if !val.IsValid() || !val.Type().ConvertibleTo(f.Type()) || val.Kind() != f.Kind() {
			bad = append(bad, fmt.Sprintf("%s has type %s", name, props[name].Signature()))
			continue
		}
		f.Set(val.Convert(f.Type()))
	}
	if len(bad) > 0 {
		return fmt.Errorf("cannot read drive properties: %s", strings.Join(bad, ", "))
	}
	return nil
}

// Props returns the status as a property map, the inverse of Apply. The daemon exports it.
func (s DriveStatus) Props() map[string]any {
	v := reflect.ValueOf(s)
	t := v.Type()
	m := make(map[string]any, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.String:
			m[t.Field(i).Name] = f.String() // State and Result go out as plain strings
		default:
			m[t.Field(i).Name] = f.Interface()
		}
	}
	return m
}
