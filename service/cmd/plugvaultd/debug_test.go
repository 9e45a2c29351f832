package main

import (
	"context"
	"log/slog"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestLogLevel(t *testing.T) {
	for in, want := range map[string]slog.Level{"": slog.LevelInfo, "debug": slog.LevelDebug, " DEBUG\n": slog.LevelDebug, "warn": slog.LevelInfo} {
		if got := logLevel(in); got != want {
			t.Errorf("logLevel(%q) = %v, want %v", in, got, want)
		}
	}
}

// lineWriter passes each written line to a channel.
type lineWriter chan string

func (w lineWriter) Write(p []byte) (int, error) { w <- string(p); return len(p), nil }

// SIGUSR1 logs the goroutine, descriptor and memory figures the torture suite compares.
func TestRuntimeOnSignal(t *testing.T) {
	lines := make(lineWriter, 4)
	logger := slog.New(slog.NewTextHandler(lines, nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := logRuntimeOnSignal(ctx, logger)
	defer func() { cancel(); <-done }()
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-lines:
		for _, f := range []string{"msg=runtime", "goroutines=", "fds=", "rss_kib="} {
			if !strings.Contains(l, f) {
				t.Errorf("runtime line %q lacks %s", l, f)
			}
		}
		if strings.Contains(l, "=-1") || strings.Contains(l, "goroutines=0") {
			t.Errorf("runtime line %q has a figure it could not read", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no runtime line after SIGUSR1")
	}
}
