package daemon

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/drive"
	"github.com/plugvault/plugvault/service/internal/users"
)

// userError is an error whose text is written for the user and which wraps one of the api
// sentinels (for the D-Bus error name) without repeating the sentinel's text.
type userError struct {
	msg      string
	sentinel error
}

func (e *userError) Error() string { return e.msg }
func (e *userError) Unwrap() error { return e.sentinel }

func invalid(format string, args ...any) error {
	return &userError{msg: fmt.Sprintf(format, args...), sentinel: api.ErrInvalidArgument}
}

func failed(format string, args ...any) error {
	return &userError{msg: fmt.Sprintf(format, args...), sentinel: api.ErrFailed}
}

func notFound(format string, args ...any) error {
	return &userError{msg: fmt.Sprintf(format, args...), sentinel: api.ErrNotFound}
}

// call is one incoming method call on its way through authorize -> validate -> act.
type call struct {
	d      *Daemon
	ctx    context.Context
	cancel context.CancelFunc
	sender string
	msg    dbus.Message
	iface  string
	method string
	opts   map[string]dbus.Variant
	// busCreds is GetConnectionCredentials' answer about sender (see creds).
	busCreds map[string]dbus.Variant
	// refused is why the call may not go on (the daemon is stopping); nil when enter counted it.
	refused error
}

// newCall derives the call's context from the daemon's root context (godbus gives handlers
// none): it ends when the daemon stops or the call's time is up.
func (d *Daemon) newCall(sender dbus.Sender, msg dbus.Message, iface, method string, opts map[string]dbus.Variant) *call {
	ctx, cancel := context.WithTimeout(d.ctx, d.opts.CallTimeout)
	c := &call{d: d, ctx: ctx, cancel: cancel, sender: string(sender), msg: msg, iface: iface, method: method, opts: opts}
	c.refused = d.enter(verbOf(method))
	return c
}

// interactive reports whether polkit may ask the user: only when the caller set the
// ALLOW_INTERACTIVE_AUTHORIZATION flag and did not set auth.no_user_interaction. An
// auth.no_user_interaction of the wrong type counts as set (validation rejects it afterwards).
func (c *call) interactive() bool {
	if c.msg.Flags&dbus.FlagAllowInteractiveAuthorization == 0 {
		return false
	}
	v, ok := c.opts[api.OptNoUserInteraction]
	if !ok {
		return true
	}
	b, isBool := v.Value().(bool)
	return isBool && !b
}

// authorize asks polkit whether the caller may do what this method does. It is the first
// thing every mutating method does.
func (c *call) authorize(details map[string]string) error {
	action, ok := api.MethodActions[c.iface+"."+c.method]
	if !ok {
		return fmt.Errorf("internal error: no polkit action for %s.%s: %w", c.iface, c.method, api.ErrNotAuthorized)
	}
	return c.authorizeAction(action, details)
}

// authorizeAction asks polkit whether the caller may do action.
func (c *call) authorizeAction(action string, details map[string]string) error {
	if c.refused != nil {
		return c.refused
	}
	interactive := c.interactive()
	timeout := c.d.opts.AuthTimeout
	if interactive {
		timeout = c.d.opts.InteractiveAuthTimeout
	}
	ctx, cancel := context.WithTimeout(c.ctx, timeout)
	defer cancel()
	err := c.d.opts.Authorizer.Check(ctx, c.sender, action, details, interactive)
	if err != nil {
		if !errors.Is(err, api.ErrNotAuthorized) && !errors.Is(err, api.ErrNotAuthorizedCanObtain) && !errors.Is(err, api.ErrNotAuthorizedDismissed) {
			// An authorizer that fails in some other way still means no.
			err = fmt.Errorf("not authorized: %v: %w", err, api.ErrNotAuthorized)
		}
		c.d.log.Info("call not authorized", "method", c.method, "action", action, "sender", c.sender, "error", err)
		return err
	}
	subject := details["drive.uuid"]
	if subject == "" {
		subject = details["drive.device"]
	}
	c.d.log.Info("call authorized", "method", c.method, "action", action, "sender", c.sender, "drive", subject)
	return nil
}

