package daemon

import (
	"encoding/base64"
	"fmt"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/drive"
	"github.com/plugvault/plugvault/service/internal/enroll"
)

// Manager is the object at /org/plugvault/PlugVault1/Manager. Its exported methods are
// exactly the methods of org.plugvault.PlugVault1.Manager in the contract (a test checks it).
type Manager struct {
	d *Daemon
}

// ListDrives returns the object paths of every published drive. It needs no authorization.
func (m *Manager) ListDrives(opts map[string]dbus.Variant) ([]dbus.ObjectPath, *dbus.Error) {
	if _, err := checkOptions(api.MethodListDrives, opts); err != nil {
		return nil, api.ToDBusError(err)
	}
	m.d.mu.Lock()
	defer m.d.mu.Unlock()
	return m.d.drivePathsLocked(), nil
}

// beginDevice authorizes a call about a device (the dialog names it when it looks like a
// device path), then checks the options and the device.
func (m *Manager) beginDevice(sender dbus.Sender, msg dbus.Message, method, device string, opts map[string]dbus.Variant, message string) (*call, options, error) {
	c := m.d.newCall(sender, msg, api.ManagerInterface, method, opts)
	shown := displayDevice(device)
	if err := c.authorize(map[string]string{"drive.device": shown, "polkit.message": fmt.Sprintf(message, shown)}); err != nil {
		return c, nil, err
	}
	o, err := checkOptions(method, opts)
	if err != nil {
		return c, nil, err
	}
	return c, o, validDevice(device)
}

// Enroll formats device as a new backup drive (authorize, validate, then Enroller.Enroll).
// A header backup asked for comes back in the reply, in base64 (see the contract): root never
// writes it to a path the caller chose.
func (m *Manager) Enroll(sender dbus.Sender, msg dbus.Message, device string, passphrase []byte, opts map[string]dbus.Variant) (dbus.ObjectPath, string, *dbus.Error) {
	defer zero(msg.Body, passphrase)
	c, o, err := m.beginDevice(sender, msg, api.MethodEnroll, device, opts,
		"Authentication is required to format %s as a backup drive (everything on it will be erased)")
	if err != nil {
		return "", "", c.reply(err)
	}
	if len(passphrase) == 0 || len(passphrase) > maxPassphrase {
		return "", "", c.reply(invalid("cannot enroll: the passphrase must be 1 to %d bytes", maxPassphrase))
	}
	req := enroll.Request{
		Device:       device,
		Passphrase:   passphrase,
		Label:        o.string(api.OptLabel, "plugvault"),
		Filesystem:   o.string(api.OptFilesystem, "btrfs"),
		HeaderBackup: o.bool(api.OptHeaderBackup, false),
	}
	req.Name = o.string(api.OptName, req.Label)
	if err := validText("name", req.Name, maxName); err != nil {
		return "", "", c.reply(err)
	}
	if err := validText("label", req.Label, maxLabel); err != nil {
		return "", "", c.reply(err)
	}
	if req.Filesystem != "btrfs" && req.Filesystem != "ext4" {
		return "", "", c.reply(invalid("cannot enroll: filesystem must be \"btrfs\" or \"ext4\", not %q", req.Filesystem))
	}
	var header []byte
	path, derr := m.register(c, "enrolled", device, func(e Enroller, caller drive.Caller) (string, error) {
		req.Caller = caller
		res, err := e.Enroll(c.ctx, req)
		header = res.HeaderBackup
		return res.UUID, err
	})
	if derr != nil {
		return "", "", derr
	}
	return path, base64.StdEncoding.EncodeToString(header), nil
}

