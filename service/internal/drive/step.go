package drive

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/backup"
)

// progressEvery: at most 5 progress publications a second.
const progressEvery = 200 * time.Millisecond

// step is the drive's state machine: from the machine s and the event ev that happened at now
// it computes the next machine and the effects to run. It does no I/O, takes no lock and starts
// nothing; the executor (Manager.apply) runs the effects and feeds their results back as
// events.
func step(s machine, ev event, now time.Time) (machine, []effect) {
	t := &transition{s: s, now: now}
	t.on(ev)
	return t.s, t.effs
}

// transition accumulates one step's result.
type transition struct {
	s    machine
	now  time.Time
	effs []effect
}

func (t *transition) emit(e ...effect) { t.effs = append(t.effs, e...) }

func (t *transition) log(level slog.Level, msg string, args ...any) {
	t.emit(effLog{level: level, msg: msg, args: append([]any{"drive", t.s.st.Name, "uuid", t.s.st.LuksUUID}, args...)})
}

func (t *transition) refuse(format string, args ...any) {
	t.emit(effRefuse{err: fmt.Errorf(format, args...)})
}

func (t *transition) publish() { t.emit(effPublish{st: t.s.st}) }

// set changes the state and reason and publishes. A drive whose mapping or mount may still be
// there is never called safe to remove.
func (t *transition) set(state api.State, reason string) {
	st := &t.s.st
	if state == api.StateSafeToRemove && t.s.setUp() {
		t.log(slog.LevelError, "internal error: safe to remove while set up", "mapped", t.s.mapTried, "mounted", t.s.mountTried)
		state, reason = api.StateFailed, stillInUse
		st.FailedIn = api.StateLocking
	}
	if state != api.StateFailed {
		st.FailedIn = ""
	}
	if state != api.StateBackingUp {
		st.Progress, st.Rate, st.EtaSeconds = 0, 0, -1
		st.FilesDone, st.FilesTotal, st.BytesDone, st.BytesTotal = 0, 0, 0, 0
	}
	if st.State != state {
		t.log(slog.LevelInfo, "drive state", "state", string(state), "reason", reason)
	}
	st.State, st.StateReason = state, reason
	t.publish()
}

// fail publishes failed with reason; in is the state whose step failed (FailedIn).
func (t *transition) fail(in api.State, reason string) {
	t.s.st.FailedIn = in
	t.set(api.StateFailed, reason)
}

// closing is the step a failed teardown failed in: unmounting or locking, whichever it had
// reached (the drive's state when it failed).
func closing(st api.State) api.State {
	if st == api.StateUnmounting {
		return st
	}
	return api.StateLocking
}

