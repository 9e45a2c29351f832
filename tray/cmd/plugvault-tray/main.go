// Command plugvault-tray is plugvault's unprivileged tray app: an icon in the panel
// (StatusNotifierItem) that shows what the backup service is doing, a menu to back up, cancel,
// eject, browse backups and read the log, desktop notifications, and the passphrase dialog.
// It is started by XDG autostart in every desktop session and talks to plugvaultd on the
// system bus. It refuses to run as root.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/plugvault/plugvault/tray/internal/ui"
)

func main() {
	if os.Geteuid() == 0 {
		fmt.Fprintln(os.Stderr, "plugvault-tray: cannot run as root: start it as the desktop user (the service does the privileged work)")
		os.Exit(1)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if u := os.Getenv("SUDO_USER"); u != "" {
		logger.Warn("started under sudo: the tray belongs to the desktop session of the user who sees it", "sudo_user", u)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := ui.Run(ctx, ui.Options{Logger: logger})
	if errors.Is(err, ui.ErrAlreadyRunning) {
		fmt.Fprintln(os.Stderr, "plugvault-tray:", err)
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "plugvault-tray:", err)
		os.Exit(1)
	}
}
