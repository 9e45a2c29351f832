package drive

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/logging"
)

// maxUnlockDelay caps the delay after wrong passphrases.
const maxUnlockDelay = 30 * time.Second

// unlockDelay is how long Unlock refuses new attempts after fails wrong passphrases:
// 0, 1, 2, 4, 8 … seconds, capped.
func unlockDelay(fails int) time.Duration {
	if fails <= 1 {
		return 0
	}
	if fails > 7 {
		return maxUnlockDelay
	}
	return min(time.Second<<(fails-2), maxUnlockDelay)
}

// unlockWithKeyfile checks that the plugged stick is the drive and opens the mapping with the
// keyfile. A non-empty problem (lower case, fit for the user) says why the keyfile cannot
// unlock a stick that is the drive: only then may its passphrase be asked for.
//
// The LUKS UUID only picked the config entry; anyone can copy it. The stick is the drive when
// its header carries the drive's fingerprint (its volume-key digest, recorded at enroll or
// adopt) and it opens: cryptsetup checks the key against that very digest. A stick with
// another fingerprint is an impostor, refused before the keyfile is tried (root never runs
// the key through a header someone else made, with key-derivation costs they chose). A drive
// registered before fingerprints existed has none: the stick is the drive if the keyfile opens
// it, and its fingerprint is then recorded.
func (m *Manager) unlockWithKeyfile(ctx context.Context, d *drive, dv device, readOnly bool) (problem string, err error) {
	got, fp, err := m.deps.LUKS.Identify(ctx, dv.DevName)
	if err != nil {
		return "", failf(err, "The drive's encryption header cannot be read: %v", err)
	}
	if !strings.EqualFold(got, d.uuid) {
		return "", &userError{
			reason: "The drive's encryption header does not match what udev reported; it was left alone",
			err:    fmt.Errorf("cannot unlock %s: %s has LUKS UUID %s", d.cfg.Name, dv.DevName, got),
			notIO:  true,
		}
	}
	m.mu.Lock()
	pinned := d.cfg.Fingerprint
	m.mu.Unlock()
	ours := pinned != "" && fp == pinned
	if pinned != "" && !ours {
		return "", m.notTheDrive(d, dv, pinned, "")
	}

	path := d.cfg.KeyfilePath()
	key, problem := m.readKeyfile(path)
	if problem != "" {
		m.log.Info("keyfile unusable", "drive", d.cfg.Name, "problem", problem)
		if !ours {
			return "", m.notTheDrive(d, dv, "", problem)
		}
		return problem, nil
	}
	defer clear(key)
	err = m.open(ctx, d, dv, key, d.cfg.KeySlot, readOnly)
	if errors.Is(err, api.ErrBadPassphrase) {
		problem = fmt.Sprintf("the keyfile %s was not accepted by the drive", path)
		if !ours {
			return "", m.notTheDrive(d, dv, "", problem)
		}
		m.log.Warn("the drive refused the keyfile", "drive", d.cfg.Name, "keyfile", path)
		return problem, nil
	}
	if err != nil {
		return "", failf(err, "The drive cannot be unlocked: %v", err)
	}
	if !ours {
		m.recordFingerprint(d, fp)
	}
	return "", nil
}

// notTheDrive is the refusal of a stick that carries d's LUKS UUID but not its fingerprint
// (pinned: the one recorded), or, for a drive with none recorded, that the keyfile cannot open
// (problem says why). Nothing was mapped or mounted.
func (m *Manager) notTheDrive(d *drive, dv device, pinned, problem string) error {
	if pinned == "" {
		m.log.Warn("cannot tell whether the stick is the drive: its fingerprint was never recorded and the keyfile cannot open it",
			"drive", d.cfg.Name, "device", dv.DevName, "serial", dv.Serial, "model", dv.Model, "vendor", dv.Vendor, "problem", problem)
		return &userError{
			reason: d.cfg.Name + "'s identity has not been recorded yet, so a passphrase cannot prove that this stick is the drive (" + problem +
				") — plug it in once with its keyfile, or register it again with plugvault adopt",
			err:   fmt.Errorf("cannot unlock %s: no fingerprint recorded and %s", d.cfg.Name, problem),
			notIO: true,
		}
	}
	m.log.Warn("impostor stick: it carries the drive's LUKS UUID but not its volume key; refused", logging.MessageID(logging.MessageImpostor),
		"drive", d.cfg.Name, "luks_uuid", d.uuid, "device", dv.DevName, "serial", dv.Serial, "model", dv.Model, "vendor", dv.Vendor)
	return &userError{
		reason: "This stick claims to be " + d.cfg.Name + " but is not: its encryption header is not the drive's; it was left alone",
		err:    fmt.Errorf("cannot unlock %s: %w", d.cfg.Name, errImpostor),
		notIO:  true,
	}
}

