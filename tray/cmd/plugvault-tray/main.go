// Command plugvault-tray is plugvault's unprivileged tray app: an icon in the panel
// (StatusNotifierItem) that shows what the backup service is doing, a menu to back up, cancel,
// eject, browse backups and read the log, desktop notifications, and the passphrase dialog.
// It is started by XDG autostart in every desktop session and talks to plugvaultd on the
// system bus. When the session bus goes away it waits for it and starts itself again. It
// refuses to run as root.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	// Before fyne reads the locale: see the package.
	_ "github.com/plugvault/plugvault/tray/internal/clocale"
	"github.com/plugvault/plugvault/tray/internal/ui"
)

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := checkUser(os.Geteuid(), os.Getenv("SUDO_USER"), logger); err != nil {
		fmt.Fprintln(os.Stderr, "plugvault-tray:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := ui.Run(ctx, ui.Options{Logger: logger})
	if errors.Is(err, ui.ErrSessionLost) {
		err = restart(ctx, logger)
	}
	if errors.Is(err, ui.ErrAlreadyRunning) {
		fmt.Fprintln(os.Stderr, "plugvault-tray:", err)
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "plugvault-tray:", err)
		os.Exit(1)
	}
}

// checkUser refuses root: the tray is a desktop client, the service does the privileged work,
// and a GUI running as root is an attack surface for nothing. Under sudo (to another user) it
// warns, because the tray belongs to the session of the user who looks at the screen.
func checkUser(euid int, sudoUser string, logger *slog.Logger) error {
	if euid == 0 {
		return errors.New("cannot run as root: start it as the desktop user (the service does the privileged work)")
	}
	if sudoUser != "" {
		logger.Warn("started under sudo: the tray belongs to the desktop session of the user who sees it", "sudo_user", sudoUser)
	}
	return nil
}

// restart waits for the session bus to come back, then replaces the process with a fresh
// tray (same binary, arguments and environment), which registers its item, menu and name on
// the new bus. It returns only when that cannot happen.
func restart(ctx context.Context, logger *slog.Logger) error {
	if err := ui.AwaitSessionBus(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // SIGTERM, SIGINT while waiting
		}
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("cannot find the tray's executable to start it again: %w", err)
	}
	logger.Info("the session bus is back; starting again")
	return fmt.Errorf("cannot start the tray again: %w", syscall.Exec(exe, os.Args, os.Environ()))
}
