package drive

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/plugvault/plugvault/service/api"
)

// Unlock hands a passphrase to the run that awaits one. A wrong passphrase returns an error
// wrapping api.ErrBadPassphrase and the drive keeps waiting. After repeated failures the
// answer comes more and more slowly (0, 1, 2, 4 … s, capped), and until the delay is over any
// other attempt on this drive is refused with api.ErrBusy (also when the caller gave up
// waiting); only this call waits, no other drive. Unlock on a drive that does not await a
// passphrase fails with api.ErrBusy. The passphrase is used before Unlock returns and never
// kept: the caller zeroes it afterwards.
func (m *Manager) Unlock(ctx context.Context, uuid string, passphrase []byte) error {
	m.mu.Lock()
	d, err := m.lookupLocked(uuid)
	if err != nil {
		m.mu.Unlock()
		return err
	}
	a := d.act
	switch {
	case d.dev == nil:
		m.mu.Unlock()
		return fmt.Errorf("cannot unlock %s: %w", d.cfg.Name, api.ErrNotPresent)
	case d.unlocking:
		m.mu.Unlock()
		return fmt.Errorf("cannot unlock %s: another passphrase is being tried: %w", d.cfg.Name, api.ErrBusy)
	case a == nil || a.kind != kindBackup || d.st.State != api.StateAwaitingPassphrase:
		m.mu.Unlock()
		return fmt.Errorf("cannot unlock %s: it is not waiting for a passphrase: %w", d.cfg.Name, api.ErrBusy)
	}
	if now := m.clock(); now.Before(d.notBefore) {
		wait := (d.notBefore.Sub(now) + time.Second - 1) / time.Second
		m.mu.Unlock()
		return fmt.Errorf("cannot unlock %s: too many wrong passphrases; try again in %d s: %w", d.cfg.Name, wait, api.ErrBusy)
	}
	d.unlocking = true
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		d.unlocking = false
		m.mu.Unlock()
	}()
	reply := make(chan error, 1)
	select {
	case a.pass <- attempt{passphrase: passphrase, reply: reply}:
	case <-a.ctx.Done():
		return fmt.Errorf("cannot unlock %s: %v: %w", d.cfg.Name, context.Cause(a.ctx), api.ErrCancelled)
	case <-ctx.Done():
		return fmt.Errorf("cannot unlock %s: %w", d.cfg.Name, ctx.Err())
	}
	// The run uses the passphrase until it answers: wait for the answer whatever ctx does.
	err = <-reply
	if errors.Is(err, api.ErrBadPassphrase) {
		m.mu.Lock()
		wait := d.notBefore.Sub(m.clock())
		m.mu.Unlock()
		if wait > 0 {
			select {
			case <-m.deps.After(wait):
			case <-a.ctx.Done():
			case <-ctx.Done():
			}
		}
	}
	return err
}

// BackupNow starts a run on a plugged-in drive that is idle (present, safe to remove or
// failed) and returns once it has started.
func (m *Manager) BackupNow(ctx context.Context, uuid string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, err := m.lookupLocked(uuid)
	if err != nil {
		return err
	}
	switch {
	case d.dev == nil:
		return fmt.Errorf("cannot back up to %s: %w", d.cfg.Name, api.ErrNotPresent)
	case d.act != nil:
		return busyErrLocked(d, "back up to")
	case d.ejecting:
		return fmt.Errorf("cannot back up to %s: it is being ejected: %w", d.cfg.Name, api.ErrBusy)
	case m.stopping:
		return fmt.Errorf("cannot back up to %s: the service is stopping: %w", d.cfg.Name, api.ErrFailed)
	}
	m.startBackupLocked(d)
	return nil
}

// Cancel stops the drive's current activity at a safe point; a backup run then unmounts and
// locks the drive. Cancelling an idle drive does nothing.
func (m *Manager) Cancel(ctx context.Context, uuid string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, err := m.lookupLocked(uuid)
	if err != nil {
		return err
	}
	if d.act != nil && d.act.kind != kindEject && d.act.kind != kindCleanup {
		d.act.cancel(errUserCancel)
	}
	return nil
}

