package api

import (
	"errors"

	"github.com/godbus/dbus/v5"
)

// Sentinel errors. The daemon returns them (wrapped with a message) from its backends; the
// client turns the D-Bus error back into the same sentinel, so errors.Is works on both sides.
var (
	ErrNotAuthorized          = errors.New("not authorized")
	ErrNotAuthorizedCanObtain = errors.New("not authorized: authentication is required")
	ErrNotAuthorizedDismissed = errors.New("not authorized: authentication was dismissed")
	ErrBusy                   = errors.New("busy")
	ErrNotFound               = errors.New("not found")
	ErrBadPassphrase          = errors.New("bad passphrase")
	ErrCancelled              = errors.New("cancelled")
	ErrNotPresent             = errors.New("drive not present")
	ErrInvalidArgument        = errors.New("invalid argument")
	ErrFailed                 = errors.New("failed")
)

// errorTable is the one table between D-Bus error names and Go sentinels. Order matters only for
// ErrFailed, which is the fallback in both directions.
var errorTable = []struct {
	name string
	err  error
}{
	{ErrorPrefix + "NotAuthorized", ErrNotAuthorized},
	{ErrorPrefix + "NotAuthorizedCanObtain", ErrNotAuthorizedCanObtain},
	{ErrorPrefix + "NotAuthorizedDismissed", ErrNotAuthorizedDismissed},
	{ErrorPrefix + "Busy", ErrBusy},
	{ErrorPrefix + "NotFound", ErrNotFound},
	{ErrorPrefix + "BadPassphrase", ErrBadPassphrase},
	{ErrorPrefix + "Cancelled", ErrCancelled},
	{ErrorPrefix + "NotPresent", ErrNotPresent},
	{ErrorPrefix + "InvalidArgument", ErrInvalidArgument},
	{ErrorPrefix + "Failed", ErrFailed},
}

// ErrorNames lists every D-Bus error name of the contract.
func ErrorNames() []string {
	names := make([]string, len(errorTable))
	for i, e := range errorTable {
		names[i] = e.name
	}
	return names
}

// ErrorName returns the D-Bus error name for err: the name of the first sentinel that err wraps,
// or ...Error.Failed.
func ErrorName(err error) string {
	for _, e := range errorTable {
		if errors.Is(err, e.err) {
			return e.name
		}
	}
	return ErrorPrefix + "Failed"
}

// ToDBusError is the daemon's one translation point from a Go error to a D-Bus error reply. The
// message is err's text, which must be fit for the user to read (no secrets, no stack).
func ToDBusError(err error) *dbus.Error {
	if err == nil {
		return nil
	}
	return dbus.NewError(ErrorName(err), []any{err.Error()})
}

// remoteError is a D-Bus error turned back into Go: Error() is the daemon's message and Unwrap
// gives the sentinel, so errors.Is(err, ErrBusy) works in clients.
type remoteError struct {
	sentinel error
	msg      string
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

// FromDBusError is the clients' one translation point back from a D-Bus error. Errors that are
// not D-Bus errors (a closed connection, a cancelled context) are returned unchanged; D-Bus
// errors outside the contract (for example org.freedesktop.DBus.Error.ServiceUnknown) keep
// their text and unwrap to ErrFailed, and the original *dbus.Error stays reachable with
// errors.As.
func FromDBusError(err error) error {
	var derr dbus.Error
	var pderr *dbus.Error
	switch {
	case errors.As(err, &pderr):
		derr = *pderr
	case errors.As(err, &derr):
	default:
		return err
	}
	msg := derr.Name
	if len(derr.Body) > 0 {
		if s, ok := derr.Body[0].(string); ok && s != "" {
			msg = s
		}
	}
	for _, e := range errorTable {
		if e.name == derr.Name {
			return &remoteError{sentinel: e.err, msg: msg}
		}
	}
	return &foreignError{remoteError{sentinel: ErrFailed, msg: msg}, derr}
}

// foreignError is a D-Bus error that the contract does not name.
type foreignError struct {
	remoteError
	dbusErr dbus.Error
}

func (e *foreignError) Unwrap() []error { return []error{e.sentinel, e.dbusErr} }