func (t *transition) on(ev event) {
	s := &t.s
	name := s.st.Name
	switch ev := ev.(type) {
	case evPlug:
		switch {
		case s.dev != nil && s.dev.DevPath == ev.dev.DevPath:
			// A duplicate, or the change events our own luksOpen causes: same plug-in.
		case s.dev != nil:
			// The stick came back on a new DEVPATH before the old one's remove arrived, or a
			// second device carries the same LUKS UUID: take it once the first one is gone.
			t.log(slog.LevelWarn, "drive seen on a second device; waiting for the first one to go", "device", ev.dev.DevName, "first", s.dev.DevName)
			dv := ev.dev
			s.pending = &dv
		default:
			t.plug(ev.dev)
		}
	case evRemove:
		t.remove(ev.devPath)
	case evSleep:
		if s.act == kindBackup {
			t.emit(effCancel{cause: errSuspend})
			s.resume = true
		}
	case evResume:
		if !s.resume || s.dev == nil || s.stopping {
			return
		}
		s.resume = false
		if s.act != "" {
			s.startAfter = true
			return
		}
		t.startRun()
	case evShutdown:
		s.stopping = true
		s.startAfter = false
		if s.act != "" {
			t.emit(effCancel{cause: errShutdown})
		}
	case evShutdownLocked:
		// Every activity has ended before the shutdown locks what is left.
		if s.dev != nil && s.act == "" {
			t.set(api.StateSafeToRemove, "Safe to remove")
		}
	case evAdopted:
		if ev.mount {
			s.mountTried, s.mounted = true, true
		} else {
			s.mapTried, s.mapped = true, true
		}

	case evBackupNow:
		if t.refuseBusy("back up to") {
			return
		}
		t.startRun()
	case evCancel:
		if s.act != "" && s.act != kindEject && s.act != kindCleanup {
			t.emit(effCancel{cause: errUserCancel})
		}
	case evEject:
		switch {
		case s.dev == nil:
			t.refuse("cannot eject %s: %w", name, api.ErrNotPresent)
		case s.ejecting:
			t.refuse("cannot eject %s: it is already being ejected: %w", name, api.ErrBusy)
		case s.stopping:
			t.refuse("cannot eject %s: the service is stopping and locks it: %w", name, api.ErrBusy)
		default:
			s.ejecting, s.powerOff = true, ev.powerOff
			s.startAfter, s.resume = false, false
		}
	case evEjectWait:
		if s.act != "" && s.act != kindCleanup {
			t.emit(effCancel{cause: errEjected})
		}
	case evEjectClaim:
		// The activity the eject cancelled has ended; a removal meanwhile left nothing to eject.
		if s.act == "" && s.dev != nil {
			s.act = kindEject
			t.emit(effClaim{kind: kindEject}, effTeardown{eject: true})
		}
	case evEjectOver:
		s.ejecting, s.powerOff = false, false
	case evClaim:
		if t.refuseBusy(ev.verb) {
			return
		}
		s.act = ev.kind
		s.op = op{endState: s.st.State, endReason: s.st.StateReason, reason: ev.reason, openReason: ev.openReason}
		t.emit(effClaim{kind: ev.kind})
		t.set(api.StatePresent, ev.reason)
		switch {
		case s.mounted && ev.kind == kindBrowse:
			s.op.endState, s.op.endReason = api.StatePresent, ev.openReason
			t.endOp(nil)
			return
		case s.mounted:
			// Open for browsing: a restore or verify reads the mount as it is.
			s.op.phase = opPhaseWork
			t.emit(effWork{})
			return
		}
		s.op.phase = opPhaseOpen
		t.emit(effOpenReadOnly{})
	case evUnlockAttempt:
		switch {
		case s.dev == nil:
			t.refuse("cannot unlock %s: %w", name, api.ErrNotPresent)
		case s.unlocking:
			t.refuse("cannot unlock %s: another passphrase is being tried: %w", name, api.ErrBusy)
		case s.st.State != api.StateAwaitingPassphrase || s.act == "" || s.act == kindEject || s.act == kindCleanup:
			t.refuse("cannot unlock %s: it is not waiting for a passphrase: %w", name, api.ErrBusy)
		case t.now.Before(s.notBefore):
			wait := (s.notBefore.Sub(t.now) + time.Second - 1) / time.Second
			t.refuse("cannot unlock %s: too many wrong passphrases; try again in %d s: %w", name, wait, api.ErrBusy)
		default:
			s.unlocking = true
		}
	case evUnlockOver:
		s.unlocking = false

	case evWrongPassphrase:
		s.fails++
		delay := unlockDelay(s.fails)
		s.notBefore = t.now.Add(delay)
		t.log(slog.LevelWarn, "wrong passphrase", "failures", s.fails)
		reason := "The passphrase was wrong — try again"
		if delay > 0 {
			reason = fmt.Sprintf("The passphrase was wrong — try again in %d seconds", int(delay/time.Second))
		}
		t.set(api.StateAwaitingPassphrase, reason)
	case evPassphraseOK:
		s.fails, s.notBefore = 0, time.Time{}
	case evOpenBegin:
		s.mapTried = true
	case evOpened:
		s.mapped = true
	case evMountBegin:
		s.mountTried = true
	case evMounted:
		s.mounted, s.readOnly = true, ev.readOnly
	case evProgress:
		t.progress(ev.p)
	case evSnapshots:
		var count uint32
		var last int64
		for _, sn := range ev.snaps {
			if sn.Status != api.SnapshotComplete {
				continue
			}
			count++
			last = max(last, sn.Created)
		}
		s.st.SnapshotCount = count
		if last > 0 {
			s.st.LastBackup = uint64(last)
		}
		t.publish()
	case evUnmounting:
		t.set(api.StateUnmounting, "Unmounting the drive")
	case evUnmounted:
		s.mountTried, s.mounted, s.readOnly = false, false, false
	case evLocking:
		t.set(api.StateLocking, "Locking the drive")
	case evLocked:
		s.mapTried, s.mapped = false, false
	case evTornDown:
		s.gone = false
	default:
		if t.ejectEvent(ev) || t.opEvent(ev) {
			return
		}
		if !t.runEvent(ev) {
			panic(fmt.Sprintf("internal error: drive event %T", ev))
		}
	}
}