// Eject stops any activity, unmounts and locks the drive, powers the USB device off if asked,
// and returns once the drive is safe to remove. When something else still uses the stick (a
// filesystem of another partition is mounted, another mapping sits on it), the drive stays
// locked but is not powered off, its state is present with a reason naming the users, and the
// error wraps api.ErrBusy.
func (m *Manager) Eject(ctx context.Context, uuid string, powerOff bool) error {
	m.mu.Lock()
	d, err := m.lookupLocked(uuid)
	if err != nil {
		m.mu.Unlock()
		return err
	}
	if d.dev == nil {
		m.mu.Unlock()
		return fmt.Errorf("cannot eject %s: %w", d.cfg.Name, api.ErrNotPresent)
	}
	if d.ejecting {
		m.mu.Unlock()
		return fmt.Errorf("cannot eject %s: it is already being ejected: %w", d.cfg.Name, api.ErrBusy)
	}
	if m.stopping {
		m.mu.Unlock()
		return fmt.Errorf("cannot eject %s: the service is stopping and locks it: %w", d.cfg.Name, api.ErrBusy)
	}
	d.ejecting = true
	d.startAfter, d.resume = false, false
	defer func() {
		m.mu.Lock()
		d.ejecting = false
		m.mu.Unlock()
	}()
	for d.act != nil {
		a := d.act
		if a.kind != kindCleanup {
			a.cancel(errEjected)
		}
		m.mu.Unlock()
		// Not bounded by ctx: the activity's teardown is, and the drive must be left in a
		// known state (its state is published by this call once it is safe).
		<-a.done
		m.mu.Lock()
	}
	if d.dev == nil {
		m.mu.Unlock()
		return nil // removed meanwhile, and cleaned up: nothing left to eject
	}
	dv := *d.dev
	a := m.newActivityLocked(d, kindEject)
	m.mu.Unlock()

	terr := m.teardown(d, true)
	var perr error
	if terr == nil && powerOff && m.deps.PowerOff != nil {
		perr = m.deps.PowerOff(ctx, dv.diskDevPath())
	}
	// What else uses the stick, when that kept it from being powered off
	// (usbpower.InUseError).
	var inUse interface{ InUse() []string }
	m.mu.Lock()
	defer close(a.done)
	defer m.mu.Unlock()
	defer m.wg.Done()
	d.act = nil
	a.cancel(nil)
	switch {
	case m.settleLocked(d, terr):
		if d.dev != nil {
			return fmt.Errorf("cannot eject %s: %w", d.cfg.Name, terr)
		}
	case errors.As(perr, &inUse):
		// Ours is locked, but pulling the stick would hurt whatever else is on it: not safe.
		uses := strings.Join(inUse.InUse(), ", ")
		m.setStateLocked(d, api.StatePresent, "Locked, but not powered off: the stick is still in use ("+uses+"); unmount that before you pull the stick")
		return fmt.Errorf("cannot power off %s: it is locked, but the stick is still in use: %s: %w", d.cfg.Name, uses, api.ErrBusy)
	case perr != nil:
		m.log.Warn("cannot power off the drive", "drive", d.cfg.Name, "err", perr)
		m.setStateLocked(d, api.StateSafeToRemove, "Safe to remove")
	default:
		m.setStateLocked(d, api.StateSafeToRemove, "Safe to remove")
	}
	return nil
}

// RunAs returns the drive's run_as user ("" when it has none).
func (m *Manager) RunAs(ctx context.Context, uuid string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, err := m.lookupLocked(uuid)
	if err != nil {
		return "", err
	}
	return d.cfg.RunAs, nil
}

// ListSnapshots returns the snapshot list read the last time the drive was mounted; it never
// touches the drive.
func (m *Manager) ListSnapshots(ctx context.Context, uuid string) ([]api.Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, err := m.lookupLocked(uuid)
	if err != nil {
		return nil, err
	}
	return append([]api.Snapshot(nil), d.snapshots...), nil
}

// Browse unlocks the drive with its keyfile and mounts it read-only at
// <mount_base>/<luks_uuid>/drive, which it returns (only root and run_as can reach it). The
// drive then stays present (not safe to remove) until Eject, a backup run or its removal.
func (m *Manager) Browse(ctx context.Context, uuid string, caller Caller) (string, error) {
	m.mu.Lock()
	d, err := m.lookupLocked(uuid)
	if err != nil {
		m.mu.Unlock()
		return "", err
	}
	if err := m.idleLocked(d, "browse"); err != nil {
		m.mu.Unlock()
		return "", err
	}
	target := m.target(d)
	if d.mounted {
		m.mu.Unlock()
		return target, nil
	}
	dv := *d.dev
	a := m.newActivityLocked(d, kindBrowse)
	prev := d.st
	m.setStateLocked(d, api.StatePresent, "Opening the drive for browsing")
	m.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { a.cancel(ctx.Err()) })
	defer stop()

	if err := m.openReadOnly(a.ctx, d, dv); err != nil {
		terr := m.teardown(d, false)
		m.endActivity(d, a, &prev, terr)
		return "", err
	}
	m.log.Info("drive open for browsing", "drive", d.cfg.Name, "uid", caller.UID, "target", target)
	st := prev
	st.State, st.StateReason = api.StatePresent, "Open for browsing (read-only) at "+target+" — eject the drive when you are done"
	m.endActivity(d, a, &st, nil)
	return target, nil
}

// Restore restores from a snapshot with the caller's credentials, mounting the drive read-only
// for the time of the restore unless it is open for browsing.
func (m *Manager) Restore(ctx context.Context, uuid string, req RestoreRequest) error {
	return m.withDrive(ctx, uuid, kindRestore, "Restoring from snapshot "+req.Snapshot, func(ctx context.Context, d *drive, target string) error {
		if _, err := m.snapshot(d, req.Snapshot, false); err != nil {
			return err
		}
		return m.deps.Engine.Restore(ctx, target, m.host, req)
	})
}

