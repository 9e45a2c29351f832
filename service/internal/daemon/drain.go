package daemon

import (
	"context"
	"fmt"
)

// errStopping is the answer to a call that arrives while the daemon drains or after it closed.
func errStopping(verb string) error {
	return failed("cannot %s: plugvaultd is stopping; try again once it runs again", verb)
}

// enter counts a call in flight; it fails once Drain has begun.
func (d *Daemon) enter(verb string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.draining || d.closed {
		return errStopping(verb)
	}
	d.inflight++
	return nil
}

// leave ends a call (or job) that enter (or startJob) counted.
func (d *Daemon) leave() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.inflight--
	if d.inflight == 0 && d.idle != nil {
		close(d.idle)
		d.idle = nil
	}
}

// Drain stops taking calls and waits until the calls in flight have returned, so that a stop
// does not cut an Enroll's rollback: every later call that needs authorization fails at once
// with Failed ("plugvaultd is stopping"). Running jobs are cancelled (they clean up and
// announce Completed) and waited for like calls. Drain returns ctx's error when ctx ends
// first. The drive manager keeps running meanwhile: the calls need it; stop it after Drain,
// then Close.
func (d *Daemon) Drain(ctx context.Context) error {
	d.mu.Lock()
	d.draining = true
	jobs := make([]*job, 0, len(d.jobs))
	for _, j := range d.jobs {
		jobs = append(jobs, j)
	}
	n := d.inflight
	if n > 0 && d.idle == nil {
		d.idle = make(chan struct{})
	}
	idle := d.idle
	d.mu.Unlock()
	for _, j := range jobs {
		j.stop(whyStopping)
	}
	if n == 0 {
		return nil
	}
	d.log.Info("waiting for the calls in progress", "calls", n)
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("cannot finish the calls in progress: %w", ctx.Err())
	}
}