// refuseBusy refuses a call that needs the drive plugged in and idle; it reports whether it
// did.
func (t *transition) refuseBusy(verb string) bool {
	s, name := &t.s, t.s.st.Name
	switch {
	case s.dev == nil:
		t.refuse("cannot %s %s: %w", verb, name, api.ErrNotPresent)
	case s.act != "":
		t.refuse("cannot %s %s: %s is in progress: %w", verb, name, activityWords(s.act), api.ErrBusy)
	case s.ejecting:
		t.refuse("cannot %s %s: it is being ejected: %w", verb, name, api.ErrBusy)
	case s.stopping:
		t.refuse("cannot %s %s: the service is stopping: %w", verb, name, api.ErrFailed)
	default:
		return false
	}
	return true
}

// activityWords names an activity kind for a refusal.
func activityWords(kind string) string {
	switch kind {
	case kindBrowse:
		return "opening it for browsing"
	case kindRestore:
		return "a restore"
	case kindVerify:
		return "a verification"
	case kindEject:
		return "an eject"
	case kindCleanup:
		return "a cleanup"
	}
	return "a backup"
}

// plug makes dv the drive's device and starts a run (or queues it behind the activity that
// still holds the slot, the cleanup of the previous plug-in).
func (t *transition) plug(dv device) {
	s := &t.s
	t.log(slog.LevelInfo, "drive plugged in", "device", dv.DevName, "vendor", dv.Vendor, "model", dv.Model, "serial", dv.Serial)
	s.dev = &dv
	s.fails, s.notBefore = 0, time.Time{}
	s.resume, s.ioFailed = false, false
	s.st.Present = true
	s.st.Vendor, s.st.Model, s.st.Serial = dv.Vendor, dv.Model, dv.Serial
	if dv.Label != "" {
		s.st.Label = dv.Label
	}
	if s.act != "" || s.stopping {
		s.startAfter = !s.stopping
		t.set(api.StatePresent, "Waiting for the previous plug-in to be cleaned up")
		return
	}
	t.set(api.StatePresent, "Plugged in")
	t.startRun()
}

