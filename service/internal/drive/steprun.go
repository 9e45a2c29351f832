package drive

import (
	"errors"
	"log/slog"
	"slices"

	"github.com/plugvault/plugvault/service/api"
)

// The part of step that drives a backup run: unlock, mount, back up, then tear down whatever
// ended it. Each phase asks for one effect and waits for its result event.

// startRun claims the slot for a run; the run's goroutine starts with evRunStarted.
func (t *transition) startRun() {
	t.s.startAfter = false
	t.s.act = kindBackup
	t.s.run = run{}
	t.emit(effStartRun{dev: *t.s.dev})
}

// runEvent handles the result of a run's effect; it reports whether ev was one.
func (t *transition) runEvent(ev event) bool {
	s := &t.s
	r := &s.run
	if want, ok := runPhaseOf(ev); !ok {
		return false
	} else if s.act != kindBackup || !slices.Contains(want, r.phase) {
		// Not the result the run waits for (no run, or another phase): nothing to do.
		return true
	}
	switch ev := ev.(type) {
	case evRunStarted:
		r.phase = phaseInhibit
		t.emit(effInhibit{})
	case evInhibited:
		r.inhibited = true
		if s.mounted && s.readOnly {
			// Open for browsing: the run mounts it read-write.
			r.phase = phaseCloseBrowse
			t.emit(effTeardown{})
			return true
		}
		t.unlock()
	case evKeyfileDone:
		switch {
		case ev.err != nil:
			t.stop(stopped(ev.cause, ev.err))
		case ev.problem != "":
			r.phase = phasePassphrase
			t.set(api.StateAwaitingPassphrase, capitalize(ev.problem)+" — enter the passphrase")
			t.emit(effAwaitPassphrase{})
		default:
			t.mount()
		}
	case evPassphraseDone:
		if ev.err != nil {
			t.stop(stopped(ev.cause, ev.err))
			return true
		}
		t.mount()
	case evMountDone:
		switch {
		case ev.err == nil:
			r.phase = phaseSnapshots
			t.emit(effListSnapshots{})
		case !r.adopted || r.retried || ev.cause != nil:
			t.stop(stopped(ev.cause, ev.err))
		default:
			// What an earlier daemon left open is not usable (the stick was replugged while
			// it was down, say): close it and start from the stick.
			t.log(slog.LevelWarn, "cannot use the adopted mapping; opening the drive afresh", "err", ev.err)
			r.phase = phaseReopen
			t.emit(effTeardown{})
		}
	case evSnapshotsRead:
		switch r.phase {
		case phaseSnapshots:
			r.phase = phaseEngine
			t.set(api.StateBackingUp, "Preparing the backup")
			t.emit(effRunEngine{})
		case phaseFinished:
			t.stop(r.failed)
		}
	case evEngineDone:
		switch {
		case ev.err != nil && ev.cause != nil:
			t.stop(ev.cause)
		case ev.err != nil:
			// The run may have thinned snapshots before it failed: the list is read again.
			r.failed = engineFailed(s.st.Name, ev.err)
			r.phase = phaseFinished
			t.emit(effListSnapshots{})
		default:
			res := ev.res
			r.res = &res
			r.phase = phaseFinished
			if s.st.State != api.StateFinishing {
				t.set(api.StateFinishing, "Finishing the backup")
			}
			t.emit(effListSnapshots{})
		}
	case evTeardownDone:
		switch r.phase {
		case phaseCloseBrowse:
			if ev.err != nil {
				r.failedIn = api.StateUnmounting
				t.stop(failf(ev.err, "The drive is open for browsing and cannot be closed — close the windows showing it and try again"))
				return true
			}
			t.unlock()
		case phaseReopen:
			if ev.err != nil {
				r.failedIn = api.StateLocking
				t.stop(failf(ev.err, "An old mapping of the drive is still in use — close the programs using it, then plug the drive in again"))
				return true
			}
			r.retried = true
			t.unlock()
		case phaseTeardown:
			// Only now that the drive is locked may the system go to sleep.
			r.terr = ev.err
			r.phase = phaseEnd
			if r.inhibited {
				r.inhibited = false
				t.emit(effRelease{})
			}
			t.emit(effEndRun{})
		}
	case evRunEnded:
		t.runEnded(ev.removed)
	default:
		return false
	}
	return true
}

// runPhaseOf lists the phases in which the run waits for ev; ok is false when ev is not the
// result of a run's effect.
func runPhaseOf(ev event) (phases []string, ok bool) {
	switch ev.(type) {
	case evRunStarted:
		return []string{""}, true
	case evInhibited:
		return []string{phaseInhibit}, true
	case evKeyfileDone:
		return []string{phaseKeyfile}, true
	case evPassphraseDone:
		return []string{phasePassphrase}, true
	case evMountDone:
		return []string{phaseMount}, true
	case evSnapshotsRead:
		return []string{phaseSnapshots, phaseFinished}, true
	case evEngineDone:
		return []string{phaseEngine}, true
	case evTeardownDone:
		return []string{phaseCloseBrowse, phaseReopen, phaseTeardown}, true
	case evRunEnded:
		return []string{phaseEnd}, true
	}
	return nil, false
}