// Verify re-reads a snapshot ("" = the newest complete one) and compares it with its
// manifest, mounting the drive read-only for the time of the check unless it is open for
// browsing.
func (m *Manager) Verify(ctx context.Context, uuid, snapshot string, caller Caller) (checked uint64, problems []string, err error) {
	reason := "Verifying snapshot " + snapshot
	if snapshot == "" {
		reason = "Verifying the latest snapshot"
	}
	err = m.withDrive(ctx, uuid, kindVerify, reason, func(ctx context.Context, d *drive, target string) error {
		name, err := m.snapshot(d, snapshot, true)
		if err != nil {
			return err
		}
		var verr error
		checked, problems, verr = m.deps.Engine.Verify(ctx, target, m.host, name, caller)
		return verr
	})
	return checked, problems, err
}

// snapshot checks that name is on the drive (as read when it was mounted); with newest, ""
// names the newest complete snapshot.
func (m *Manager) snapshot(d *drive, name string, newest bool) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var latest *api.Snapshot
	for i, s := range d.snapshots {
		if name != "" && s.Name == name {
			return name, nil
		}
		if s.Status == api.SnapshotComplete && (latest == nil || s.Created > latest.Created) {
			latest = &d.snapshots[i]
		}
	}
	switch {
	case name != "":
		return "", fmt.Errorf("cannot find snapshot %q on %s: %w", name, d.cfg.Name, api.ErrNotFound)
	case newest && latest != nil:
		return latest.Name, nil
	}
	return "", fmt.Errorf("cannot find a complete snapshot on %s: %w", d.cfg.Name, api.ErrNotFound)
}

// idleLocked checks that d is plugged in and free for an operation.
func (m *Manager) idleLocked(d *drive, verb string) error {
	switch {
	case d.dev == nil:
		return fmt.Errorf("cannot %s %s: %w", verb, d.cfg.Name, api.ErrNotPresent)
	case d.act != nil:
		return busyErrLocked(d, verb)
	case d.ejecting:
		return fmt.Errorf("cannot %s %s: it is being ejected: %w", verb, d.cfg.Name, api.ErrBusy)
	case m.stopping:
		return fmt.Errorf("cannot %s %s: the service is stopping: %w", verb, d.cfg.Name, api.ErrFailed)
	}
	return nil
}

// withDrive runs fn with the drive mounted (read-only unless it already is) and puts it back
// as it was afterwards.
func (m *Manager) withDrive(ctx context.Context, uuid, kind, reason string, fn func(ctx context.Context, d *drive, target string) error) error {
	m.mu.Lock()
	d, err := m.lookupLocked(uuid)
	if err != nil {
		m.mu.Unlock()
		return err
	}
	if err := m.idleLocked(d, kind); err != nil {
		m.mu.Unlock()
		return err
	}
	dv := *d.dev
	wasMounted := d.mounted
	a := m.newActivityLocked(d, kind)
	prev := d.st
	m.setStateLocked(d, api.StatePresent, reason)
	m.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { a.cancel(ctx.Err()) })
	defer stop()

	if !wasMounted {
		if err := m.openReadOnly(a.ctx, d, dv); err != nil {
			m.endActivity(d, a, &prev, m.teardown(d, false))
			return err
		}
	}
	err = fn(a.ctx, d, m.target(d))
	if a.ctx.Err() != nil {
		err = fmt.Errorf("cannot %s %s: %v: %w", kind, d.cfg.Name, context.Cause(a.ctx), api.ErrCancelled)
	}
	var terr error
	if !wasMounted {
		terr = m.teardown(d, false)
	}
	m.endActivity(d, a, &prev, terr)
	return err
}

// openReadOnly unlocks with the keyfile (there is nobody to ask for a passphrase) and mounts
// read-only.
func (m *Manager) openReadOnly(ctx context.Context, d *drive, dv device) error {
	problem, err := m.unlockWithKeyfile(ctx, d, dv, true)
	if err == nil && problem != "" {
		err = fmt.Errorf("cannot unlock %s: %s, and opening a drive outside a backup needs its keyfile: %w", d.cfg.Name, problem, api.ErrFailed)
	}
	if err != nil {
		return m.userErr(ctx, err)
	}
	if _, _, err := m.mount(ctx, d, true); err != nil {
		return m.userErr(ctx, err)
	}
	m.refreshSnapshots(d, m.target(d))
	return nil
}

// userErr turns a step's error into one for a D-Bus caller.
func (m *Manager) userErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("cannot open the drive: %v: %w", context.Cause(ctx), api.ErrCancelled)
	}
	var ue *userError
	if errors.As(err, &ue) {
		return fmt.Errorf("cannot open the drive: %s: %w", strings.ToLower(ue.reason[:1])+ue.reason[1:], api.ErrFailed)
	}
	return err
}
