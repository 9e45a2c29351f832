package drive

import (
	"context"
	"errors"
	"fmt"

	"github.com/plugvault/plugvault/service/api"
)

// Unlock hands a passphrase to the activity that awaits one: a backup run, or a browse,
// restore or verify whose keyfile cannot open the drive. A wrong passphrase returns an error
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
	if err := m.applyLocked(d, evUnlockAttempt{}); err != nil {
		m.unlock()
		return err
	}
	m.unlock()
	defer m.apply(d, evUnlockOver{})
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
		wait := d.m.notBefore.Sub(m.clock())
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
	defer m.unlock()
	d, err := m.lookupLocked(uuid)
	if err != nil {
		return err
	}
	return m.applyLocked(d, evBackupNow{})
}

// Cancel stops the drive's current activity at a safe point; a backup run then unmounts and
// locks the drive. Cancelling an idle drive does nothing.
func (m *Manager) Cancel(ctx context.Context, uuid string) error {
	m.mu.Lock()
	defer m.unlock()
	d, err := m.lookupLocked(uuid)
	if err != nil {
		return err
	}
	return m.applyLocked(d, evCancel{})
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
	if err := m.applyLocked(d, evEject{powerOff: powerOff}); err != nil {
		m.unlock()
		return err
	}
	defer m.apply(d, evEjectOver{})
	for d.act != nil {
		a := d.act
		m.applyLocked(d, evEjectWait{})
		m.unlock()
		// Not bounded by ctx: the activity's teardown is, and the drive must be left in a
		// known state (its state is published by this call once it is safe).
		<-a.done
		m.mu.Lock()
	}
	effs, _ := m.stepLocked(d, evEjectClaim{})
	if len(effs) == 0 {
		m.unlock()
		return nil // removed meanwhile, and cleaned up: nothing left to eject
	}
	x := &actor{m: m, d: d, a: d.act, dv: *d.m.dev, ctx: ctx}
	m.unlock()
	return x.runEffects(effs)
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

// Browse unlocks the drive with its keyfile (or, when that cannot open it, with the
// passphrase Unlock hands over) and mounts it read-only at
// <mount_base>/<luks_uuid>/drive, which it returns (only root and run_as can reach it). The
// drive then stays present (not safe to remove) until Eject, a backup run or its removal.
func (m *Manager) Browse(ctx context.Context, uuid string, caller Caller) (string, error) {
	m.mu.Lock()
	d, err := m.lookupLocked(uuid)
	if err != nil {
		m.mu.Unlock()
		return "", err
	}
	target := m.target(d)
	if d.m.dev != nil && d.m.act == "" && !d.m.ejecting && !d.m.stopping && d.m.mounted {
		m.mu.Unlock()
		return target, nil
	}
	effs, err := m.stepLocked(d, evClaim{kind: kindBrowse, verb: "browse", reason: "Opening the drive for browsing",
		openReason: "Open for browsing (read-only) at " + target + " — eject the drive when you are done"})
	if err != nil {
		m.unlock()
		return "", err
	}
	x := &actor{m: m, d: d, a: d.act, dv: *d.m.dev, ctx: ctx}
	m.unlock()
	stop := context.AfterFunc(ctx, func() { x.a.cancel(ctx.Err()) })
	defer stop()
	x.runEffects(effs)
	if x.err != nil {
		return "", x.err
	}
	m.log.Info("drive open for browsing", "drive", d.cfg.Name, "uid", caller.UID, "target", target)
	return target, nil
}

// Restore restores from a snapshot with the caller's credentials, mounting the drive read-only
// for the time of the restore unless it is open for browsing. progress (may be nil) gets the
// engine's bytes done and total.
func (m *Manager) Restore(ctx context.Context, uuid string, req RestoreRequest, progress func(done, total uint64)) error {
	return m.withDrive(ctx, uuid, kindRestore, "Restoring from snapshot "+req.Snapshot, func(ctx context.Context, d *drive, target string) error {
		if _, err := m.snapshot(d, req.Snapshot, false); err != nil {
			return err
		}
		return m.deps.Engine.Restore(ctx, target, m.host, req, progress)
	})
}

// Verify re-reads a snapshot ("" = the newest complete one) and compares it with its
// manifest, mounting the drive read-only for the time of the check unless it is open for
// browsing. progress (may be nil) gets the engine's bytes done and total.
func (m *Manager) Verify(ctx context.Context, uuid, snapshot string, caller Caller, progress func(done, total uint64)) (checked uint64, problems []string, err error) {
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
		checked, problems, verr = m.deps.Engine.Verify(ctx, target, m.host, name, caller, progress)
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

// withDrive runs fn with the drive mounted (read-only unless it already is) and puts it back
// as it was afterwards.
func (m *Manager) withDrive(ctx context.Context, uuid, kind, reason string, fn func(ctx context.Context, d *drive, target string) error) error {
	m.mu.Lock()
	d, err := m.lookupLocked(uuid)
	if err != nil {
		m.mu.Unlock()
		return err
	}
	effs, err := m.stepLocked(d, evClaim{kind: kind, verb: kind, reason: reason})
	if err != nil {
		m.unlock()
		return err
	}
	x := &actor{m: m, d: d, a: d.act, dv: *d.m.dev, ctx: ctx,
		work: func(ctx context.Context, target string) error { return fn(ctx, d, target) }}
	m.unlock()
	stop := context.AfterFunc(ctx, func() { x.a.cancel(ctx.Err()) })
	defer stop()
	x.runEffects(effs)
	return x.err
}