// unlock enters unlocking: the keyfile is tried unless the mapping is there already (adopted
// from an earlier daemon).
func (t *transition) unlock() {
	s := &t.s
	t.set(api.StateUnlocking, "Unlocking the drive")
	s.run.adopted = s.mapped
	if s.run.adopted {
		t.mount()
		return
	}
	s.run.phase = phaseKeyfile
	t.emit(effUnlockKeyfile{})
}

func (t *transition) mount() {
	t.s.run.phase = phaseMount
	t.set(api.StateMounting, "Mounting the drive")
	t.emit(effMount{})
}

// stop ends the run with err (nil: success) by tearing down what it set up. A failure is
// counted against the state the drive is in, unless the caller named the step already.
func (t *transition) stop(err error) {
	if err != nil && t.s.run.failedIn == "" {
		t.s.run.failedIn = t.s.st.State
	}
	t.s.run.err = err
	t.s.run.phase = phaseTeardown
	t.emit(effTeardown{final: true})
}

// stopped prefers the run's cancel cause over the error an interrupted effect returned.
func stopped(cause, err error) error {
	if cause != nil {
		return cause
	}
	return err
}

// runEnded publishes how a backup run ended and starts the next one if a replug or resume asked
// for it.
func (t *transition) runEnded(removed bool) {
	s := &t.s
	s.act = ""
	r := s.run
	s.run = run{}
	err := r.err
	if err != nil && removed {
		// The backup failed because the stick was pulled (its writes failed before udev
		// reported the removal).
		err = ErrRemoved
	}
	var (
		state    = api.StateSafeToRemove
		reason   string
		result   api.Result
		failedIn = r.failedIn
	)
	switch {
	case errors.Is(err, ErrRemoved):
		result, reason = api.ResultInterrupted, "The drive was removed during the backup; plug it in again to resume"
	case errors.Is(err, errShutdown):
		result, reason = api.ResultInterrupted, "The backup service stopped; the backup continues when it starts again"
	case errors.Is(err, errSuspend):
		result, reason = api.ResultInterrupted, "Paused for suspend; the backup continues after resume"
	case errors.Is(err, errEjected):
		result, reason = api.ResultCancelled, "Safe to remove"
	case errors.Is(err, errUserCancel):
		result, reason = api.ResultCancelled, "Backup cancelled — safe to remove; the next backup continues where this one stopped"
	case err != nil:
		state, result = api.StateFailed, api.ResultFailed
		reason = "The backup failed: " + err.Error()
		s.failedAt = t.now
		s.ioFailed = true
		var ue *userError
		if errors.As(err, &ue) {
			reason = ue.reason
			s.ioFailed = !ue.notIO
		}
	default:
		result, reason = api.ResultSuccess, "Backup complete"
		if r.res != nil {
			if n := len(r.res.Warnings); n > 0 {
				reason += " with " + plural(uint64(n), "warning")
			}
			if n := r.res.Dropped; n > 0 {
				// History the policy would have kept is gone: the drive is getting too small.
				reason += "; " + plural(uint64(n), "old snapshot") + " deleted to make room"
				t.log(slog.LevelWarn, "old snapshots deleted to make room on the drive; it is too small to keep the history the retention policy asks for", "count", n)
			}
		}
		reason += " — safe to remove"
		if s.st.LastBackup == 0 {
			s.st.LastBackup = uint64(t.now.Unix())
		}
	}
	if err != nil {
		t.log(slog.LevelInfo, "run ended", "result", string(result), "why", err)
	}
	s.st.LastResult = result
	terr := r.terr
	if terr != nil && !errors.Is(err, ErrRemoved) {
		t.log(slog.LevelError, "cannot lock the drive", "err", terr)
		state, result = api.StateFailed, api.ResultFailed
		s.st.LastResult = result
		reason = stillInUse
		failedIn = closing(s.st.State)
	}
	if s.ejecting && terr == nil && s.dev != nil {
		// Eject reports safe-to-remove itself, once the device is powered off.
		t.publish()
		return
	}
	if s.dev == nil {
		s.st.Present = false
		state = api.StateAbsent
		if result == api.ResultSuccess {
			reason = "Backup complete"
		} else if !errors.Is(err, ErrRemoved) && err != nil {
			reason = "The drive was removed"
		}
		if errors.Is(err, ErrRemoved) && terr != nil {
			t.log(slog.LevelError, "cannot clean up after the removed drive; replugging may fail until the programs using it exit", "err", terr)
		}
	}
	s.st.FailedIn = failedIn // set keeps it only if state is failed
	t.set(state, reason)
	if s.dev != nil && !s.stopping && !s.ejecting && s.startAfter {
		t.plug(*s.dev)
	}
}