// remove handles the removal of devPath, which may carry the drive.
func (t *transition) remove(devPath string) {
	s := &t.s
	if s.pending != nil && s.pending.carries(devPath) {
		s.pending = nil
	}
	if s.dev == nil || !s.dev.carries(devPath) {
		return
	}
	t.log(slog.LevelInfo, "drive removed", "device", s.dev.DevName)
	s.dev = nil
	s.gone = s.setUp() || s.act != ""
	s.startAfter, s.resume = false, false
	if s.pending != nil {
		s.dev, s.pending = s.pending, nil
		s.startAfter = true
	}
	switch {
	case s.act != "":
		t.emit(effCancel{cause: ErrRemoved}) // the activity cleans up and publishes
	case s.setUp():
		// Left open for browsing: clean up in the background.
		s.act = kindCleanup
		s.op = op{phase: opPhaseCleanup, keep: true}
		t.emit(effStartCleanup{})
	case s.dev != nil:
		t.plug(*s.dev)
	default:
		s.st.Present = false
		reason := ""
		if s.ioFailed && s.st.State == api.StateFailed && t.now.Sub(s.failedAt) < pulledWindow {
			// Its writes failed before udev reported the removal.
			s.st.LastResult = api.ResultInterrupted
			reason = "The drive was removed during the backup; plug it in again to resume"
		}
		s.ioFailed = false
		t.set(api.StateAbsent, reason)
	}
}

// settle publishes where a drive is after the teardown that ended an activity, when that is
// decided by the teardown itself: absent when the stick is gone, failed when the drive could
// not be locked. It reports whether it published.
func (t *transition) settle(teardownErr error) bool {
	s := &t.s
	switch {
	case s.dev == nil:
		s.st.Present = false
		t.set(api.StateAbsent, "")
		if teardownErr != nil {
			t.log(slog.LevelError, "cannot clean up after the removed drive; replugging may fail until the programs using it exit", "err", teardownErr)
		}
		return true
	case teardownErr != nil:
		t.fail(closing(s.st.State), stillInUse)
		return true
	}
	return false
}

// progress takes the engine's progress and publishes it, at most 5 times a second.
func (t *transition) progress(p Progress) {
	s := &t.s
	if s.act != kindBackup || s.st.State != api.StateBackingUp {
		return
	}
	if p.Phase == backup.PhasePruning {
		// Making room for the run: the next phase reports again.
		return
	}
	if p.Phase == backup.PhaseFinishing {
		// Syncing, promoting and pruning: published as they begin, not once they are done.
		t.set(api.StateFinishing, "Finishing the backup")
		return
	}
	st := &s.st
	st.FilesDone, st.FilesTotal, st.BytesDone, st.BytesTotal = p.FilesDone, p.FilesTotal, p.BytesDone, p.BytesTotal
	st.Rate = p.Rate
	st.EtaSeconds = -1
	if p.ETA >= 0 {
		st.EtaSeconds = int64(p.ETA / time.Second)
	}
	switch {
	case p.BytesTotal > 0:
		st.Progress = min(float64(p.BytesDone)/float64(p.BytesTotal), 1)
	case p.FilesTotal > 0:
		st.Progress = min(float64(p.FilesDone)/float64(p.FilesTotal), 1)
	default:
		st.Progress = 0
	}
	if p.FilesTotal == 0 {
		st.StateReason = fmt.Sprintf("Looking for changes (%s found)", plural(p.FilesDone, "file"))
	} else {
		st.StateReason = fmt.Sprintf("Backing up %s of %s files", groupDigits(p.FilesDone), groupDigits(p.FilesTotal))
	}
	if since := t.now.Sub(s.lastProgress); !s.lastProgress.IsZero() && since >= 0 && since < progressEvery {
		return // the next publication carries these values
	}
	s.lastProgress = t.now
	t.publish()
}

