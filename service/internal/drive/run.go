package drive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/logging"
)

const (
	teardownTimeout = 2 * time.Minute
	progressEvery   = 200 * time.Millisecond // at most 5 progress publications a second

	maxUnlockDelay = 30 * time.Second
)

// stillInUse is the reason shown when teardown could not unmount or lock the drive.
const stillInUse = "The drive is still in use and could not be locked — close the programs using it, then eject it"

// userError is a failure with a reason for the user (StateReason).
type userError struct {
	reason string
	err    error
	notIO  bool // not caused by a failing device (so not by a pulled stick)
}

func (e *userError) Error() string { return e.err.Error() }
func (e *userError) Unwrap() error { return e.err }

func failf(err error, reason string, args ...any) error {
	return &userError{reason: fmt.Sprintf(reason, args...), err: err}
}

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

// backupRun is the goroutine of one run.
func (m *Manager) backupRun(d *drive, a *activity, dv device) {
	x := &actor{m: m, d: d, a: a, dv: dv}
	m.mu.Lock()
	effs, _ := m.stepLocked(d, evRunStarted{})
	m.unlock()
	x.runEffects(effs)
}

// actor runs the effects of one activity (a backup run, an eject, a browse, restore or verify)
// in the goroutine that owns it, and holds what they set up that is not state: the inhibitor,
// the mount's filesystem type and device number, the caller's work and error.
type actor struct {
	m   *Manager
	d   *drive
	a   *activity
	dv  device
	ctx context.Context // the caller's (eject): bounds the power-off

	inhibitor io.Closer
	fstype    string // of the mounted mapping
	devNum    uint64 // the mapping's device number

	// work is what a restore or verify does with the mounted drive; err is the error its
	// caller gets (from the open or the work).
	work func(ctx context.Context, target string) error
	err  error
}

// runEffects runs effs and those step asks for with their results, one at a time, until the
// activity ends. It returns step's refusal of the call that the activity serves, if any.
func (x *actor) runEffects(effs []effect) error {
	m, d, a := x.m, x.d, x.a
	var callErr error
	for len(effs) > 0 {
		ev, over := x.run(effs[0])
		effs = effs[1:]
		if over {
			m.activityOver(a)
			return callErr
		}
		if ev != nil {
			m.mu.Lock()
			more, err := m.stepLocked(d, ev)
			m.unlock()
			if err != nil {
				callErr = err
			}
			effs = append(effs, more...)
		}
	}
	m.log.Error("internal error: an activity ended without freeing its slot", "drive", d.cfg.Name, "kind", a.kind)
	return callErr
}

// cause is the activity's cancel cause once it was cancelled, else nil.
func (x *actor) cause() error {
	if x.a.ctx.Err() != nil {
		return context.Cause(x.a.ctx)
	}
	return nil
}

