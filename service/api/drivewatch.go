package api

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"time"

	"github.com/godbus/dbus/v5"
)

// DriveEntry is one drive and all its properties.
type DriveEntry struct {
	Path   dbus.ObjectPath
	Status DriveStatus
}

// DrivesEvent is one step of WatchDrives. Kind is one of Watch's kinds; what else is set
// depends on it:
//
//   - EventServiceUp: the daemon runs. Drives holds every drive (sorted by path) as read after
//     subscribing; the caller replaces whatever it knew. It also follows a restart of the
//     daemon, and a re-read after signals came out of order (see WatchDrives).
//   - EventServiceDown: the daemon does not run, or Err says why its state cannot be read (the
//     watch reads again a little later while the daemon runs).
//   - EventDriveAdded: Drive was enrolled; Status is its whole status.
//   - EventDriveChanged: Drive changed; Status is its whole new status and Changed names the
//     properties whose value changed (sorted, never empty).
//   - EventDriveRemoved: Drive was forgotten.
//   - EventManagerChanged: ReminderDays or Version changed.
//
// ReminderDays and Version are the Manager's properties as of the event (zero while the daemon
// is down).
type DrivesEvent struct {
	Kind         EventKind
	Drive        dbus.ObjectPath
	Status       DriveStatus
	Changed      []string
	Drives       []DriveEntry
	ReminderDays uint32
	Version      string
	Err          error
}

// Reading the daemon's state after it came up, and retrying when that failed.
const (
	watchReadTimeout = 30 * time.Second
	watchMinRetry    = time.Second
	watchMaxRetry    = 30 * time.Second
)

// WatchDrives follows plugvaultd's drives until ctx ends, then closes the channel (also when
// the connection is lost, after a last EventServiceDown). The first event is EventServiceUp
// with the state of every drive, or EventServiceDown; then every change follows, in the
// order the daemon made them, across restarts of the daemon. The CLI's status --watch and the
// tray both follow the daemon through it, so they cannot disagree about a drive.
//
// It subscribes before it reads, and it reads from the daemon's unique name, so that all it
// reads and every signal come over one connection of the daemon, in the order the daemon sent
// them. godbus numbers every message it receives (dbus.Sequence): a signal numbered before the
// reply of the read that covers it is already in what was read and is dropped; one numbered
// after is applied. Should signals ever arrive out of their order (godbus hands a signal to a
// goroutine when the receiving channel is full), everything is read again and delivered as
// EventServiceUp. Signals from anyone but the current owner of BusName are dropped.
func (c *Client) WatchDrives(ctx context.Context) (<-chan DrivesEvent, error) {
	return c.watchDrives(ctx, func(string) {})
}

// watchDrives is WatchDrives with a hook that runs at the named points of every read of the
// whole state: "read", between subscribing (or the signal that asks for the read) and
// reading; "read-drives", after the Manager was read and before its drives are; "read-done",
// after the read and before the signals that arrived meanwhile are handled. Tests change the
// daemon's state there.
func (c *Client) watchDrives(ctx context.Context, hook func(point string)) (<-chan DrivesEvent, error) {
	sigs, unsubscribe, err := c.subscribe(ctx, 256)
	if err != nil {
		return nil, err
	}
	w := &driveWatch{c: c, out: make(chan DrivesEvent, 16), hook: hook}
	// The owner is asked after subscribing: a NameOwnerChanged older than the answer is
	// dropped by its number.
	if err := w.askOwner(ctx); err != nil {
		unsubscribe()
		return nil, err
	}
	queued := make(chan *dbus.Signal)
	go func() {
		defer unsubscribe()
		queueSignals(ctx, sigs, queued)
	}()
	go w.run(ctx, queued)
	return w.out, nil
}

// queueSignals moves signals from in to out, keeping as many as it must in between, until ctx
// ends or in is closed and drained (then it closes out). It always takes from in at once, so
// godbus never finds the channel full.
func queueSignals(ctx context.Context, in <-chan *dbus.Signal, out chan<- *dbus.Signal) {
	var q []*dbus.Signal
	for {
		if in == nil && len(q) == 0 {
			close(out)
			return
		}
		var send chan<- *dbus.Signal
		var head *dbus.Signal
		if len(q) > 0 {
			send, head = out, q[0]
		}
		select {
		case <-ctx.Done():
			return
		case s, ok := <-in:
			if !ok {
				in = nil
				continue
			}
			q = append(q, s)
		case send <- head:
			q[0] = nil
			q = q[1:]
		}
	}
}