// Adopt registers a LUKS device prepared by hand (authorize, validate, then Enroller.Adopt).
func (m *Manager) Adopt(sender dbus.Sender, msg dbus.Message, device string, secret []byte, opts map[string]dbus.Variant) (dbus.ObjectPath, *dbus.Error) {
	defer zero(msg.Body, secret)
	c, o, err := m.beginDevice(sender, msg, api.MethodAdopt, device, opts,
		"Authentication is required to register %s as a backup drive")
	if err != nil {
		return "", c.reply(err)
	}
	isPass := o.bool(api.OptSecretIsPassphrase, false)
	req := enroll.AdoptRequest{
		Device:             device,
		Secret:             secret,
		SecretIsPassphrase: isPass,
		// A keyfile gets a fast slot of its own unless the caller says no (it is only added
		// when the keyfile's slot is slow); a passphrase gets a keyfile slot only on request.
		AddKeyfileSlot: o.bool(api.OptAddKeyfileSlot, !isPass),
		Name:           o.string(api.OptName, ""),
	}
	limit := maxKeyfile
	if req.SecretIsPassphrase {
		limit = maxPassphrase
	}
	if len(secret) == 0 || len(secret) > limit {
		return "", c.reply(invalid("cannot adopt: the secret must be 1 to %d bytes", limit))
	}
	if req.Name != "" {
		if err := validText("name", req.Name, maxName); err != nil {
			return "", c.reply(err)
		}
	}
	return m.register(c, "adopted", device, func(e Enroller, caller drive.Caller) (string, error) {
		req.Caller = caller
		return e.Adopt(c.ctx, req)
	})
}

// register is the common end of Enroll and Adopt once the request is valid: it needs the
// caller's identity (the new drive backs up the caller's home), then hands
// over and answers with the new Drive object.
func (m *Manager) register(c *call, what, device string, do func(Enroller, drive.Caller) (string, error)) (dbus.ObjectPath, *dbus.Error) {
	caller, err := c.caller()
	if err != nil {
		return "", c.reply(err)
	}
	uuid, err := do(m.d.enroller, caller)
	if err != nil {
		return "", c.reply(err)
	}
	m.d.log.Info("drive "+what, "drive", uuid, "device", device, "sender", c.sender)
	return api.DrivePath(uuid), c.reply(nil)
}

// SealKeys seals the plain keyfiles (authorize, then Enroller.SealKeys).
func (m *Manager) SealKeys(sender dbus.Sender, msg dbus.Message, opts map[string]dbus.Variant) ([]string, *dbus.Error) {
	c := m.d.newCall(sender, msg, api.ManagerInterface, api.MethodSealKeys, opts)
	if err := c.authorize(map[string]string{"polkit.message": "Authentication is required to seal the backup drives' keys"}); err != nil {
		return nil, c.reply(err)
	}
	if _, err := checkOptions(api.MethodSealKeys, opts); err != nil {
		return nil, c.reply(err)
	}
	sealed, err := m.d.enroller.SealKeys(c.ctx)
	if err != nil {
		return nil, c.reply(err)
	}
	m.d.log.Info("keys sealed", "count", len(sealed), "sender", c.sender)
	if sealed == nil {
		sealed = []string{}
	}
	return sealed, c.reply(nil)
}

// Forget unregisters a drive (authorize, validate, then Enroller.Forget). On success the
// drive's object goes away (RemoveDrive; the Enroller may have done so already).
func (m *Manager) Forget(sender dbus.Sender, msg dbus.Message, drive dbus.ObjectPath, opts map[string]dbus.Variant) *dbus.Error {
	c := m.d.newCall(sender, msg, api.ManagerInterface, api.MethodForget, opts)
	uuid, st, known := m.d.driveByPath(drive)
	details := map[string]string{"polkit.message": "Authentication is required to forget a backup drive"}
	if known {
		details = driveDetails(st, "Authentication is required to forget the backup drive %s")
	}
	if err := c.authorize(details); err != nil {
		return c.reply(err)
	}
	o, err := checkOptions(api.MethodForget, opts)
	if err != nil {
		return c.reply(err)
	}
	if !known {
		return c.reply(notFound("cannot forget %s: no such drive", drive))
	}
	if err := m.d.enroller.Forget(c.ctx, uuid, o.bool(api.OptRemoveKeyslot, false)); err != nil {
		return c.reply(err)
	}
	m.d.RemoveDrive(uuid)
	m.d.log.Info("drive forgotten", "drive", uuid, "sender", c.sender)
	return c.reply(nil)
}
