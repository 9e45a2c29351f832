package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/plugvault/plugvault/service/internal/config"
	"github.com/plugvault/plugvault/service/internal/daemon"
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
	return p
}

// newServices subscribes to udev (before the manager enumerates, so nothing is missed) and
// wires the state machine and the enroller to the real cryptsetup, mount, engine and sysfs.
func newServices(logger *slog.Logger, cfg *config.Config, pub daemon.Publisher, col *metrics.Collector) (*services, error) {
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
		Source:    drive.UdevSource(mon),
		LUKS:      cs,
		Mounter:   drive.SystemMounter{M: mounter},
		Engine:    col.Engine(drive.SystemEngine{Path: engine}),
		PowerOff:  usbpower.PowerOff,
		Publisher: col.Publisher(pub),
		Logger:    logger,
		Logind:    drive.NewLogind(logger),

		ReadKeyfile: readKey,
	})
	if err != nil {
		mon.Close()
		return nil, err
	}
	enr, err := enroll.New(enroll.Deps{
		LUKS:        cs,
		MappingName: luks.MappingName,
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
