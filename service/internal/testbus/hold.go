package testbus

import (
	"context"
	"sync"
)

// Held is a call of the fake backend that a test holds: it stands for a long operation (a
// restore, a verification, an enrollment that formats a stick) that the test lets run, report
// progress, and end when it chooses.
type Held struct {
	entered  chan struct{} // closed when the call arrived
	released chan struct{} // closed by Release
	returned chan struct{} // closed when the call returned
	once     sync.Once
	progress func(done, total uint64) // the call's progress callback, set before entered is closed
	err      error                    // set by Release before released is closed
	result   error                    // what the call returned, set before returned is closed
}

// Hold makes the next call of method ("Restore", "Verify", "Enroll", …) block once it is
// recorded, until Release or until the call's context ends (it then returns the context's
// error, as a backend that honours cancellation does).
func (b *FakeBackend) Hold(method string) *Held {
	h := &Held{entered: make(chan struct{}), released: make(chan struct{}), returned: make(chan struct{})}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.holds == nil {
		b.holds = map[string]*Held{}
	}
	b.holds[method] = h
	return h
}

// Entered is closed when the held call has arrived.
func (h *Held) Entered() <-chan struct{} { return h.entered }

// Returned is closed when the held call has returned; Result then says what it returned.
func (h *Held) Returned() <-chan struct{} { return h.returned }

// Result is what the held call returned (after Returned is closed).
func (h *Held) Result() error {
	<-h.returned
	return h.result
}

// Progress reports progress from inside the held call through the progress callback the
// daemon passed to it, as the engine does. It waits until the call has arrived; a call that
// takes no callback (Enroll) reports nothing.
func (h *Held) Progress(bytesDone, bytesTotal uint64) {
	<-h.entered
	if h.progress != nil {
		h.progress(bytesDone, bytesTotal)
	}
}

// Release lets the held call return err (nil: the fake's usual answer). Only the first
// Release counts.
func (h *Held) Release(err error) {
	h.once.Do(func() {
		h.err = err
		close(h.released)
	})
}

// hold blocks the call of method if a test holds it; it returns the error the call should
// return instead of the fake's usual answer, or nil. progress is the call's progress callback
// (may be nil).
func (b *FakeBackend) hold(ctx context.Context, method string, progress func(done, total uint64)) error {
	b.mu.Lock()
	h := b.holds[method]
	delete(b.holds, method)
	b.mu.Unlock()
	if h == nil {
		return nil
	}
	h.progress = progress
	close(h.entered)
	var err error
	select {
	case <-h.released:
		err = h.err
	case <-ctx.Done():
		err = ctx.Err()
	}
	h.result = err
	close(h.returned)
	return err
}