// driveWatch is the state of one WatchDrives: the drives as last delivered, and for each part
// the sequence number of the reply it was read from.
type driveWatch struct {
	c    *Client
	out  chan DrivesEvent
	hook func(point string)

	owner    string // unique name of the daemon, "" while it does not run
	ownerSeq dbus.Sequence
	shown    shown // what the last EventServiceUp/Down said
	lastSig  dbus.Sequence

	mgrSeq       dbus.Sequence
	reminderDays uint32
	version      string
	drives       map[dbus.ObjectPath]*watchedDrive

	retry     *time.Timer // reads again while the daemon runs but could not be read
	retryWait time.Duration
}

// shown is what a driveWatch last told about the daemon (0: nothing yet).
type shown int

const (
	shownUp     shown = iota + 1 // EventServiceUp: the drives are known
	shownDown                    // EventServiceDown: not running
	shownFailed                  // EventServiceDown with Err: running but could not be read
)

type watchedDrive struct {
	st  DriveStatus
	seq dbus.Sequence // of the reply st was read from
}

// askOwner asks the bus who owns BusName now.
func (w *driveWatch) askOwner(ctx context.Context) error {
	call := w.c.conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.GetNameOwner", 0, BusName)
	w.owner, w.ownerSeq = "", call.ResponseSequence
	if call.Err != nil {
		return nil // NameHasNoOwner: not running; NameOwnerChanged says when it starts
	}
	if err := call.Store(&w.owner); err != nil {
		return fmt.Errorf("cannot ask who owns %s: %w", BusName, err)
	}
	return nil
}

// restart asks for the owner again and reads everything from it: after a read failed, or
// when signals came out of order (then a NameOwnerChanged may be among those missed).
func (w *driveWatch) restart(ctx context.Context) {
	actx, cancel := context.WithTimeout(ctx, watchReadTimeout)
	err := w.askOwner(actx)
	cancel()
	if err != nil {
		w.failed(ctx, err)
		return
	}
	if w.owner == "" {
		if w.shown != shownDown {
			w.down(ctx, nil)
		}
		return
	}
	w.readAll(ctx)
}

