package ui

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/godbus/dbus/v5"
)

// ErrSessionLost is returned by Run when the session bus went away (the desktop's dbus-daemon
// stopped or restarted). The tray's item, menu, notifications and single-instance name all
// live on that bus, and fyne.io/systray exports the item once, on the shared session
// connection, with no way to export it again, so the tray cannot repair itself in place: the
// caller waits with AwaitSessionBus and starts the tray afresh.
var ErrSessionLost = errors.New("lost the session bus")

// Waiting for the session bus to come back: the first retry, the longest pause between
// retries, and how long at most. A bus that is not back within sessionWaitLimit belongs to a
// session that ended.
const (
	sessionRetryMin  = 100 * time.Millisecond
	sessionRetryMax  = 5 * time.Second
	sessionWaitLimit = 10 * time.Minute
)

// AwaitSessionBus returns nil as soon as the session bus answers a connection again, or an
// error when ctx ends or sessionWaitLimit passes. The address is the one the lost connection
// used (godbus keeps a discovered one in DBUS_SESSION_BUS_ADDRESS), and no bus is ever
// started here (no autolaunch).
//
// Nothing announces that a bus accepts connections again (the address may name an abstract
// socket, or one that a service manager opens on demand), so it retries connecting with a
// backoff that starts at 100 ms, doubles, and stops growing at 5 s: a restarted bus is found
// within a few hundred milliseconds, and a bus that stays away costs one connect(2) every 5 s.
func AwaitSessionBus(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, sessionWaitLimit)
	defer cancel()
	delay := sessionRetryMin
	for {
		conn, err := dbus.SessionBusPrivateNoAutoStartup(dbus.WithContext(ctx))
		if err == nil {
			// Accepting the socket is not enough: the bus must answer.
			if err = conn.Auth(nil); err == nil {
				err = conn.Hello()
			}
			conn.Close()
			if err == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the session bus did not come back: %w", err)
		case <-time.After(delay):
		}
		delay = min(delay*2, sessionRetryMax)
	}
}
