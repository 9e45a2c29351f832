package metrics

import "time"

// SetClock and SetStatfs replace the clock and the free-space probe.
func (c *Collector) SetClock(f func() time.Time)                   { c.clock = f }
func (c *Collector) SetStatfs(f func(path string) (uint64, error)) { c.statfs = f }

// NextOverdue is nextOverdue; BackedUp is the channel that wakes WatchOverdue.
func (c *Collector) NextOverdue(days uint32) (time.Time, bool) { return c.nextOverdue(days) }
func (c *Collector) BackedUp() <-chan struct{}                 { return c.backedUp }
