package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/internal/backup"
	"github.com/plugvault/plugvault/service/internal/config"
	"github.com/plugvault/plugvault/service/internal/drive"
	"github.com/plugvault/plugvault/service/internal/enroll"
	"github.com/plugvault/plugvault/service/internal/keyseal"
	"github.com/plugvault/plugvault/service/internal/luks"
	"github.com/plugvault/plugvault/service/internal/metrics"
	"github.com/plugvault/plugvault/service/internal/mount"
	"github.com/plugvault/plugvault/service/internal/sysexec"
	"github.com/plugvault/plugvault/service/internal/udev"
	"github.com/plugvault/plugvault/service/internal/usbpower"
)

// services are the drive manager and the enroller, built on the real OS layers.
type services struct {
	manager  *drive.Manager
	enroller *enroll.Enroller
	monitor  *udev.Monitor
}

// enginePath is plugvault-engine next to plugvaultd (both live in /usr/libexec/plugvault). A
// missing engine is logged, not fatal: the daemon still serves, and each run fails saying so.
func enginePath(logger *slog.Logger) string {
	exe, err := os.Executable()
	if err != nil {
		exe = "/usr/libexec/plugvault/plugvaultd"
	}
	p := filepath.Join(filepath.Dir(exe), "plugvault-engine")
	if _, err := os.Stat(p); err != nil {
		logger.Warn("the backup engine is missing; backups will fail until it is installed", "path", p, "error", err)
	}
	// The engine inherits this process's seccomp filters: what openat2 answers here, it
	// answers there.
	if backup.Openat2Available() {
		logger.Info("the backup engine resolves paths with openat2")
	} else {
		logger.Warn("openat2 is unavailable (ENOSYS): the backup engine resolves paths with a walk of openat calls")
	}
	return p
}

// wiring is what newServices connects the OS layers to.
type wiring struct {
	configPath string          // the configuration file, where drives' fingerprints are recorded
	cfg        *config.Config  // its contents
	pub        drive.Publisher // the bus objects
	conn       *dbus.Conn      // the daemon's bus connection (logind's signals arrive on it)
	busAddress string          // the bus conn is connected to (logind's inhibitor calls)
	metrics    *metrics.Collector
}

// newServices subscribes to udev (before the manager enumerates, so nothing is missed) and
// wires the state machine and the enroller to the real cryptsetup, mount, engine, sysfs and
// logind, as w says.
func newServices(logger *slog.Logger, w wiring) (*services, error) {
	cfg := w.cfg
	engine := enginePath(logger)
	cs, err := luks.New(sysexec.Exec{})
	if err != nil {
		return nil, err
	}
	cs.SetLogger(logger)
	mounter := mount.NewMounter(logger)
	if err := mounter.SetBase(cfg.MountBase); err != nil {
		return nil, err
	}
	mon, err := udev.NewMonitor(logger)
	if err != nil {
		return nil, err
	}
	// Keys are read through systemd-creds when they are sealed, and new keys are sealed.
	readKey, sealKey := config.ReadKeyfile, (func(context.Context, []byte) ([]byte, error))(nil)
	if sealer, err := keyseal.New(sysexec.Exec{}); err != nil {
		logger.Warn("keys cannot be sealed or unsealed; plain keyfiles still work", "error", err)
	} else {
		readKey, sealKey = sealer.Reader(config.ReadKeyfile), sealer.Seal
	}
	mgr, err := drive.NewManager(drive.Deps{
		Config:    cfg,
		Source:    newUdevSource(mon),
		LUKS:      cs,
		Mounter:   systemMounter{M: mounter},
		Engine:    w.metrics.Engine(systemEngine{Path: engine}),
		PowerOff:  usbpower.PowerOff,
		Publisher: w.metrics.Publisher(w.pub),
		Logger:    logger,
		Logind:    newLogind(w.conn, w.busAddress, logger),
		RecordFingerprint: func(uuid, fp string) error {
			return config.SetFingerprint(w.configPath, uuid, fp)
		},
		ReadKeyfile: readKey,
	})
	if err != nil {
		mon.Close()
		return nil, err
	}
	enr, err := enroll.New(enroll.Deps{
		LUKS: cs,
		Keyslots: func(ctx context.Context, dev string) (map[int]enroll.Keyslot, error) {
			h, err := cs.Dump(ctx, dev)
			if err != nil {
				return nil, err
			}
			m := map[int]enroll.Keyslot{}
			for n, ks := range h.Keyslots {
				m[n] = enroll.Keyslot{Type: ks.Type, PBKDF: ks.PBKDF}
			}
			return m, nil
		},
		Registry:    mgr,
		LoadConfig:  config.Load,
		AppendDrive: config.AppendDrive,
		RemoveDrive: config.RemoveDrive,
		ReadKeyfile: readKey,
		SealKey:     sealKey,
		Runner:      sysexec.Exec{},
		Logger:      logger,
	})
	if err != nil {
		mon.Close()
		return nil, err
	}
	return &services{manager: mgr, enroller: enr, monitor: mon}, nil
}
