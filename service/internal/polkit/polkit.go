// Package polkit asks polkitd (org.freedesktop.PolicyKit1) whether a D-Bus caller may do
// something. The subject is always the caller's unique bus name ("system-bus-name"), never a
// PID. When polkitd cannot be reached or answers with an error the answer is no: there is no
// fallback to the caller's uid.
package polkit

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
)

// polkitd's well-known name, object and interface.
const (
	BusName       = "org.freedesktop.PolicyKit1"
	AuthorityPath = dbus.ObjectPath("/org/freedesktop/PolicyKit1/Authority")
	Interface     = "org.freedesktop.PolicyKit1.Authority"
)

// CheckAuthorization flags (polkit's PolkitCheckAuthorizationFlags).
const (
	FlagNone                 uint32 = 0
	FlagAllowUserInteraction uint32 = 1
)

// DetailDismissed is set in the result details when the user dismissed the dialog.
const DetailDismissed = "polkit.dismissed"

// Authorizer decides whether the caller with the unique bus name subject may perform action.
// It returns nil when it may, and otherwise an error that wraps api.ErrNotAuthorized,
// api.ErrNotAuthorizedCanObtain or api.ErrNotAuthorizedDismissed. details are shown in the
// authentication dialog (drive.name, drive.label, polkit.message, …). interactive lets polkit
// ask the user to authenticate, which can take minutes: ctx bounds it.
type Authorizer interface {
	Check(ctx context.Context, subject, action string, details map[string]string, interactive bool) error
}

// Subject is polkit's (sa{sv}) subject.
type Subject struct {
	Kind    string
	Details map[string]dbus.Variant
}

// Result is polkit's (bsa{ss}) authorization result.
type Result struct {
	IsAuthorized bool
	IsChallenge  bool
	Details      map[string]string
}

// Authority is the real Authorizer: it calls CheckAuthorization on polkitd over conn (the
// daemon's system bus connection).
type Authority struct {
	conn   *dbus.Conn
	logger *slog.Logger
	serial atomic.Uint64
}

// New returns an Authority that talks to polkitd over conn.
func New(conn *dbus.Conn, logger *slog.Logger) *Authority {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Authority{conn: conn, logger: logger}
}

// Check implements Authorizer.
func (a *Authority) Check(ctx context.Context, subject, action string, details map[string]string, interactive bool) error {
	if subject == "" {
		return deny(api.ErrNotAuthorized, "not authorized to %s: the caller has no bus name", verb(action))
	}
	if details == nil {
		details = map[string]string{}
	}
	flags := FlagNone
	if interactive {
		flags = FlagAllowUserInteraction
	}
	// The cancellation id must be unique among this connection's pending checks.
	cancelID := fmt.Sprintf("plugvault-%d-%d", os.Getpid(), a.serial.Add(1))
	subj := Subject{Kind: "system-bus-name", Details: map[string]dbus.Variant{"name": dbus.MakeVariant(subject)}}
	obj := a.conn.Object(BusName, AuthorityPath)
	call := obj.CallWithContext(ctx, Interface+".CheckAuthorization", 0, subj, action, details, flags, cancelID)
	if call.Err != nil {
		if ctx.Err() != nil {
			// The caller's time ran out or the daemon is stopping: take the dialog away.
			a.cancel(cancelID)
			a.logger.Info("polkit check abandoned, denying", "action", action, "sender", subject, "error", ctx.Err().Error())
			return deny(api.ErrNotAuthorized, "not authorized to %s: the authorization was not answered in time", verb(action))
		}
		a.logger.Warn("polkit check failed, denying", "action", action, "sender", subject, "error", call.Err.Error())
		return deny(api.ErrNotAuthorized, "not authorized to %s: cannot reach polkit", verb(action))
	}
	var res Result
	if err := call.Store(&res); err != nil {
		a.logger.Warn("polkit answered something unexpected, denying", "action", action, "sender", subject, "error", err.Error())
		return deny(api.ErrNotAuthorized, "not authorized to %s: polkit gave a malformed answer", verb(action))
	}
	return resultError(action, res)
}

// resultError maps polkit's answer to nil or a wrapped api sentinel, like udisks does.
func resultError(action string, res Result) error {
	switch {
	case res.IsAuthorized:
		return nil
	case res.Details[DetailDismissed] != "":
		return deny(api.ErrNotAuthorizedDismissed, "not authorized to %s: the authentication dialog was dismissed", verb(action))
	case res.IsChallenge:
		return deny(api.ErrNotAuthorizedCanObtain, "not authorized to %s: authentication is required", verb(action))
	default:
		return deny(api.ErrNotAuthorized, "not authorized to %s", verb(action))
	}
}

// verb turns "org.plugvault.backup" into "backup" for messages.
func verb(action string) string {
	const prefix = "org.plugvault."
	if len(action) > len(prefix) && action[:len(prefix)] == prefix {
		return action[len(prefix):]
	}
	return action
}

// cancel tells polkitd to drop a pending (interactive) check whose caller gave up, so the
// dialog goes away.
func (a *Authority) cancel(cancelID string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	obj := a.conn.Object(BusName, AuthorityPath)
	if err := obj.CallWithContext(ctx, Interface+".CancelCheckAuthorization", 0, cancelID).Err; err != nil {
		a.logger.Debug("cannot cancel a polkit check", "id", cancelID, "error", err.Error())
	}
}

// denial is an error whose text is written for the user and which wraps one of the api
// sentinels, so the D-Bus error name is right without the sentinel's text repeated.
type denial struct {
	msg      string
	sentinel error
}

func (e *denial) Error() string { return e.msg }
func (e *denial) Unwrap() error { return e.sentinel }

func deny(sentinel error, format string, args ...any) error {
	return &denial{msg: fmt.Sprintf(format, args...), sentinel: sentinel}
}
