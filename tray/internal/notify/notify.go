// Package notify shows desktop notifications through org.freedesktop.Notifications on the
// session bus (the Desktop Notifications Specification).
package notify

import (
	"context"
	"fmt"
	"sync"

	"github.com/godbus/dbus/v5"
)

// Names of the notification service.
const (
	BusName   = "org.freedesktop.Notifications"
	Path      = dbus.ObjectPath("/org/freedesktop/Notifications")
	Interface = "org.freedesktop.Notifications"
)

// Notifier sends notifications; notifications with the same tag replace each other, so a drive
// has at most one notification on screen.
type Notifier struct {
	conn    *dbus.Conn
	appName string

	mu  sync.Mutex
	ids map[string]uint32 // tag -> id the server gave the last notification
}

// New returns a notifier that sends over conn (the session bus).
func New(conn *dbus.Conn, appName string) *Notifier {
	return &Notifier{conn: conn, appName: appName, ids: map[string]uint32{}}
}

// Notify shows a notification. An urgent one stays until the user dismisses it (critical
// urgency); others use the server's default timeout.
func (n *Notifier) Notify(ctx context.Context, tag, icon, summary, body string, urgent bool) error {
	n.mu.Lock()
	replaces := n.ids[tag]
	n.mu.Unlock()
	urgency := byte(1)
	if urgent {
		urgency = 2
	}
	hints := map[string]dbus.Variant{
		"urgency":       dbus.MakeVariant(urgency),
		"desktop-entry": dbus.MakeVariant("plugvault"),
	}
	var id uint32
	err := n.conn.Object(BusName, Path).CallWithContext(ctx, Interface+".Notify", 0,
		n.appName, replaces, icon, summary, body, []string{}, hints, int32(-1)).Store(&id)
	if err != nil {
		return fmt.Errorf("cannot show a notification: %w", err)
	}
	n.mu.Lock()
	n.ids[tag] = id
	n.mu.Unlock()
	return nil
}
