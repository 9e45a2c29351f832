package mount

import "time"

// SetRetries makes Unmount give up sooner in tests.
func (m *Mounter) SetRetries(n int, delay time.Duration) { m.retries, m.retryDelay = n, delay }
