package backup

import (
	"fmt"
	"sync"
)

// Guard limits: the mount guard runs before the first write and again after this many entries
// or bytes.
var (
	guardEvery      uint64 = 1000
	guardEveryBytes uint64 = 256 << 20
)

// guardGate calls the mount guard before each batch of writes.
type guardGate struct {
	fn    func() error
	mu    sync.Mutex
	ops   uint64
	bytes uint64
}

// check calls the guard now.
func (g *guardGate) check() error {
	if g.fn == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.ops, g.bytes = 0, 0
	if err := g.fn(); err != nil {
		return fmt.Errorf("cannot write to the backup drive: %w", err)
	}
	return nil
}

// tick counts one write of n bytes and calls the guard when a batch is full.
func (g *guardGate) tick(n uint64) error {
	if g.fn == nil {
		return nil
	}
	g.mu.Lock()
	g.ops++
	g.bytes += n
	full := g.ops >= guardEvery || g.bytes >= guardEveryBytes
	g.mu.Unlock()
	if full {
		return g.check()
	}
	return nil
}
