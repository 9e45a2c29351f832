package drive

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/plugvault/plugvault/service/api"
)

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
		if a.kind == kindBackup {
			err := m.awaitPassphrase(a.ctx, d, a, x.dv, false)
			return evPassphraseDone{err: err, cause: x.cause()}, false
		}
		// A browse, restore or verify waits for its caller's passphrase a bounded time: the
		// caller may be a script that cannot answer.
		ctx, cancel := context.WithTimeoutCause(a.ctx, opPassphraseWait, errNoPassphrase)
		err := m.awaitPassphrase(ctx, d, a, x.dv, true)
		if err != nil {
			x.err = m.userErr(ctx, err)
		}
		cancel()
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
		var problem string
		problem, x.err = m.openReadOnly(a.ctx, d, x.dv)
		return evOpenDone{failed: x.err != nil, problem: problem}, false
	case effMountReadOnly:
		x.err = m.mountReadOnly(a.ctx, d)
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

// progress hands the engine's progress to step, which publishes it at most 5 times a second.
func (m *Manager) progress(d *drive, a *activity, p Progress) {
	m.mu.Lock()
	defer m.unlock()
	if d.act != a {
		return
	}
	m.applyLocked(d, evProgress{p: p})
}