// reply turns err into the D-Bus error reply (the one translation point) and logs failures.
func (c *call) reply(err error) *dbus.Error {
	c.cancel()
	if c.refused == nil {
		c.d.leave()
		c.refused = errStopping(verbOf(c.method)) // reply ends the call once
	}
	if err == nil {
		return nil
	}
	if !errors.Is(err, api.ErrNotAuthorized) && !errors.Is(err, api.ErrNotAuthorizedCanObtain) && !errors.Is(err, api.ErrNotAuthorizedDismissed) {
		c.d.log.Info("call failed", "method", c.method, "sender", c.sender, "error", err)
	}
	return api.ToDBusError(err)
}

// creds asks the bus daemon about the sender (GetConnectionCredentials): its uid, groups and
// pid come from the kernel (SO_PEERCRED, SO_PEERGROUPS), so the caller cannot lie about them.
// The answer is kept for the rest of the call.
func (c *call) creds() (map[string]dbus.Variant, error) {
	if c.busCreds != nil {
		return c.busCreds, nil
	}
	var creds map[string]dbus.Variant
	err := c.d.conn.BusObject().CallWithContext(c.ctx, "org.freedesktop.DBus.GetConnectionCredentials", 0, c.sender).Store(&creds)
	if err != nil {
		return nil, failed("cannot identify the caller: %v", err)
	}
	if _, ok := creds["UnixUserID"].Value().(uint32); !ok {
		return nil, failed("cannot identify the caller: the bus did not report its user")
	}
	c.busCreds = creds
	return creds, nil
}

// uid is the caller's uid, from the bus daemon.
func (c *call) uid() (uint32, error) {
	creds, err := c.creds()
	if err != nil {
		return 0, err
	}
	return creds["UnixUserID"].Value().(uint32), nil
}

// caller is who the sender is: uid, groups and pid from the bus daemon (see creds); name,
// primary group and home from NSS (getent: LDAP users count). dbus-daemon reports
// UnixGroupIDs since 1.11; from an older bus the groups are those NSS lists for the user.
func (c *call) caller() (drive.Caller, error) {
	creds, err := c.creds()
	if err != nil {
		return drive.Caller{}, err
	}
	uid := creds["UnixUserID"].Value().(uint32)
	pid, _ := creds["ProcessID"].Value().(uint32)
	u, err := users.Default.LookupID(c.ctx, uid)
	if err != nil {
		return drive.Caller{}, failed("cannot identify the caller: cannot look up uid %d: %v", uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return drive.Caller{}, failed("cannot identify the caller: uid %d has the group %q", uid, u.Gid)
	}
	who := drive.Caller{BusName: c.sender, UID: uid, GID: uint32(gid), PID: pid, User: u.Username, Home: u.HomeDir}
	if v, ok := creds["UnixGroupIDs"]; ok {
		groups, isList := v.Value().([]uint32)
		if !isList {
			return drive.Caller{}, failed("cannot identify the caller: the bus reported its groups as %s", v.Signature())
		}
		who.Groups = append([]uint32{}, groups...)
	} else if who.Groups, err = users.Default.GroupIDs(c.ctx, u.Username, who.GID); err != nil {
		return drive.Caller{}, failed("cannot identify the caller: %v", err)
	}
	return who, nil
}

// driveDetails names the drive in the polkit dialog.
func driveDetails(st api.DriveStatus, message string) map[string]string {
	name := st.Name
	if name == "" {
		name = st.LuksUUID
	}
	det := map[string]string{
		"drive.name":   st.Name,
		"drive.label":  st.Label,
		"drive.serial": st.Serial,
		"drive.uuid":   st.LuksUUID,
	}
	if message != "" {
		det["polkit.message"] = fmt.Sprintf(message, name)
	}
	return det
}

// zero overwrites secrets, and every byte array in the message body (godbus may have decoded
// the argument into a copy), once the call is done.
func zero(body []any, secrets ...[]byte) {
	for _, s := range secrets {
		clear(s)
	}
	for _, v := range body {
		if b, ok := v.([]byte); ok {
			clear(b)
		}
	}
}
