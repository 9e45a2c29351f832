// Package opener opens a directory in the user's file manager. It is the tray's only user of
// os/exec, behind a small interface so tests inject a fake.
package opener

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
)

// Opener opens a directory for the user to look at.
type Opener interface {
	Open(ctx context.Context, dir string) error
}

// XDG opens directories with xdg-open, which picks the desktop's file manager.
type XDG struct{}

// Open starts xdg-open on dir and reaps it in the background. dir must be absolute and clean,
// so it can never be read as an option or a URL.
func (XDG) Open(ctx context.Context, dir string) error {
	if !filepath.IsAbs(dir) || filepath.Clean(dir) != dir {
		return fmt.Errorf("cannot open %q: not a clean absolute path", dir)
	}
	bin, err := exec.LookPath("xdg-open")
	if err != nil {
		return fmt.Errorf("cannot open %s: xdg-open is not installed (package xdg-utils)", dir)
	}
	cmd := exec.CommandContext(context.WithoutCancel(ctx), bin, dir)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("cannot open %s: %w", dir, err)
	}
	go func() { _ = cmd.Wait() }()
	return nil
}

// Func adapts a function to Opener.
type Func func(ctx context.Context, dir string) error

// Open calls f.
func (f Func) Open(ctx context.Context, dir string) error { return f(ctx, dir) }