// ejectEvent handles the results of an eject's effects; it reports whether it took ev (a
// power-off result is dropped when no eject holds the slot; a teardown result is left to the
// run then).
func (t *transition) ejectEvent(ev event) bool {
	s, name := &t.s, t.s.st.Name
	if s.act != kindEject {
		_, ok := ev.(evPowerOffDone)
		return ok
	}
	switch ev := ev.(type) {
	case evTeardownDone:
		if ev.err == nil && s.dev != nil && s.powerOff {
			t.emit(effPowerOff{})
			return true
		}
		s.act = ""
		switch {
		case t.settle(ev.err):
			if s.dev != nil {
				t.refuse("cannot eject %s: %w", name, ev.err)
			}
		default:
			t.set(api.StateSafeToRemove, "Safe to remove")
		}
		t.emit(effEndActivity{})
	case evPowerOffDone:
		s.act = ""
		var inUse interface{ InUse() []string }
		switch {
		case t.settle(nil):
			// Removed meanwhile (a power-off makes the stick go).
		case errors.As(ev.err, &inUse):
			// Ours is locked, but pulling the stick would hurt whatever else is on it: not safe.
			uses := strings.Join(inUse.InUse(), ", ")
			t.set(api.StatePresent, "Locked, but not powered off: the stick is still in use ("+uses+"); unmount that before you pull the stick")
			t.refuse("cannot power off %s: it is locked, but the stick is still in use: %s: %w", name, uses, api.ErrBusy)
		case ev.err != nil:
			t.log(slog.LevelWarn, "cannot power off the drive", "err", ev.err)
			t.set(api.StateSafeToRemove, "Safe to remove")
		default:
			t.set(api.StateSafeToRemove, "Safe to remove")
		}
		t.emit(effEndActivity{})
	default:
		return false
	}
	return true
}

// opEvent handles the results of the effects of a browse, restore, verify or cleanup; it reports
// whether it took ev (those results are dropped when none holds the slot; a teardown result
// is left to the others then).
func (t *transition) opEvent(ev event) bool {
	s := &t.s
	o := &s.op
	if s.act != kindBrowse && s.act != kindRestore && s.act != kindVerify && s.act != kindCleanup {
		switch ev.(type) {
		case evOpenDone, evWorkDone:
			return true
		}
		return false
	}
	switch ev := ev.(type) {
	case evOpenDone:
		switch {
		case o.phase != opPhaseOpen:
		case ev.problem != "":
			// The stick is the drive (its fingerprint matched) but the keyfile cannot open
			// it: Unlock hands the passphrase over, as in a run.
			o.phase = opPhasePassphrase
			t.set(api.StateAwaitingPassphrase, capitalize(ev.problem)+" — enter the passphrase")
			t.emit(effAwaitPassphrase{})
		case ev.failed:
			o.phase = opPhaseClose
			t.emit(effTeardown{})
		case s.act == kindBrowse:
			o.endState, o.endReason = api.StatePresent, o.openReason
			t.endOp(nil)
		default:
			o.opened = true
			o.phase = opPhaseWork
			t.emit(effWork{})
		}
	case evPassphraseDone:
		switch {
		case o.phase != opPhasePassphrase:
		case ev.err != nil:
			// Cancelled, or the open failed: close what the attempts may have left.
			o.phase = opPhaseClose
			if s.dev != nil {
				t.set(api.StatePresent, o.reason)
			}
			t.emit(effTeardown{})
		default:
			o.phase = opPhaseOpen
			t.set(api.StatePresent, o.reason)
			t.emit(effMountReadOnly{})
		}
	case evWorkDone:
		switch {
		case o.phase != opPhaseWork:
		case o.opened:
			o.phase = opPhaseClose
			t.emit(effTeardown{})
		default:
			t.endOp(nil)
		}
	case evTeardownDone:
		if o.phase == opPhaseClose || o.phase == opPhaseCleanup {
			t.endOp(ev.err)
		}
	default:
		return false
	}
	return true
}

// endOp ends a browse, restore, verify or cleanup. A removal while it ran only cancelled it:
// whatever is still set up (a browse mount it used, say) is torn down first.
func (t *transition) endOp(teardownErr error) {
	s := &t.s
	if teardownErr == nil && s.dev == nil && s.setUp() {
		s.op.phase = opPhaseCleanup
		t.emit(effTeardown{})
		return
	}
	o := s.op
	s.act, s.op = "", op{}
	if !t.settle(teardownErr) && !o.keep {
		t.set(o.endState, o.endReason)
	}
	if s.dev != nil && s.startAfter {
		t.plug(*s.dev)
	}
	t.emit(effEndActivity{})
}
