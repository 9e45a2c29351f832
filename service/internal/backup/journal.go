package backup

import (
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// commitInterval is how often finished work is made durable (syncfs) and journaled.
var commitInterval = 2 * time.Second

// beginLine is a journal's first line: the run has begun to change the tree.
const beginLine = "begin"

// begin marks the tree as being changed, before the run's first change. A journal that is not
// empty tells the next run that this one may have left names no commit recorded (the
// temporary file of a copy not yet renamed into place), so that run cleans every directory,
// even when this one is killed before its first commit. Only a run that changes something
// calls it: a run with nothing to do costs no sync.
func (e *engine) begin() error {
	if _, err := e.journal.Write([]byte(beginLine + "\n")); err != nil {
		return fmt.Errorf("cannot write the journal: %w", err)
	}
	if err := e.journal.Sync(); err != nil {
		return fmt.Errorf("cannot write the journal: %w", err)
	}
	return fsyncAt(e.destFd, metaDir)
}

// finish records a finished entry: it goes into the new manifest now and into the journal at
// the next commit.
func (e *engine) finish(en *Entry) {
	e.mu.Lock()
	e.out[en.Path] = en
	e.pending = append(e.pending, en)
	e.mu.Unlock()
}

// commit makes everything finished so far durable, then journals it.
func (e *engine) commit() error {
	e.mu.Lock()
	batch := e.pending
	e.pending = nil
	e.mu.Unlock()
	if err := unix.Syncfs(e.destFd); err != nil {
		return fmt.Errorf("cannot sync the target: %w", err)
	}
	if len(batch) == 0 {
		return nil
	}
	buf := make([]byte, 0, 64<<10)
	for _, en := range batch {
		buf = appendEntry(buf, en)
	}
	if _, err := e.journal.Write(buf); err != nil {
		return fmt.Errorf("cannot write the journal: %w", err)
	}
	return e.journal.Sync()
}

// journalDeletes records removals before they happen.
func (e *engine) journalDeletes(paths []string) error {
	if len(paths) == 0 {
		return nil
	}
	var buf []byte
	for _, p := range paths {
		buf = append(buf, "del "...)
		buf = append(buf, fmt.Sprintf("%q", p)...)
		buf = append(buf, '\n')
	}
	if _, err := e.journal.Write(buf); err != nil {
		return fmt.Errorf("cannot write the journal: %w", err)
	}
	return e.journal.Sync()
}

// startCommitter commits every commitInterval until the returned stop function is called.
func (e *engine) startCommitter() (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(commitInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if err := e.commit(); err != nil {
					e.fail(err)
				}
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}