// recordFingerprint keeps fp, the fingerprint of a stick the keyfile has just opened, as the
// fingerprint of d, which had none (in memory and, through Deps.RecordFingerprint, in the
// configuration file).
func (m *Manager) recordFingerprint(d *drive, fp string) {
	m.log.Info("recording the drive's fingerprint", "drive", d.cfg.Name, "fingerprint", fp)
	m.mu.Lock()
	d.cfg.Fingerprint = fp
	m.mu.Unlock()
	if m.deps.RecordFingerprint == nil {
		return
	}
	if err := m.deps.RecordFingerprint(d.uuid, fp); err != nil {
		m.log.Error("cannot record the drive's fingerprint in the configuration; it is kept until the service restarts", "drive", d.cfg.Name, "err", err)
	}
}

// readKeyfile reads d's key through the ReadKeyfile dependency and turns a refusal into the
// reason shown to the user.
func (m *Manager) readKeyfile(path string) (key []byte, problem string) {
	key, err := m.deps.ReadKeyfile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Sprintf("the keyfile %s is missing", path)
	case err != nil:
		return nil, fmt.Sprintf("the keyfile %s is not safe to use (%v)", path, err)
	case len(key) == 0:
		return nil, fmt.Sprintf("the keyfile %s is empty", path)
	}
	return key, ""
}

// open opens d's mapping. A mapping of the same name left by an earlier plug-in (its cleanup
// deferred, or its open killed half-way when the stick was pulled: a device cryptsetup cannot
// even query) is closed and the open tried once more.
func (m *Manager) open(ctx context.Context, d *drive, dv device, key []byte, slot int, readOnly bool) error {
	name := m.mappingName(d)
	m.apply(d, evOpenBegin{})
	err := m.deps.LUKS.Open(ctx, dv.DevName, name, key, slot, readOnly)
	if errors.Is(err, api.ErrBusy) {
		if active, aerr := m.deps.LUKS.Active(ctx, name); aerr != nil || active {
			m.log.Warn("closing a stale mapping of an earlier plug-in", "mapping", name)
			if cerr := m.deps.LUKS.Close(ctx, name, false); cerr != nil {
				return fmt.Errorf("an earlier mapping %s is still in use: %w", name, cerr)
			}
			err = m.deps.LUKS.Open(ctx, dv.DevName, name, key, slot, readOnly)
		}
	}
	if err != nil {
		return err
	}
	m.apply(d, evOpened{})
	return nil
}

// opPassphraseWait bounds how long a browse, restore or verify waits for its passphrase. It is
// shorter than the tray's call timeout (10 minutes), so that the wait ends before the caller
// stops listening, and the drive does not wait for an answer nobody will get.
const opPassphraseWait = 9 * time.Minute

// errNoPassphrase ends a browse, restore or verify whose passphrase did not come.
var errNoPassphrase = errors.New("nobody entered the passphrase in time")

// awaitPassphrase tries every passphrase Unlock hands over until one opens the drive (read-only
// for a browse, restore or verify) or ctx ends.
func (m *Manager) awaitPassphrase(ctx context.Context, d *drive, a *activity, dv device, readOnly bool) error {
	for {
		var at attempt
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case at = <-a.pass:
		}
		err := m.open(ctx, d, dv, at.passphrase, -1, readOnly)
		if errors.Is(err, api.ErrBadPassphrase) && ctx.Err() == nil {
			m.apply(d, evWrongPassphrase{}) // published before the answer: the caller sees it
			at.reply <- fmt.Errorf("cannot unlock %s: the passphrase is wrong: %w", d.cfg.Name, api.ErrBadPassphrase)
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				err = context.Cause(ctx)
			}
			at.reply <- fmt.Errorf("cannot unlock %s: %w", d.cfg.Name, err)
			var ue *userError
			if !errors.As(err, &ue) && ctx.Err() == nil {
				err = failf(err, "The drive cannot be unlocked: %v", err)
			}
			return err
		}
		m.apply(d, evPassphraseOK{})
		at.reply <- nil
		return nil
	}
}
