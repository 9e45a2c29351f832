package main

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
)

// watchEvent is one line of `status --watch --json` (JSON lines).
type watchEvent struct {
	Event string     `json:"event"` // service-up, service-down, drive-changed, drive-added, drive-removed
	Path  string     `json:"path,omitempty"`
	Drive *driveJSON `json:"drive,omitempty"`
}

// liner prints status lines: on a terminal a live line that is rewritten on progress and kept
// when the state changes; otherwise one plain line per change.
type liner struct {
	a       *app
	tty     bool
	live    bool                       // a live line is on the screen (no newline yet)
	lastKey map[dbus.ObjectPath]string // state+reason last printed as a kept line
}

func newLiner(a *app) *liner {
	return &liner{a: a, tty: isTerminal(a.stdout), lastKey: map[dbus.ObjectPath]string{}}
}

// message prints a line that stays.
func (l *liner) message(s string) {
	if l.live {
		l.a.printf("\r\033[K")
		l.live = false
	}
	l.a.printf("%s\n", s)
}

// drive prints a drive's status after a change.
func (l *liner) drive(d drive) {
	line := statusLine(d)
	if !l.tty {
		l.a.printf("%s\n", line)
		return
	}
	// A run's reason moves with its progress ("Backing up 12 of 20 files"): while it runs,
	// only a new state keeps the line.
	running := d.st.State == api.StateBackingUp || d.st.State == api.StateFinishing
	key := string(d.st.State)
	if !running {
		key += "\x00" + d.st.StateReason
	}
	if l.lastKey[d.path] != key || !running {
		l.lastKey[d.path] = key
		l.message(line)
		if d.st.State == api.StateAwaitingPassphrase {
			l.message(fmt.Sprintf("    enter the passphrase with: plugvault unlock %s", shellQuote(d.label())))
		}
		return
	}
	l.a.printf("\r\033[K%s", line)
	l.live = true
}

func (l *liner) end() {
	if l.live {
		l.a.printf("\n")
		l.live = false
	}
}

// watchStatus follows the drives through api.WatchDrives (no polling) until ctx ends; Ctrl-C
// is a normal end.
func (a *app) watchStatus(ctx context.Context, arg string) error {
	events, err := a.client.WatchDrives(ctx)
	if err != nil {
		return err
	}
	l := newLiner(a)
	defer l.end()
	var only dbus.ObjectPath // set when arg names one drive
	first := true
	emit := func(kind string, d *drive, path dbus.ObjectPath, days uint32) error {
		if a.o.json {
			ev := watchEvent{Event: kind, Path: string(path)}
			if d != nil {
				j := toDriveJSON(*d, a.now(), days)
				ev.Drive = &j
			}
			return a.printJSON(ev)
		}
		switch {
		case kind == "service-up":
			l.message("plugvaultd is running")
		case kind == "service-down":
			l.message("plugvaultd is not running; waiting for it to start")
		case kind == "drive-removed":
			l.message(fmt.Sprintf("%s was removed", path))
		case d != nil:
			l.drive(*d)
		}
		return nil
	}
	for ev := range events {
		switch ev.Kind {
		case api.EventServiceUp:
			list := make([]drive, 0, len(ev.Drives))
			for _, e := range ev.Drives {
				list = append(list, drive{path: e.Path, st: e.Status})
			}
			if arg != "" {
				d, err := pickDrive(list, arg)
				if err != nil {
					if first {
						return err
					}
					l.message(err.Error())
					continue
				}
				only = d.path
				list = []drive{d}
			}
			first = false
			if err := emit("service-up", nil, "", ev.ReminderDays); err != nil {
				return err
			}
			for i := range list {
				if err := emit("drive-changed", &list[i], list[i].path, ev.ReminderDays); err != nil {
					return err
				}
			}
		case api.EventServiceDown:
			if ev.Err != nil {
				if first {
					return ev.Err
				}
				l.message(ev.Err.Error())
			}
			first = false
			if err := emit("service-down", nil, "", 0); err != nil {
				return err
			}
		case api.EventDriveAdded, api.EventDriveChanged:
			if only != "" && (ev.Drive != only || ev.Kind == api.EventDriveAdded) {
				continue
			}
			kind := "drive-changed"
			if ev.Kind == api.EventDriveAdded {
				kind = "drive-added"
			}
			if err := emit(kind, &drive{path: ev.Drive, st: ev.Status}, ev.Drive, ev.ReminderDays); err != nil {
				return err
			}
		case api.EventDriveRemoved:
			if only != "" && ev.Drive != only {
				continue
			}
			if err := emit("drive-removed", nil, ev.Drive, ev.ReminderDays); err != nil {
				return err
			}
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return errors.New("cannot follow plugvaultd: the connection to the system bus was lost")
}

// backupAndWait starts a run and follows it to its end (backup --wait).
func (a *app) backupAndWait(ctx context.Context, d drive) error {
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	events, err := a.client.WatchDrives(wctx)
	if err != nil {
		return err
	}
	// The state is read before the run starts, so every change of the run follows.
	if _, ok := <-events; !ok {
		return errors.New("cannot follow the backup: the connection to the system bus was lost")
	}
	actx, cancel := a.actionCtx(ctx)
	err = a.client.BackupNow(actx, d.path, a.options(nil))
	cancel()
	if err != nil {
		return fmt.Errorf("cannot start a backup to %s: %w", d.label(), err)
	}
	l := newLiner(a)
	defer l.end()
	if !a.o.json {
		l.message(fmt.Sprintf("Backup to %s started.", d.label()))
	}
	running := false
	for ev := range events {
		switch ev.Kind {
		case api.EventServiceDown:
			return fmt.Errorf("cannot follow the backup to %s: plugvaultd stopped", d.label())
		case api.EventDriveRemoved:
			if ev.Drive == d.path {
				return fmt.Errorf("cannot follow the backup to %s: the drive was forgotten", d.label())
			}
		case api.EventDriveChanged:
			if ev.Drive != d.path {
				continue
			}
			d.st = ev.Status
			if !a.o.json {
				l.drive(d)
			}
			if d.st.State.Running() {
				running = true
				continue
			}
			if !slices.Contains(ev.Changed, api.PropState) || !running && d.st.State != api.StateFailed {
				continue
			}
			l.end()
			return a.backupResult(d)
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("stopped waiting; the backup to %s goes on: %w", d.label(), ctx.Err())
	}
	return errors.New("cannot follow the backup: the connection to the system bus was lost")
}

func (a *app) backupResult(d drive) error {
	if a.o.json {
		if err := a.printJSON(struct {
			Drive  string `json:"drive"`
			Action string `json:"action"`
			Result string `json:"result"`
			State  string `json:"state"`
		}{string(d.path), "backup", string(d.st.LastResult), string(d.st.State)}); err != nil {
			return err
		}
	}
	reason := ""
	if d.st.StateReason != "" {
		reason = ": " + d.st.StateReason
	}
	switch {
	case d.st.State == api.StateFailed || d.st.LastResult == api.ResultFailed:
		return fmt.Errorf("backup to %s failed%s", d.label(), reason)
	case d.st.LastResult == api.ResultCancelled:
		return fmt.Errorf("backup to %s was cancelled: %w", d.label(), api.ErrCancelled)
	case d.st.LastResult == api.ResultInterrupted:
		return fmt.Errorf("backup to %s was interrupted%s; the next run resumes it", d.label(), reason)
	}
	if !a.o.json {
		a.printf("Backup to %s complete.\n", d.label())
	}
	return nil
}
