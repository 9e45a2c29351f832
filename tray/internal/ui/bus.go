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
	readTime   = 30 * time.Second // reading the whole state after EventServiceUp
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

// watchService connects to the system bus and turns the service's signals into model events
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
	events, err := cl.Watch(wctx)
	if err != nil {
		return err
	}
	for ev := range events {
		switch ev.Kind {
		case api.EventServiceUp:
			up, err := readState(ctx, cl)
			if err != nil {
				// The service went away again while we read; its EventServiceDown follows.
				c.log.Warn("cannot read the service's state", "err", err)
				continue
			}
			c.post(up)
		case api.EventServiceDown:
			c.post(model.ServiceDown{})
		case api.EventDriveChanged:
			c.post(model.DriveChanged{Path: ev.Drive, Changed: ev.Changed})
		case api.EventManagerChanged:
			c.post(model.ManagerChanged{Changed: ev.Changed})
		case api.EventDriveAdded:
			rctx, rcancel := context.WithTimeout(ctx, readTime)
			st, err := cl.DriveStatus(rctx, ev.Drive)
			rcancel()
			if err != nil {
				c.log.Warn("cannot read a new drive", "drive", ev.Drive, "err", err)
				continue
			}
			c.post(model.DriveAdded{Path: ev.Drive, Status: st})
		case api.EventDriveRemoved:
			c.post(model.DriveRemoved{Path: ev.Drive})
		}
	}
	if !cl.Conn().Connected() {
		return errConnLost
	}
	return ctx.Err()
}

// readState reads everything the model needs after the service came up.
func readState(ctx context.Context, cl *api.Client) (model.ServiceUp, error) {
	ctx, cancel := context.WithTimeout(ctx, readTime)
	defer cancel()
	var up model.ServiceUp
	days, err := cl.ReminderDays(ctx)
	if err != nil {
		return up, err
	}
	up.ReminderDays = days
	if up.Version, err = cl.Version(ctx); err != nil {
		return up, err
	}
	paths, err := cl.ListDrives(ctx)
	if err != nil {
		return up, err
	}
	for _, p := range paths {
		st, err := cl.DriveStatus(ctx, p)
		if errors.Is(err, api.ErrNotFound) {
			continue // forgotten meanwhile; DriveRemoved follows
		}
		if err != nil {
			return up, err
		}
		up.Drives = append(up.Drives, model.DriveSnapshot{Path: p, Status: st})
	}
	return up, nil
}
