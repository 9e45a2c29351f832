package api

import "context"

// Handshake authenticates on an already connected socket (a test wraps it to see what is read).
var Handshake = handshake

// WatchDrivesHooked is WatchDrives with a hook at the points of each read of the whole state.
func WatchDrivesHooked(ctx context.Context, c *Client, hook func(point string)) (<-chan DrivesEvent, error) {
	return c.watchDrives(ctx, hook)
}
