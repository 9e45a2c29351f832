package drive

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/plugvault/plugvault/service/api"
)

// passCheck is where a drive's passphrase checks are. Guarded by Manager.mu.
type passCheck struct {
	running   bool      // a check is under way
	fails     int       // wrong passphrases since the last right one
	notBefore time.Time // no check before this
}

// CheckPassphrase tells whether passphrase opens the plugged-in drive, without mapping or
// mounting anything (cryptsetup open --test-passphrase), so that its owner learns in time
// whether they still know it. The stick must carry the drive's recorded fingerprint: an
// impostor's header, or that of a drive whose fingerprint was never recorded, is refused
// before the passphrase is tried (root never runs it through a header someone else made). A
// wrong passphrase returns an error wrapping api.ErrBadPassphrase after the same growing delay
// as Unlock's, and until the delay is over other checks of this drive are refused with
// api.ErrBusy. It does not touch the drive's state: a check may run beside any activity.
func (m *Manager) CheckPassphrase(ctx context.Context, uuid string, passphrase []byte) error {
	m.mu.Lock()
	d, err := m.lookupLocked(uuid)
	if err != nil {
		m.mu.Unlock()
		return err
	}
	now := m.clock()
	switch {
	case d.m.dev == nil:
		m.mu.Unlock()
		return fmt.Errorf("cannot check the passphrase of %s: %w", d.cfg.Name, api.ErrNotPresent)
	case d.check.running:
		m.mu.Unlock()
		return fmt.Errorf("cannot check the passphrase of %s: another check is under way: %w", d.cfg.Name, api.ErrBusy)
	case now.Before(d.check.notBefore):
		wait := (d.check.notBefore.Sub(now) + time.Second - 1) / time.Second
		m.mu.Unlock()
		return fmt.Errorf("cannot check the passphrase of %s: too many wrong passphrases; try again in %d s: %w", d.cfg.Name, wait, api.ErrBusy)
	}
	d.check.running = true
	dv, pinned := *d.m.dev, d.cfg.Fingerprint
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		d.check.running = false
		m.mu.Unlock()
	}()

	got, fp, err := m.deps.LUKS.Identify(ctx, dv.DevName)
	switch {
	case err != nil:
		return fmt.Errorf("cannot check the passphrase of %s: the drive's encryption header cannot be read: %v: %w", d.cfg.Name, err, api.ErrFailed)
	case !strings.EqualFold(got, d.uuid):
		return fmt.Errorf("cannot check the passphrase of %s: %s has LUKS UUID %s: %w", d.cfg.Name, dv.DevName, got, api.ErrFailed)
	case pinned == "":
		return fmt.Errorf("cannot check the passphrase of %s: its identity has not been recorded yet, so a passphrase cannot prove that this stick is the drive — plug it in once with its keyfile: %w", d.cfg.Name, api.ErrFailed)
	case fp != pinned:
		m.notTheDrive(d, dv, pinned, "")
		return fmt.Errorf("cannot check the passphrase of %s: this stick claims to be the drive but is not: %w", d.cfg.Name, api.ErrFailed)
	}
	err = m.deps.LUKS.TestKey(ctx, dv.DevName, passphrase, -1)
	if errors.Is(err, api.ErrBadPassphrase) {
		m.mu.Lock()
		d.check.fails++
		delay := unlockDelay(d.check.fails)
		d.check.notBefore = m.clock().Add(delay)
		fails := d.check.fails
		m.mu.Unlock()
		m.log.Warn("passphrase check: wrong passphrase", "drive", d.cfg.Name, "failures", fails)
		if delay > 0 {
			select {
			case <-m.deps.After(delay):
			case <-ctx.Done():
			}
		}
		return fmt.Errorf("the passphrase does not open %s: %w", d.cfg.Name, api.ErrBadPassphrase)
	}
	if err != nil {
		return fmt.Errorf("cannot check the passphrase of %s: %v: %w", d.cfg.Name, err, api.ErrFailed)
	}
	m.mu.Lock()
	d.check.fails, d.check.notBefore = 0, time.Time{}
	m.mu.Unlock()
	m.log.Info("passphrase check: the passphrase opens the drive", "drive", d.cfg.Name)
	return nil
}
