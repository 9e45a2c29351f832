package api

import (
	"context"
	"fmt"
	"strings"

	"github.com/godbus/dbus/v5"
)

// EventKind says what an Event reports.
type EventKind int

// The kinds of Event.
const (
	// EventServiceUp: the daemon owns its name (sent once at the start if it is running, and
	// after every restart). Read the state afresh.
	EventServiceUp EventKind = iota + 1
	// EventServiceDown: the daemon lost its name (stopped, crashed or restarting).
	EventServiceDown
	// EventDriveChanged: properties of Drive changed (Changed holds the new values).
	EventDriveChanged
	// EventManagerChanged: properties of the Manager changed.
	EventManagerChanged
	// EventDriveAdded: Drive was enrolled.
	EventDriveAdded
	// EventDriveRemoved: Drive was forgotten.
	EventDriveRemoved
)

// Event is one thing the daemon announced. Clients are driven by these and never poll.
type Event struct {
	Kind    EventKind
	Drive   dbus.ObjectPath
	Changed map[string]dbus.Variant
}

// Watch subscribes to the daemon's signals and to its name owner, and delivers them as events
// until ctx ends (then the channel is closed). Signals from any sender other than the current
// owner of BusName are dropped, so another client cannot forge state. The first event is
// EventServiceUp or EventServiceDown, telling whether the daemon runs right now. Watch
// delivers the signals alone: to follow the drives' state use WatchDrives, which reads it
// inside the watch with nothing lost or repeated between the read and the signals.
func (c *Client) Watch(ctx context.Context) (<-chan Event, error) {
	sigs, unsubscribe, err := c.subscribe(ctx, 64)
	if err != nil {
		return nil, err
	}

	var owner string
	if err := c.conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.GetNameOwner", 0, BusName).Store(&owner); err != nil {
		owner = "" // not running (NameHasNoOwner); NameOwnerChanged tells when it starts
	}

	out := make(chan Event, 64)
	go func() {
		defer close(out)
		defer unsubscribe()
		send := func(ev Event) bool {
			select {
			case out <- ev:
				return true
			case <-ctx.Done():
				return false
			}
		}
		first := EventServiceDown
		if owner != "" {
			first = EventServiceUp
		}
		if !send(Event{Kind: first}) {
			return
		}
		for {
			var sig *dbus.Signal
			select {
			case <-ctx.Done():
				return
			case s, ok := <-sigs:
				if !ok {
					send(Event{Kind: EventServiceDown})
					return
				}
				sig = s
			}
			ev, ok := c.translate(sig, &owner)
			if ok && !send(ev) {
				return
			}
		}
	}()
	return out, nil
}

// watchRules match what Watch and WatchDrives follow: the daemon's name owner, its
// PropertiesChanged and the Manager's signals.
var watchRules = [][]dbus.MatchOption{
	{dbus.WithMatchSender("org.freedesktop.DBus"), dbus.WithMatchInterface("org.freedesktop.DBus"),
		dbus.WithMatchMember("NameOwnerChanged"), dbus.WithMatchArg(0, BusName)},
	{dbus.WithMatchSender(BusName), dbus.WithMatchInterface("org.freedesktop.DBus.Properties"),
		dbus.WithMatchMember("PropertiesChanged"), dbus.WithMatchPathNamespace("/org/plugvault/PlugVault1")},
	{dbus.WithMatchSender(BusName), dbus.WithMatchInterface(ManagerInterface)},
}

// subscribe adds watchRules to the bus and returns the channel (of capacity size) the
// connection delivers signals on; unsubscribe undoes both. The bus daemon handles the match
// rules before any later message of this connection, so whatever is read after subscribe
// returns is followed by every change after the read.
func (c *Client) subscribe(ctx context.Context, size int) (sigs chan *dbus.Signal, unsubscribe func(), err error) {
	for i, r := range watchRules {
		if err := c.conn.AddMatchSignalContext(ctx, r...); err != nil {
			for _, added := range watchRules[:i] {
				_ = c.conn.RemoveMatchSignal(added...)
			}
			return nil, nil, fmt.Errorf("cannot subscribe to plugvaultd's signals: %w", err)
		}
	}
	sigs = make(chan *dbus.Signal, size)
	c.conn.Signal(sigs)
	return sigs, func() {
		c.conn.RemoveSignal(sigs)
		for _, r := range watchRules {
			_ = c.conn.RemoveMatchSignal(r...)
		}
	}, nil
}

// translate turns a signal into an event, tracking the daemon's unique name in owner.
func (c *Client) translate(sig *dbus.Signal, owner *string) (Event, bool) {
	if sig.Name == "org.freedesktop.DBus.NameOwnerChanged" {
		newOwner, ok := nameOwnerChange(sig)
		if !ok {
			return Event{}, false
		}
		*owner = newOwner
		if newOwner == "" {
			return Event{Kind: EventServiceDown}, true
		}
		return Event{Kind: EventServiceUp}, true
	}
	if *owner == "" || sig.Sender != *owner {
		return Event{}, false
	}
	switch sig.Name {
	case "org.freedesktop.DBus.Properties.PropertiesChanged":
		iface, changed, _, ok := propertiesChanged(sig)
		if !ok {
			return Event{}, false
		}
		switch {
		case iface == DriveInterface && strings.HasPrefix(string(sig.Path), DrivesPathPrefix):
			return Event{Kind: EventDriveChanged, Drive: sig.Path, Changed: changed}, true
		case iface == ManagerInterface && sig.Path == ManagerPath:
			return Event{Kind: EventManagerChanged, Changed: changed}, true
		}
	case ManagerInterface + "." + SignalDriveAdded, ManagerInterface + "." + SignalDriveRemoved:
		var drive dbus.ObjectPath
		if sig.Path != ManagerPath || dbus.Store(sig.Body, &drive) != nil {
			return Event{}, false
		}
		kind := EventDriveAdded
		if strings.HasSuffix(sig.Name, SignalDriveRemoved) {
			kind = EventDriveRemoved
		}
		return Event{Kind: kind, Drive: drive}, true
	}
	return Event{}, false
}

// nameOwnerChange decodes a NameOwnerChanged of BusName sent by the bus.
func nameOwnerChange(sig *dbus.Signal) (newOwner string, ok bool) {
	var name, oldOwner string
	if sig.Sender != "org.freedesktop.DBus" || dbus.Store(sig.Body, &name, &oldOwner, &newOwner) != nil || name != BusName {
		return "", false
	}
	return newOwner, true
}

// propertiesChanged decodes a PropertiesChanged.
func propertiesChanged(sig *dbus.Signal) (iface string, changed map[string]dbus.Variant, invalidated []string, ok bool) {
	if dbus.Store(sig.Body, &iface, &changed, &invalidated) != nil {
		return "", nil, nil, false
	}
	return iface, changed, invalidated, true
}
