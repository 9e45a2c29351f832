package metrics

import "time"

// SetClock and SetStatfs replace the clock and the free-space probe.
func (c *Collector) SetClock(f func() time.Time)                   { c.clock = f }
func (c *Collector) SetStatfs(f func(path string) (uint64, error)) { c.statfs = f }
