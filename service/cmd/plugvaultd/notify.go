package main

import (
	"context"
	"log/slog"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
)

// watchdog pings systemd's watchdog at half its interval until ctx ends; it is the daemon's
// only timer. The returned channel is closed when it has stopped.
func watchdog(ctx context.Context, logger *slog.Logger) <-chan struct{} {
	done := make(chan struct{})
	interval, err := sd.SdWatchdogEnabled(false)
	if err != nil || interval <= 0 {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		t := time.NewTicker(interval / 2)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				notify(logger, sd.SdNotifyWatchdog)
			}
		}
	}()
	return done
}

func notify(logger *slog.Logger, state string) {
	if _, err := sd.SdNotify(false, state); err != nil {
		logger.Warn("cannot notify systemd", "state", state, "error", err)
	}
}
