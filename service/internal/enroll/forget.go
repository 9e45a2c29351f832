package enroll

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/config"
	"github.com/plugvault/plugvault/service/internal/luks"
)

// Forget unregisters the drive with LUKS UUID uuid; see the package documentation.
func (e *Enroller) Forget(ctx context.Context, uuid string, removeKeyslot bool) error {
	if err := e.lock("forget"); err != nil {
		return err
	}
	defer e.mu.Unlock()
	if err := luks.CheckUUID(uuid); err != nil {
		return fmt.Errorf("cannot forget: %w: %w", err, api.ErrInvalidArgument)
	}
	cfg, err := e.d.LoadConfig(e.d.ConfigPath)
	if err != nil {
		return fmt.Errorf("cannot forget %s: cannot read the configuration: %w", uuid, err)
	}
	var drive *config.Drive
	for i := range cfg.Drives {
		if strings.EqualFold(cfg.Drives[i].LuksUUID, uuid) {
			drive = &cfg.Drives[i]
		}
	}
	if drive == nil {
		return fmt.Errorf("cannot forget %s: no such drive in %s: %w", uuid, e.d.ConfigPath, api.ErrNotFound)
	}
	d := *drive
	keyPath := d.Keyfile
	if keyPath == "" {
		keyPath = e.keyPath(d.LuksUUID)
	}
	log := e.d.Logger.With("uuid", uuid, "name", d.Name)
	udevadm, err := e.tool("udevadm")
	if err != nil {
		return fmt.Errorf("cannot forget %s: %w", d.Name, err)
	}

	// Everything that can refuse comes before anything changes.
	var device string
	var key []byte
	slot := d.KeySlot
	if removeKeyslot {
		if device, err = e.d.DeviceByUUID(d.LuksUUID); err != nil {
			return fmt.Errorf("cannot remove the keyslot of %s: %w", d.Name, err)
		}
		if got, err := e.d.LUKS.UUID(ctx, device); err != nil || !strings.EqualFold(got, d.LuksUUID) {
			return fmt.Errorf("cannot remove the keyslot of %s: %s is not this drive: %w", d.Name, device, api.ErrNotPresent)
		}
		if key, err = e.d.ReadKeyfile(keyPath); err != nil {
			return fmt.Errorf("cannot remove the keyslot of %s: %w", d.Name, err)
		}
		defer clear(key)
		slots, err := e.d.Keyslots(ctx, device)
		if err != nil {
			return fmt.Errorf("cannot remove the keyslot of %s: cannot read its LUKS header: %w", d.Name, err)
		}
		if _, ok := slots[slot]; !ok || e.d.LUKS.TestKey(ctx, device, key, slot) != nil {
			if slot, _, err = e.findSlot(ctx, device, key); err != nil {
				return fmt.Errorf("cannot remove the keyslot of %s: %w", d.Name, err)
			}
		}
		if len(slots) < 2 {
			return fmt.Errorf("cannot remove the keyslot of %s: it is the drive's only keyslot, and without it nothing opens the drive: %w", d.Name, api.ErrInvalidArgument)
		}
	}

	var u undoStack
	if err := e.d.Registry.RemoveDrive(d.LuksUUID); err != nil {
		return fmt.Errorf("cannot forget %s: %w", d.Name, err)
	}
	u.push("register the drive again", func() error { return e.d.Registry.AddDrive(d) })
	if err := e.d.RemoveDrive(e.d.ConfigPath, d.LuksUUID); err != nil {
		return e.rollback(&u, fmt.Errorf("cannot forget %s: cannot remove it from %s: %w", d.Name, e.d.ConfigPath, err))
	}
	u.push("add the drive to "+e.d.ConfigPath+" again", func() error { return e.d.AppendDrive(e.d.ConfigPath, d) })
	if removeKeyslot {
		if err := e.d.LUKS.KillSlot(ctx, device, slot, key); err != nil {
			return e.rollback(&u, fmt.Errorf("cannot forget %s: cannot remove keyslot %d: %w", d.Name, slot, err))
		}
		log.Info("removed the keyfile slot", "slot", slot)
	}

	// The drive is forgotten; what is left is cleaning up after it.
	var errs []error
	if filepath.Dir(keyPath) == filepath.Clean(e.d.KeyDir) {
		if err := removeIfExists(keyPath); err != nil {
			errs = append(errs, err)
		}
	} else {
		log.Info("keeping the keyfile outside the key directory", "keyfile", keyPath)
	}
	if err := removeIfExists(e.rulePath(d.LuksUUID)); err != nil {
		errs = append(errs, err)
	} else if err := e.run(ctx, udevadm, udevReloadArgs()); err != nil {
		errs = append(errs, fmt.Errorf("cannot reload the udev rules: %w", err))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s is forgotten, but cleaning up failed: %w", d.Name, errors.Join(errs...))
	}
	log.Info("forgotten")
	return nil
}