func (w *driveWatch) run(ctx context.Context, sigs <-chan *dbus.Signal) {
	defer close(w.out)
	defer w.stopRetry()
	if w.owner != "" {
		w.readAll(ctx)
	} else {
		w.down(ctx, nil)
	}
	for {
		var retry <-chan time.Time
		if w.retry != nil {
			retry = w.retry.C
		}
		select {
		case <-ctx.Done():
			return
		case <-retry:
			w.retry = nil
			w.restart(ctx)
		case sig, ok := <-sigs:
			if !ok {
				w.down(ctx, errors.New("the connection to the bus was closed"))
				return
			}
			if sig.Sequence <= w.lastSig {
				// Out of order: what was delivered may miss a change. Start afresh; the
				// numbers of what is read make every older signal stale.
				w.restart(ctx)
				continue
			}
			w.lastSig = sig.Sequence
			w.handle(ctx, sig)
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// send delivers ev, or gives up when ctx ends.
func (w *driveWatch) send(ctx context.Context, ev DrivesEvent) {
	ev.ReminderDays, ev.Version = w.reminderDays, w.version
	if ev.Kind == EventServiceDown {
		ev.ReminderDays, ev.Version = 0, ""
	}
	select {
	case w.out <- ev:
	case <-ctx.Done():
	}
}

// down forgets the state and says the daemon is down (err: why it could not be read).
func (w *driveWatch) down(ctx context.Context, err error) {
	w.shown, w.drives = shownDown, nil
	if err != nil {
		w.shown = shownFailed
	}
	w.send(ctx, DrivesEvent{Kind: EventServiceDown, Err: err})
}

func (w *driveWatch) handle(ctx context.Context, sig *dbus.Signal) {
	if sig.Name == "org.freedesktop.DBus.NameOwnerChanged" {
		newOwner, ok := nameOwnerChange(sig)
		if !ok || sig.Sequence < w.ownerSeq {
			return
		}
		w.owner, w.ownerSeq = newOwner, sig.Sequence
		w.stopRetry()
		if newOwner == "" {
			if w.shown != shownDown {
				w.down(ctx, nil)
			}
			return
		}
		w.readAll(ctx)
		return
	}
	if w.shown != shownUp || w.owner == "" || sig.Sender != w.owner {
		return
	}
	switch sig.Name {
	case "org.freedesktop.DBus.Properties.PropertiesChanged":
		iface, changed, invalidated, ok := propertiesChanged(sig)
		if !ok {
			return
		}
		switch {
		case iface == DriveInterface:
			d := w.drives[sig.Path]
			if d == nil || sig.Sequence < d.seq {
				return
			}
			old := d.st
			if len(invalidated) > 0 {
				// Changed without its new value: read the drive again.
				rctx, cancel := context.WithTimeout(ctx, watchReadTimeout)
				fresh, err := w.readDrive(rctx, sig.Path)
				cancel()
				switch {
				case errors.Is(err, errGone):
					return // its DriveRemoved follows
				case err != nil:
					w.failed(ctx, err)
					return
				}
				*d = *fresh
			} else {
				_ = d.st.Apply(changed) // a property of the wrong type is left as it was
			}
			if names := changedFields(old, d.st); len(names) > 0 {
				w.send(ctx, DrivesEvent{Kind: EventDriveChanged, Drive: sig.Path, Status: d.st, Changed: names})
			}
		case iface == ManagerInterface && sig.Path == ManagerPath:
			if sig.Sequence < w.mgrSeq {
				return
			}
			days, version := w.reminderDays, w.version
			if len(invalidated) > 0 {
				rctx, cancel := context.WithTimeout(ctx, watchReadTimeout)
				props, seq, err := w.getAll(rctx, ManagerPath, ManagerInterface)
				cancel()
				if err != nil {
					w.failed(ctx, err)
					return
				}
				changed, w.mgrSeq = props, seq
			}
			w.applyManager(changed)
			if days != w.reminderDays || version != w.version {
				w.send(ctx, DrivesEvent{Kind: EventManagerChanged})
			}
		}
	case ManagerInterface + "." + SignalDriveAdded:
		var p dbus.ObjectPath
		if sig.Path != ManagerPath || dbus.Store(sig.Body, &p) != nil || sig.Sequence < w.mgrSeq || w.drives[p] != nil {
			return
		}
		rctx, cancel := context.WithTimeout(ctx, watchReadTimeout)
		d, err := w.readDrive(rctx, p)
		cancel()
		switch {
		case errors.Is(err, errGone):
			return // forgotten again; its DriveRemoved is dropped as unknown
		case err != nil:
			w.failed(ctx, err)
			return
		}
		w.drives[p] = d
		w.send(ctx, DrivesEvent{Kind: EventDriveAdded, Drive: p, Status: d.st})
	case ManagerInterface + "." + SignalDriveRemoved:
		var p dbus.ObjectPath
		if sig.Path != ManagerPath || dbus.Store(sig.Body, &p) != nil {
			return
		}
		if d := w.drives[p]; d != nil && sig.Sequence > d.seq {
			delete(w.drives, p)
			w.send(ctx, DrivesEvent{Kind: EventDriveRemoved, Drive: p})
		}
	}
}

// readAll reads the Manager and every drive from the current owner and delivers them as
// EventServiceUp, or EventServiceDown with the error (and reads again later).
func (w *driveWatch) readAll(ctx context.Context) {
	w.hook("read")
	rctx, cancel := context.WithTimeout(ctx, watchReadTimeout)
	defer cancel()
	props, seq, err := w.getAll(rctx, ManagerPath, ManagerInterface)
	if err != nil {
		w.failed(ctx, err)
		return
	}
	var paths []dbus.ObjectPath
	if v, ok := props[PropDrives]; !ok || dbus.Store([]any{v.Value()}, &paths) != nil {
		w.failed(ctx, fmt.Errorf("cannot read plugvaultd's drives: the %s property is missing or not %s", PropDrives, "ao"))
		return
	}
	w.reminderDays, w.version, w.mgrSeq = 0, "", seq
	w.applyManager(props)
	w.hook("read-drives")
	drives := map[dbus.ObjectPath]*watchedDrive{}
	for _, p := range paths {
		d, err := w.readDrive(rctx, p)
		if errors.Is(err, errGone) {
			continue // forgotten meanwhile: its DriveRemoved is numbered after the Manager's reply
		}
		if err != nil {
			w.failed(ctx, err)
			return
		}
		drives[p] = d
	}
	w.drives, w.shown = drives, shownUp
	w.stopRetry()
	w.retryWait = 0
	ev := DrivesEvent{Kind: EventServiceUp, Drives: make([]DriveEntry, 0, len(drives))}
	for p, d := range drives {
		ev.Drives = append(ev.Drives, DriveEntry{Path: p, Status: d.st})
	}
	sort.Slice(ev.Drives, func(i, j int) bool { return ev.Drives[i].Path < ev.Drives[j].Path })
	w.hook("read-done")
	w.send(ctx, ev)
}

// failed reports a read that failed and reads again later, unless the daemon went away (its
// NameOwnerChanged follows and says so).
func (w *driveWatch) failed(ctx context.Context, err error) {
	w.down(ctx, fmt.Errorf("cannot read plugvaultd's state: %w", err))
	w.stopRetry()
	w.retryWait = min(max(2*w.retryWait, watchMinRetry), watchMaxRetry)
	w.retry = time.NewTimer(w.retryWait)
}

func (w *driveWatch) stopRetry() {
	if w.retry != nil {
		w.retry.Stop()
		w.retry = nil
	}
}

// errGone says a drive was forgotten before it could be read.
var errGone = errors.New("the drive was forgotten")

func (w *driveWatch) readDrive(ctx context.Context, p dbus.ObjectPath) (*watchedDrive, error) {
	props, seq, err := w.getAll(ctx, p, DriveInterface)
	var derr dbus.Error
	if errors.Is(err, ErrNotFound) || errors.As(err, &derr) && isUnknownObject(derr.Name) {
		return nil, errGone
	}
	if err != nil {
		return nil, err
	}
	d := &watchedDrive{seq: seq}
	if err := d.st.Apply(props); err != nil {
		return nil, err
	}
	return d, nil
}

func isUnknownObject(name string) bool {
	switch name {
	case "org.freedesktop.DBus.Error.UnknownObject", "org.freedesktop.DBus.Error.UnknownInterface",
		"org.freedesktop.DBus.Error.UnknownMethod":
		return true
	}
	return false
}

func (w *driveWatch) applyManager(props map[string]dbus.Variant) {
	if v, ok := props[PropReminderDays].Value().(uint32); ok {
		w.reminderDays = v
	}
	if v, ok := props[PropVersion].Value().(string); ok {
		w.version = v
	}
}

// getAll reads every property of iface at path from the daemon's unique name, and returns the
// sequence number of the reply.
func (w *driveWatch) getAll(ctx context.Context, path dbus.ObjectPath, iface string) (map[string]dbus.Variant, dbus.Sequence, error) {
	msg := w.c.newCall(path, "org.freedesktop.DBus.Properties", "GetAll", []any{iface})
	msg.Headers[dbus.FieldDestination] = dbus.MakeVariant(w.owner)
	call := <-w.c.conn.SendWithContext(ctx, msg, make(chan *dbus.Call, 1)).Done
	if call.Err != nil {
		return nil, 0, FromDBusError(call.Err)
	}
	var props map[string]dbus.Variant
	if err := call.Store(&props); err != nil {
		return nil, 0, fmt.Errorf("cannot decode the properties of %s: %w", path, err)
	}
	return props, call.ResponseSequence, nil
}

// changedFields names the fields of DriveStatus that differ between a and b, sorted.
func changedFields(a, b DriveStatus) []string {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	var names []string
	for i := 0; i < va.NumField(); i++ {
		if va.Field(i).Interface() != vb.Field(i).Interface() {
			names = append(names, va.Type().Field(i).Name)
		}
	}
	sort.Strings(names)
	return names
}
