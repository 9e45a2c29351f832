package traytest

import (
	"sync"
	"testing"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/prop"
)

// Watcher stands for a desktop panel's org.kde.StatusNotifierWatcher (KDE's StatusNotifierItem
// protocol, as in xfce4-panel or lxqt-panel): it records which items register, so the test
// finds the tray's StatusNotifierItem by the bus name that registered it.
type Watcher struct {
	mu    sync.Mutex
	items []string
	reg   chan string
	props *prop.Properties
	conn  *dbus.Conn
}

// StartWatcher exports the watcher on conn and owns org.kde.StatusNotifierWatcher.
func StartWatcher(t testing.TB, conn *dbus.Conn) *Watcher {
	t.Helper()
	w := &Watcher{reg: make(chan string, 16), conn: conn}
	const path, iface = "/StatusNotifierWatcher", "org.kde.StatusNotifierWatcher"
	if err := conn.ExportMethodTable(map[string]any{
		"RegisterStatusNotifierItem": func(sender dbus.Sender, service string) *dbus.Error {
			// An item registers either its bus name or just its object path (then the bus
			// name is the sender's), as fyne.io/systray does.
			name := service
			if len(service) > 0 && service[0] == '/' {
				name = string(sender)
			}
			w.mu.Lock()
			w.items = append(w.items, name)
			items := append([]string(nil), w.items...)
			w.mu.Unlock()
			w.props.SetMust(iface, "RegisteredStatusNotifierItems", items)
			_ = conn.Emit(path, iface+".StatusNotifierItemRegistered", name)
			w.reg <- name
			return nil
		},
		"RegisterStatusNotifierHost": func(service string) *dbus.Error { return nil },
	}, path, iface); err != nil {
		t.Fatal(err)
	}
	p, err := prop.Export(conn, path, prop.Map{iface: {
		"RegisteredStatusNotifierItems":  {Value: []string{}, Emit: prop.EmitTrue},
		"IsStatusNotifierHostRegistered": {Value: true, Emit: prop.EmitTrue},
		"ProtocolVersion":                {Value: int32(0), Emit: prop.EmitTrue},
	}})
	if err != nil {
		t.Fatal(err)
	}
	w.props = p
	if reply, err := conn.RequestName(iface, dbus.NameFlagDoNotQueue); err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("cannot own %s: %v %v", iface, reply, err)
	}
	return w
}

// Registered delivers the bus name of each item as it registers.
func (w *Watcher) Registered() <-chan string { return w.reg }

// Notification is one notification the fake server received.
type Notification struct {
	AppName    string
	ReplacesID uint32
	Icon       string
	Summary    string
	Body       string
	Hints      map[string]dbus.Variant
	Timeout    int32
}

// Notifications stands for the desktop's notification daemon (org.freedesktop.Notifications)
// and records every notification.
type Notifications struct {
	mu    sync.Mutex
	all   []Notification
	next  uint32
	added chan struct{}
}

// StartNotifications exports the server on conn and owns org.freedesktop.Notifications.
func StartNotifications(t testing.TB, conn *dbus.Conn) *Notifications {
	t.Helper()
	n := &Notifications{next: 1, added: make(chan struct{}, 1)}
	const path, iface = "/org/freedesktop/Notifications", "org.freedesktop.Notifications"
	if err := conn.ExportMethodTable(map[string]any{
		"Notify": func(app string, replaces uint32, icon, summary, body string, actions []string,
			hints map[string]dbus.Variant, timeout int32) (uint32, *dbus.Error) {
			n.mu.Lock()
			id := replaces
			if id == 0 {
				id = n.next
				n.next++
			}
			n.all = append(n.all, Notification{app, replaces, icon, summary, body, hints, timeout})
			n.mu.Unlock()
			select {
			case n.added <- struct{}{}:
			default:
			}
			return id, nil
		},
		"GetCapabilities":      func() ([]string, *dbus.Error) { return []string{"body"}, nil },
		"CloseNotification":    func(id uint32) *dbus.Error { return nil },
		"GetServerInformation": func() (string, string, string, string, *dbus.Error) { return "fake", "plugvault", "1", "1.2", nil },
	}, path, iface); err != nil {
		t.Fatal(err)
	}
	if reply, err := conn.RequestName(iface, dbus.NameFlagDoNotQueue); err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("cannot own %s: %v %v", iface, reply, err)
	}
	return n
}

// All returns every notification received so far.
func (n *Notifications) All() []Notification {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]Notification(nil), n.all...)
}
