package enroll

import (
	"context"
	"fmt"
	"strings"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/luks"
)

// Adopt registers a LUKS device that was prepared by hand; see the package documentation.
func (e *Enroller) Adopt(ctx context.Context, req AdoptRequest) (string, error) {
	if err := e.lock("adopt"); err != nil {
		return "", err
	}
	defer e.mu.Unlock()
	if len(req.Secret) == 0 || len(req.Secret) > maxSecret {
		return "", fmt.Errorf("cannot adopt: the secret must be 1 byte to 8 MiB: %w", api.ErrInvalidArgument)
	}
	dev, err := e.d.System.checkDevice(req.Device, true)
	if err != nil {
		return "", fmt.Errorf("cannot adopt: %w", err)
	}
	uuid, err := e.d.LUKS.UUID(ctx, dev.Path)
	if err != nil {
		return "", fmt.Errorf("cannot adopt %s: it is not a LUKS device: %w", dev.Path, err)
	}
	if err := luks.CheckUUID(uuid); err != nil {
		return "", fmt.Errorf("cannot adopt %s: %w: %w", dev.Path, err, api.ErrInvalidArgument)
	}
	if err := e.alreadyEnrolled(uuid); err != nil {
		return "", fmt.Errorf("cannot adopt %s: %w", dev.Path, err)
	}
	name := req.Name
	if name == "" {
		name = "drive-" + uuid[:8]
	}
	if err := validName(name); err != nil {
		return "", fmt.Errorf("cannot adopt: %w", err)
	}
	udevadm, err := e.tool("udevadm")
	if err != nil {
		return "", fmt.Errorf("cannot adopt: %w", err)
	}
	log := e.d.Logger.With("device", dev.Path, "uuid", uuid)

	// Which slot the secret opens (proving that it opens this device at all).
	var slot int
	var ks Keyslot
	if req.SecretIsPassphrase {
		if err := e.d.LUKS.TestKey(ctx, dev.Path, req.Secret, -1); err != nil {
			return "", fmt.Errorf("cannot adopt %s: %w", dev.Path, err)
		}
	} else if slot, ks, err = e.findSlot(ctx, dev.Path, req.Secret); err != nil {
		return "", fmt.Errorf("cannot adopt %s: %w", dev.Path, err)
	}

	// Still the device that was checked and whose key was tested (see System.same)?
	if err := e.d.System.recheck(dev); err != nil {
		return "", fmt.Errorf("cannot adopt: %w", err)
	}
	var u undoStack
	fail := func(err error) (string, error) {
		return "", e.rollback(&u, fmt.Errorf("cannot adopt %s: %w", dev.Path, err))
	}
	key := req.Secret
	// An argon2 slot (cryptsetup's default, benchmarked to up to 1 GiB and seconds) would be
	// paid at every plug: a random key needs no stretching, so it gets a PBKDF2 slot.
	addSlot := req.AddKeyfileSlot && (req.SecretIsPassphrase || strings.HasPrefix(ks.PBKDF, "argon2"))
	switch {
	case addSlot:
		newKey, err := e.newKey()
		if err != nil {
			return "", err
		}
		defer clear(newKey)
		newSlot, err := e.d.LUKS.AddKey(ctx, dev.Path, req.Secret, newKey, true)
		if err != nil {
			return fail(fmt.Errorf("cannot add a fast keyfile slot: %w", err))
		}
		u.push(fmt.Sprintf("remove the new keyslot %d", newSlot), func() error {
			return e.d.LUKS.KillSlot(context.WithoutCancel(ctx), dev.Path, newSlot, newKey)
		})
		log.Info("added a fast keyfile slot", "slot", newSlot, "old_slot", slot, "old_pbkdf", ks.PBKDF)
		key, slot = newKey, newSlot
	case req.SecretIsPassphrase:
		key, slot = nil, -1 // unlocked with the passphrase at every plug
	case req.AddKeyfileSlot:
		log.Info("the keyfile's slot is already cheap to open; no slot added", "slot", slot, "pbkdf", ks.PBKDF)
	}
	if key != nil {
		if err := e.storeKey(&u, uuid, key); err != nil {
			return fail(err)
		}
	}
	if err := e.installRule(ctx, &u, uuid, udevadm); err != nil {
		return fail(err)
	}
	// The fingerprint is read from the device: still the one checked?
	if err := e.d.System.same(dev); err != nil {
		return fail(err)
	}
	if err := e.register(ctx, &u, dev.Path, newDrive(name, uuid, slot, req.Caller)); err != nil {
		return fail(err)
	}
	e.replayEvent(ctx, dev.Path, udevadm)
	log.Info("adopted", "name", name, "key_slot", slot)
	return uuid, nil
}
