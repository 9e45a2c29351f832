package main

import (
	"bufio"
	"context"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// logLevelEnv names the environment variable that lowers the log level to debug (a systemd
// drop-in sets it; the e2e guest does, to see each step of a run: service/e2e/README.md).
const logLevelEnv = "PLUGVAULTD_LOG_LEVEL"

// logLevel is debug when value is "debug", else info.
func logLevel(value string) slog.Level {
	if strings.EqualFold(strings.TrimSpace(value), "debug") {
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

// logRuntimeOnSignal logs the daemon's goroutines, open file descriptors and resident memory
// each time it gets SIGUSR1 (`systemctl kill -s USR1 plugvaultd`), until ctx ends.
func logRuntimeOnSignal(ctx context.Context, logger *slog.Logger) <-chan struct{} {
	done := make(chan struct{})
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	go func() {
		defer close(done)
		defer signal.Stop(sig)
		for {
			select {
			case <-ctx.Done():
				return
			case <-sig:
				logRuntime(logger)
			}
		}
	}()
	return done
}

// logRuntime logs GOROUTINES, FDS and RSS_KIB (from /proc/self; -1 when unreadable).
func logRuntime(logger *slog.Logger) {
	fds := -1
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		fds = len(ents) - 1 // the directory being read
	}
	logger.Info("runtime", "goroutines", runtime.NumGoroutine(), "fds", fds, "rss_kib", rssKiB())
}

func rssKiB() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return -1
}
