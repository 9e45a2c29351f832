package api

import (
	"context"

	"github.com/godbus/dbus/v5"
)

// Handshake authenticates on an already connected socket (a test wraps it to see what is read).
var Handshake = handshake

// WatchDrivesHooked is WatchDrives with a hook at the points of each read of the whole state.
func WatchDrivesHooked(ctx context.Context, c *Client, hook func(point string)) (<-chan DrivesEvent, error) {
	return c.watchDrives(ctx, hook)
}

// WatchDrivesFrom runs WatchDrives on the signals the test sends on sigs (numbered by the
// test) instead of the connection's.
func WatchDrivesFrom(ctx context.Context, c *Client, sigs <-chan *dbus.Signal) (<-chan DrivesEvent, error) {
	w := &driveWatch{c: c, out: make(chan DrivesEvent, 16), hook: func(string) {}}
	if err := w.askOwner(ctx); err != nil {
		return nil, err
	}
	go w.run(ctx, sigs)
	return w.out, nil
}
