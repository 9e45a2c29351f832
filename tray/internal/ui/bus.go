package ui

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/tray/internal/model"
)

// Reconnection backoff when the system bus itself cannot be reached.
const (
	minBackoff = time.Second
	maxBackoff = 30 * time.Second
)

// clientRef is the current bus client, nil while disconnected.
type clientRef struct {
	mu sync.Mutex
	c  *api.Client
}

func (r *clientRef) get() *api.Client {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.c
}

func (r *clientRef) set(c *api.Client) {
	r.mu.Lock()
	r.c = c
	r.mu.Unlock()
}

// watchService connects to the system bus and turns api.WatchDrives's events into model events
// until ctx ends. When the connection drops it reports the service down and reconnects with
// exponential backoff; a restart of the service itself arrives as EventServiceDown/Up on a
// healthy connection.
func (c *controller) watchService(ctx context.Context) {
	backoff := minBackoff
	for ctx.Err() == nil {
		cl, err := c.opts.Connect(ctx)
		if err == nil {
			cl.SetInteractive(true) // the tray always lets polkit ask the user
			c.client.set(cl)
			began := time.Now()
			err = c.follow(ctx, cl)
			c.client.set(nil)
			cl.Close()
			if time.Since(began) > maxBackoff {
				backoff = minBackoff
			}
		}
		if ctx.Err() != nil {
			return
		}
		c.post(model.ServiceDown{})
		c.log.Warn("lost the system bus; reconnecting", "in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

var errConnLost = errors.New("the bus connection was closed")

// follow delivers the events of one connection; it returns when the connection drops.
func (c *controller) follow(ctx context.Context, cl *api.Client) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, err := cl.WatchDrives(wctx)
	if err != nil {
		return err
	}
	for ev := range events {
		switch ev.Kind {
		case api.EventServiceUp:
			c.post(model.ServiceUp{Drives: ev.Drives, ReminderDays: ev.ReminderDays, Version: ev.Version})
		case api.EventServiceDown:
			if ev.Err != nil {
				c.log.Warn("cannot follow the service", "err", ev.Err)
			}
			c.post(model.ServiceDown{})
		case api.EventDriveChanged:
			c.post(model.DriveChanged{Path: ev.Drive, Status: ev.Status})
		case api.EventManagerChanged:
			c.post(model.ManagerChanged{ReminderDays: ev.ReminderDays})
		case api.EventDriveAdded:
			c.post(model.DriveAdded{Path: ev.Drive, Status: ev.Status})
		case api.EventDriveRemoved:
			c.post(model.DriveRemoved{Path: ev.Drive})
		}
	}
	if !cl.Conn().Connected() {
		return errConnLost
	}
	return ctx.Err()
}
