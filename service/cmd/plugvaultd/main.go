// Command plugvaultd is plugvault's root system service: it owns org.plugvault.PlugVault1 on
// the system bus and handles the enrolled backup drives. This file only wires the packages
// together.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	sd "github.com/coreos/go-systemd/v22/daemon"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/buildinfo"
	"github.com/plugvault/plugvault/service/internal/config"
	"github.com/plugvault/plugvault/service/internal/daemon"
	"github.com/plugvault/plugvault/service/internal/logging"
	"github.com/plugvault/plugvault/service/internal/metrics"
	"github.com/plugvault/plugvault/service/internal/polkit"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("plugvaultd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	check := &optionalPath{path: config.DefaultPath}
	fs.Var(check, "check-config", "load and validate the configuration `FILE` (default "+config.DefaultPath+"), print every problem and exit")
	version := fs.Bool("version", false, "print the version and exit")
	metricsFile := fs.String("metrics-file", "auto", "write Prometheus textfile metrics to `FILE` after every run (auto: "+
		metrics.DefaultDir+"/"+metrics.FileName+" when that directory exists; empty: none)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	switch {
	case *version:
		fmt.Fprintln(stdout, "plugvaultd", buildinfo.Version)
		return 0
	case check.set && fs.NArg() <= 1:
		if fs.NArg() == 1 {
			check.path = fs.Arg(0)
		}
		return checkConfig(check.path, stdout, stderr)
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "plugvaultd: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	logger := logging.New(logLevel(os.Getenv(logLevelEnv)))
	// Packages that log through the default logger (luks names its cryptsetup) reach the journal.
	slog.SetDefault(logger)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *metricsFile == "auto" {
		*metricsFile = metrics.DefaultPath()
	}
	if err := serve(ctx, logger, config.DefaultPath, api.SystemBusAddress(), *metricsFile); err != nil {
		logger.Error("plugvaultd stops", "error", err)
		notify(logger, "STATUS="+err.Error())
		return 1
	}
	return 0
}

// serve runs the daemon until stop ends (SIGTERM) or the bus connection is lost. When stop ends
// it first lets the calls in flight finish (an Enroll's rollback must not be cut), then stops
// the drive manager.
func serve(stop context.Context, logger *slog.Logger, configPath, busAddress, metricsPath string) error {
	// ctx is the context of the manager and the other goroutines. Every way out (a failed
	// start, a lost bus, stop after the drain) cancels it before their goroutines are waited
	// for.
	ctx, cancel := context.WithCancel(context.WithoutCancel(stop))
	defer cancel()
	cfg, err := config.Load(configPath)
	if err != nil {
		return fmt.Errorf("cannot load the configuration: %w", err)
	}
	conn, err := daemon.ConnectBus(ctx, busAddress)
	if err != nil {
		return err
	}
	defer conn.Close()
	d, err := daemon.New(conn, daemon.Options{
		Version:      buildinfo.Version,
		ReminderDays: cfg.ReminderDays,
		Authorizer:   polkit.New(conn, logger),
		Logger:       logger,
	})
	if err != nil {
		return err
	}
	defer d.Close()
	col := metrics.New(metricsPath, logger)
	svc, err := newServices(logger, wiring{configPath: configPath, cfg: cfg, pub: d, conn: conn, busAddress: busAddress, metrics: col}) // publishes every configured drive
	if err != nil {
		return err
	}
	defer svc.monitor.Close()
	// The manager reconciles leftovers, coldplugs and serves udev events until ctx ends, then
	// cancels runs, unmounts and locks (waited for before exiting). It stops by itself when udev
	// monitoring ends: the daemon exits (systemd restarts it) rather than serve no drives.
	managerStopped := make(chan struct{})
	var managerErr error
	returned := false
	go func() { managerErr = svc.manager.Run(ctx); close(managerStopped) }()
	defer func() {
		cancel()
		<-managerStopped
		if managerErr != nil && !returned {
			logger.Error("the drive manager stopped with an error", "error", managerErr)
		}
	}()
	if err := d.Start(svc.manager, svc.enroller); err != nil {
		return err
	}
	notify(logger, sd.SdNotifyReady)
	notify(logger, fmt.Sprintf("STATUS=serving %d drive(s)", len(cfg.Drives)))
	wait := background(ctx, logger, col, cfg.ReminderDays)
	defer func() { cancel(); wait() }()
	select {
	case <-stop.Done():
	case <-conn.Context().Done():
		return errors.New("lost the connection to the system bus")
	case <-managerStopped:
		// ctx has not ended: the manager stopped on its own.
		returned = managerErr != nil
		if managerErr == nil {
			return errors.New("the drive manager stopped")
		}
		return managerErr
	}
	logger.Info("stopping")
	notify(logger, sd.SdNotifyStopping)
	notify(logger, "STATUS=stopping")
	drainCtx, drained := context.WithTimeout(ctx, drainTimeout)
	defer drained()
	if err := d.Drain(drainCtx); err != nil {
		logger.Warn("stopping with calls still in progress", "error", err)
	}
	return nil
}
