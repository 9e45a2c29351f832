package drive

import (
	"context"

	"github.com/plugvault/plugvault/service/api"
)

// The executor: it feeds events to step under Manager.mu, runs the effects that need no I/O
// (cancelling, claiming the activity slot, logging) at once, starts the goroutines of runs and
// cleanups, hands the effects of an activity to the goroutine that owns it (actor.go), and
// queues publications, which are delivered once Manager.mu is released.

// apply feeds ev to d's machine and runs the effects; the error is the refusal of the call
// that caused ev, if any. It takes Manager.mu and publishes after releasing it.
func (m *Manager) apply(d *drive, ev event) error {
	m.mu.Lock()
	err := m.applyLocked(d, ev)
	m.unlock()
	return err
}

// applyLocked is apply with Manager.mu held; what it publishes goes out at the next unlock.
func (m *Manager) applyLocked(d *drive, ev event) error {
	actEffs, err := m.stepLocked(d, ev)
	if len(actEffs) > 0 {
		m.log.Error("internal error: an activity's effects asked for outside the activity", "drive", d.cfg.Name, "event", ev.eventName())
	}
	return err
}

// stepLocked feeds ev to d's machine and runs the effects but those of an activity, which it
// returns for the goroutine that owns the activity to run.
func (m *Manager) stepLocked(d *drive, ev event) (actEffs []effect, err error) {
	next, effs := step(d.m, ev, m.clock())
	d.m = next
	for _, e := range effs {
		switch e := e.(type) {
		case effPublish:
			m.queueLocked(d, publication{st: e.st})
		case effLog:
			m.log.Log(context.Background(), e.level, e.msg, e.args...)
		case effCancel:
			if d.act != nil {
				d.act.cancel(e.cause)
			}
		case effClaim:
			m.newActivityLocked(d, e.kind)
		case effStartRun:
			a := m.newActivityLocked(d, kindBackup)
			go m.backupRun(d, a, e.dev)
		case effStartCleanup:
			a := m.newActivityLocked(d, kindCleanup)
			a.cancel(ErrRemoved)
			x := &actor{m: m, d: d, a: a}
			go x.runEffects([]effect{effTeardown{}})
		case effRefuse:
			err = e.err
		default:
			actEffs = append(actEffs, e)
		}
	}
	return actEffs, err
}

// newActivityLocked creates the activity that holds d's slot (step has claimed it). Its owner
// ends it through endActivityLocked.
func (m *Manager) newActivityLocked(d *drive, kind string) *activity {
	ctx, cancel := context.WithCancelCause(m.baseCtx)
	a := &activity{kind: kind, ctx: ctx, cancel: cancel, done: make(chan struct{})}
	if kind != kindEject && kind != kindCleanup {
		a.pass = make(chan attempt)
	}
	d.act = a
	m.wg.Add(1)
	return a
}

// endActivityLocked releases a's slot; activityOver must follow once the publications of its
// end are out (after unlock).
func (m *Manager) endActivityLocked(d *drive, a *activity) {
	if d.act == a {
		d.act = nil
	}
	a.cancel(nil)
}

// activityOver tells those waiting for a (Eject, shutdown) that it has ended and what it
// published is out.
func (m *Manager) activityOver(a *activity) {
	close(a.done)
	m.wg.Done()
}

// publication is one call of the Publisher.
type publication struct {
	add, remove bool // AddDrive, RemoveDrive; else UpdateDrive
	st          api.DriveStatus
}

// outbox holds a drive's publications until they are delivered, in the order step made them.
// Guarded by Manager.mu; the Publisher is called without it.
type outbox struct {
	pending   []publication
	flushing  bool   // a goroutine is delivering
	dirty     bool   // listed in Manager.dirty
	queued    uint64 // publications ever queued
	delivered uint64 // publications ever delivered
}

func (m *Manager) queueLocked(d *drive, p publication) {
	if !d.out.dirty {
		d.out.dirty = true
		m.dirty = append(m.dirty, d)
	}
	d.out.pending = append(d.out.pending, p)
	d.out.queued++
	if m.onQueue != nil {
		m.onQueue(d.uuid, p.st)
	}
}

// unlock releases Manager.mu and then delivers what was queued meanwhile. Publications of one
// drive are delivered by one goroutine at a time, oldest first, so a later status never
// overtakes an earlier one; a goroutine whose publications another one is delivering waits
// until they are out, so that a call returns only after what it changed was published. The
// Publisher may call Manager methods that read, but not ones that change the same drive.
func (m *Manager) unlock() {
	dirty := m.dirty
	m.dirty = nil
	if len(dirty) == 0 {
		m.mu.Unlock()
		return
	}
	type mark struct {
		d    *drive
		upTo uint64
	}
	marks := make([]mark, 0, len(dirty))
	for _, d := range dirty {
		d.out.dirty = false
		marks = append(marks, mark{d, d.out.queued})
	}
	for _, mk := range marks {
		d := mk.d
		if d.out.flushing {
			for d.out.delivered < mk.upTo {
				m.published.Wait()
			}
			continue
		}
		d.out.flushing = true
		for len(d.out.pending) > 0 {
			ps := d.out.pending
			d.out.pending = nil
			m.mu.Unlock()
			m.deliver(d, ps)
			m.mu.Lock()
			d.out.delivered += uint64(len(ps))
			m.published.Broadcast()
		}
		d.out.flushing = false
	}
	// Publications queued by another goroutine while this one delivered are delivered by
	// this one (its loop runs until the outbox is empty), so nothing is left behind.
	m.mu.Unlock()
}

func (m *Manager) deliver(d *drive, ps []publication) {
	pub := m.deps.Publisher
	for _, p := range ps {
		switch {
		case p.add:
			if err := pub.AddDrive(d.uuid, p.st); err != nil {
				m.log.Warn("cannot publish drive", "drive", d.cfg.Name, "uuid", d.uuid, "err", err)
			}
		case p.remove:
			pub.RemoveDrive(d.uuid)
		default:
			pub.UpdateDrive(d.uuid, p.st)
		}
	}
}
