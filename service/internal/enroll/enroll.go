package enroll

import (
	"context"
	"fmt"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/luks"
)

// Enroll formats req.Device as a new backup drive; see the package documentation.
func (e *Enroller) Enroll(ctx context.Context, req Request) (Result, error) {
	if err := e.lock("enroll"); err != nil {
		return Result{}, err
	}
	defer e.mu.Unlock()
	fstype := req.Filesystem
	if fstype == "" {
		fstype = "btrfs"
	}
	if fstype != "btrfs" && fstype != "ext4" {
		return Result{}, fmt.Errorf("cannot enroll: the filesystem must be btrfs or ext4, not %q: %w", fstype, api.ErrInvalidArgument)
	}
	label := req.Label
	if label == "" {
		label = "plugvault"
	}
	if !labelPattern.MatchString(label) {
		return Result{}, fmt.Errorf("cannot enroll: the label %q must be 1 to 16 letters, digits, '.', '_' or '-': %w", label, api.ErrInvalidArgument)
	}
	name := req.Name
	if name == "" {
		name = label
	}
	if err := validName(name); err != nil {
		return Result{}, fmt.Errorf("cannot enroll: %w", err)
	}
	if len(req.Passphrase) == 0 {
		return Result{}, fmt.Errorf("cannot enroll: the passphrase is empty: %w", api.ErrInvalidArgument)
	}
	dev, err := e.d.System.checkDevice(req.Device, false)
	if err != nil {
		return Result{}, fmt.Errorf("cannot enroll: %w", err)
	}
	// Find every tool before anything is destroyed.
	mkfsName, err := mkfsTool(fstype)
	if err != nil {
		return Result{}, err
	}
	mkfs, err := e.tool(mkfsName)
	if err != nil {
		return Result{}, fmt.Errorf("cannot enroll: %w", err)
	}
	udevadm, err := e.tool("udevadm")
	if err != nil {
		return Result{}, fmt.Errorf("cannot enroll: %w", err)
	}
	// Formatting an enrolled drive would leave its registration dangling: forget it first.
	if old, err := e.d.LUKS.UUID(ctx, dev.Path); err == nil && luks.CheckUUID(old) == nil {
		if err := e.alreadyEnrolled(old); err != nil {
			return Result{}, fmt.Errorf("cannot enroll %s: forget the drive first: %w", dev.Path, err)
		}
	}
	key, err := e.newKey()
	if err != nil {
		return Result{}, err
	}
	defer clear(key)
	log := e.d.Logger.With("device", dev.Path)
	log.Info("enrolling: formatting", "filesystem", fstype, "label", label)

	var u undoStack
	fail := func(err error) (Result, error) {
		return Result{}, e.rollback(&u, err)
	}
	// The device is checked again right before it is formatted: a stick swapped for another
	// one under the same name since the first check is refused.
	if err := e.d.System.recheck(dev); err != nil {
		return Result{}, fmt.Errorf("cannot enroll: %w", err)
	}
	uuid, err := e.d.LUKS.Format(ctx, dev.Path, req.Passphrase, label)
	if err != nil {
		return Result{}, fmt.Errorf("cannot enroll %s: cannot format it: %w", dev.Path, err)
	}
	formatted := func(err error) (Result, error) {
		return fail(fmt.Errorf("cannot enroll %s (it is now formatted but not registered; enroll it again): %w", dev.Path, err))
	}
	if err := luks.CheckUUID(uuid); err != nil {
		return formatted(fmt.Errorf("internal error: cryptsetup reported %w", err))
	}
	log = log.With("uuid", uuid)
	// The rule goes in before the first mapping is opened: the mapping made for mkfs, and the
	// new filesystem inside it, must already be invisible to desktop automounters (udisks would
	// otherwise show it and may mount it, and then the mapping cannot be closed).
	if err := e.installRule(ctx, &u, uuid, udevadm); err != nil {
		return formatted(err)
	}
	if err := e.d.System.same(dev); err != nil {
		return formatted(err)
	}
	slot, err := e.d.LUKS.AddKey(ctx, dev.Path, req.Passphrase, key, true)
	if err != nil {
		return formatted(fmt.Errorf("cannot add the keyfile slot: %w", err))
	}
	if err := e.storeKey(&u, uuid, key); err != nil {
		return formatted(err)
	}
	if err := e.d.System.same(dev); err != nil {
		return formatted(err)
	}
	if err := e.makeFilesystem(ctx, dev.Path, uuid, key, slot, mkfs, fstype, label); err != nil {
		return formatted(err)
	}
	// The header backup and the fingerprint are read from the device: still ours?
	if err := e.d.System.same(dev); err != nil {
		return formatted(err)
	}
	var header []byte
	if req.HeaderBackup {
		if header, err = e.headerBackup(ctx, dev.Path); err != nil {
			return formatted(err)
		}
	}
	if err := e.register(ctx, &u, dev.Path, newDrive(name, uuid, slot, req.Caller)); err != nil {
		return formatted(err)
	}
	e.replayEvent(ctx, dev.Path, udevadm)
	log.Info("enrolled", "name", name, "key_slot", slot)
	return Result{UUID: uuid, HeaderBackup: header}, nil
}

// makeFilesystem opens the new LUKS device with the key, makes the filesystem and closes it
// again (also when mkfs fails).
func (e *Enroller) makeFilesystem(ctx context.Context, device, uuid string, key []byte, slot int, mkfs, fstype, label string) (err error) {
	mapping, err := luks.MappingName(uuid)
	if err != nil {
		return err
	}
	if err := e.d.LUKS.Open(ctx, device, mapping, key, slot, false); err != nil {
		return fmt.Errorf("cannot open the new LUKS device: %w", err)
	}
	defer func() {
		if cerr := e.d.LUKS.Close(context.WithoutCancel(ctx), mapping, false); cerr != nil && err == nil {
			err = fmt.Errorf("cannot close the new LUKS device: %w", cerr)
		}
	}()
	args, err := mkfsArgs(fstype, label, "/dev/mapper/"+mapping)
	if err != nil {
		return err
	}
	if err := e.run(ctx, mkfs, args); err != nil {
		return fmt.Errorf("cannot make the %s filesystem: %w", fstype, err)
	}
	return nil
}
