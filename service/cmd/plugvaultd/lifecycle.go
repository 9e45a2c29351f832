package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/plugvault/plugvault/service/internal/metrics"
)

// drainTimeout bounds the wait for the calls in flight at a stop (Daemon.Drain). With the
// manager's own cleanup after it, it stays well under the unit's TimeoutStopSec (90 s).
const drainTimeout = 45 * time.Second

// background starts what runs beside the drive manager until ctx ends: the systemd watchdog,
// the metrics' overdue watch (it sleeps until the earliest due time) and the runtime figures on
// SIGUSR1. The returned wait blocks until all of them have stopped.
func background(ctx context.Context, logger *slog.Logger, col *metrics.Collector, reminderDays uint32) (wait func()) {
	watchdogDone := watchdog(ctx, logger)
	overdueDone := make(chan struct{})
	go func() { col.WatchOverdue(ctx, reminderDays); close(overdueDone) }()
	statsDone := logRuntimeOnSignal(ctx, logger)
	return func() { <-watchdogDone; <-overdueDone; <-statsDone }
}