// run runs one effect and returns the event that reports its result (nil: none); over tells
// that the activity has ended and freed its slot.
func (x *actor) run(e effect) (ev event, over bool) {
	m, d, a := x.m, x.d, x.a
	switch e := e.(type) {
	case effInhibit:
		c, err := m.deps.Logind.Inhibit("sleep", "plugvault", "Backing up to "+d.cfg.Name, "delay")
		if err != nil {
			m.log.Warn("cannot take a sleep inhibitor; a suspend may interrupt the backup", "err", err)
		} else {
			x.inhibitor = c
		}
		return evInhibited{}, false
	case effUnlockKeyfile:
		problem, err := m.unlockWithKeyfile(a.ctx, d, x.dv, false)
		return evKeyfileDone{problem: problem, err: err, cause: x.cause()}, false
	case effAwaitPassphrase:
		err := m.awaitPassphrase(a.ctx, d, a, x.dv)
		return evPassphraseDone{err: err, cause: x.cause()}, false
	case effMount:
		var err error
		x.fstype, x.devNum, err = m.mount(a.ctx, d, false)
		return evMountDone{err: err, cause: x.cause()}, false
	case effListSnapshots:
		m.refreshSnapshots(d, m.target(d))
		return evSnapshotsRead{}, false
	case effRunEngine:
		job := Job{
			LuksUUID:  d.uuid,
			Sources:   append([]string(nil), d.cfg.Sources...),
			Excludes:  append([]string(nil), d.cfg.Excludes...),
			Target:    m.target(d),
			Host:      m.host,
			FSType:    x.fstype,
			Dev:       x.devNum,
			Retention: d.cfg.Retention,
			RunAs:     d.cfg.RunAs,
		}
		res, err := m.deps.Engine.Run(a.ctx, job, func(p Progress) { m.progress(d, a, p) })
		return evEngineDone{res: res, err: err, cause: x.cause()}, false
	case effTeardown:
		publish := e.eject || e.final && !errors.Is(context.Cause(a.ctx), ErrRemoved)
		return evTeardownDone{err: m.teardown(d, publish)}, false
	case effRelease:
		if x.inhibitor != nil {
			if err := x.inhibitor.Close(); err != nil {
				m.log.Warn("cannot release the sleep inhibitor", "err", err)
			}
		}
		return nil, false
	case effPowerOff:
		var err error
		if m.deps.PowerOff != nil {
			err = m.deps.PowerOff(x.ctx, x.dv.diskDevPath())
		}
		return evPowerOffDone{err: err}, false
	case effEndRun:
		m.mu.Lock()
		removed := errors.Is(context.Cause(a.ctx), ErrRemoved)
		m.endActivityLocked(d, a)
		m.applyLocked(d, evRunEnded{removed: removed})
		m.unlock()
		return nil, true
	case effOpenReadOnly:
		x.err = m.openReadOnly(a.ctx, d, x.dv)
		return evOpenDone{failed: x.err != nil}, false
	case effWork:
		x.err = x.work(a.ctx, m.target(d))
		if a.ctx.Err() != nil {
			x.err = fmt.Errorf("cannot %s %s: %v: %w", a.kind, d.cfg.Name, context.Cause(a.ctx), api.ErrCancelled)
		}
		return evWorkDone{}, false
	case effEndActivity:
		m.mu.Lock()
		m.endActivityLocked(d, a)
		m.unlock()
		return nil, true
	}
	panic(fmt.Sprintf("internal error: activity effect %T", e))
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
// deferred) is closed and the open tried once more.
func (m *Manager) open(ctx context.Context, d *drive, dv device, key []byte, slot int, readOnly bool) error {
	name := m.mappingName(d)
	m.apply(d, evOpenBegin{})
	err := m.deps.LUKS.Open(ctx, dv.DevName, name, key, slot, readOnly)
	if errors.Is(err, api.ErrBusy) {
		if active, aerr := m.deps.LUKS.Active(ctx, name); aerr == nil && active {
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

// awaitPassphrase tries every passphrase Unlock hands over until one opens the drive or the
// run ends.
func (m *Manager) awaitPassphrase(ctx context.Context, d *drive, a *activity, dv device) error {
	for {
		var at attempt
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case at = <-a.pass:
		}
		err := m.open(ctx, d, dv, at.passphrase, -1, false)
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

// mount mounts d's open mapping at its mount point (unless it already is) and returns its
// filesystem type and device number.
func (m *Manager) mount(ctx context.Context, d *drive, readOnly bool) (fstype string, dev uint64, err error) {
	src := m.mapperPath(d)
	fstype, err = m.deps.Mounter.FSType(src)
	if err != nil {
		return "", 0, failf(err, "The drive's filesystem cannot be recognised: %v", err)
	}
	m.mu.Lock()
	mounted := d.m.mounted
	m.applyLocked(d, evMountBegin{})
	m.unlock()
	if !mounted {
		if err := m.deps.Mounter.Mount(ctx, src, m.target(d), fstype, readOnly, d.cfg.MountOptions, d.cfg.RunAs); err != nil {
			return "", 0, failf(err, "The drive cannot be mounted: %v", err)
		}
		m.apply(d, evMounted{readOnly: readOnly})
	}
	dev, err = m.deps.Mounter.DeviceNumber(src)
	if err != nil {
		return "", 0, failf(err, "The drive's device cannot be checked: %v", err)
	}
	return fstype, dev, nil
}

// teardown unmounts and locks whatever d has set up, looking at what is really there. With
// publish, it passes through unmounting and locking.
func (m *Manager) teardown(d *drive, publish bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), teardownTimeout)
	defer cancel()
	m.mu.Lock()
	mountTried, mapTried := d.m.mountTried || d.m.mounted, d.m.mapTried || d.m.mapped
	gone := d.m.gone
	m.mu.Unlock()
	var errs []error
	if mountTried {
		if publish {
			m.apply(d, evUnmounting{})
		}
		target := m.target(d)
		mounted := true
		if infos, err := m.deps.Mounter.Mounts(m.base); err == nil {
			mounted = false
			for _, mi := range infos {
				if mi.Target == target {
					mounted = true
				}
			}
		}
		var err error
		if mounted {
			err = m.deps.Mounter.Unmount(ctx, target)
		}
		if err != nil && gone && errors.Is(err, api.ErrBusy) {
			// The stick is gone, so what still holds the mount cannot reach the device; the
			// mapping must go so that a replug works.
			m.log.Warn("the removed drive's mount is still in use; detaching it", "drive", d.cfg.Name, "err", err)
			if derr := m.deps.Mounter.Detach(target); derr != nil {
				err = errors.Join(err, derr)
			} else {
				err = nil
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("cannot unmount %s: %w", target, err))
			if !gone {
				// Keep the mapping under the mount: the drive stays unlocked and is never
				// called safe to remove; Eject tries again once the programs are closed.
				return errors.Join(errs...)
			}
		} else {
			m.apply(d, evUnmounted{})
		}
	}
	if mapTried {
		if publish {
			m.apply(d, evLocking{})
		}
		name := m.mappingName(d)
		active, err := m.deps.LUKS.Active(ctx, name)
		if err != nil || active {
			err = m.closeMapping(ctx, name)
		}
		if err != nil {
			errs = append(errs, err)
		} else {
			m.apply(d, evLocked{})
		}
	}
	if len(errs) == 0 {
		m.apply(d, evTornDown{})
	}
	return errors.Join(errs...)
}

// progress hands the engine's progress to step, which publishes it at most 5 times a second.
func (m *Manager) progress(d *drive, a *activity, p Progress) {
	m.mu.Lock()
	defer m.unlock()
	if d.act != a {
		return
	}
	m.applyLocked(d, evProgress{p: p})
}

// refreshSnapshots reads the snapshot list from the mounted drive into the cache and updates
// LastBackup and SnapshotCount.
func (m *Manager) refreshSnapshots(d *drive, target string) {
	snaps, err := m.deps.Engine.List(target, m.host)
	if err != nil {
		m.log.Warn("cannot list snapshots", "drive", d.cfg.Name, "err", err)
		return
	}
	m.mu.Lock()
	defer m.unlock()
	d.snapshots = snaps
	m.applyLocked(d, evSnapshots{snaps: snaps})
}

// groupDigits writes n with thousands separators: 8310 → "8,310".
func groupDigits(n uint64) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func plural(n uint64, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return groupDigits(n) + " " + word + "s"
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
