package daemon

import (
	"context"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/drive"
)

// Drive is the object of one published drive at /org/plugvault/PlugVault1/drives/ID. Its
// exported methods are exactly the methods of org.plugvault.PlugVault1.Drive in the contract
// (a test checks it).
type Drive struct {
	d    *Daemon
	uuid string
}

// polkit messages, by method; %s is the drive's name.
var driveMessages = map[string]string{
	api.MethodUnlock:          "Authentication is required to unlock the backup drive %s",
	api.MethodCheckPassphrase: "Authentication is required to check the passphrase of the backup drive %s",
	api.MethodBackupNow:       "Authentication is required to back up to the drive %s",
	api.MethodCancel:          "Authentication is required to cancel the backup to the drive %s",
	api.MethodEject:           "Authentication is required to eject the backup drive %s",
	api.MethodBrowse:          "Authentication is required to browse the backups on the drive %s",
	api.MethodRestore:         "Authentication is required to restore files from the backup drive %s",
	api.MethodVerify:          "Authentication is required to verify the backups on the drive %s",
}

// begin authorizes the call, then validates that the drive is (still) one we published and
// that the options have the right types.
func (dr *Drive) begin(sender dbus.Sender, msg dbus.Message, method string, opts map[string]dbus.Variant) (*call, options, error) {
	c := dr.d.newCall(sender, msg, api.DriveInterface, method, opts)
	st, known := dr.d.drive(dr.uuid)
	if !known {
		st = api.DriveStatus{LuksUUID: dr.uuid}
	}
	if err := c.authorize(driveDetails(st, driveMessages[method])); err != nil {
		return c, nil, err
	}
	if !known {
		return c, nil, notFound("cannot %s: the drive %s is no longer known", verbOf(method), dr.uuid)
	}
	if action, ok := api.OtherUserActions[api.DriveInterface+"."+method]; ok {
		if err := dr.authorizeOtherUser(c, st, method, action); err != nil {
			return c, nil, err
		}
	}
	o, err := checkOptions(method, opts)
	return c, o, err
}

// polkit messages of the second check when the drive belongs to another user, by method.
var otherUserMessages = map[string]string{
	api.MethodCheckPassphrase: "Authentication is required to check the passphrase of another user's backup drive %s",
	api.MethodCancel:          "Authentication is required to cancel another user's backup to the drive %s",
	api.MethodEject:           "Authentication is required to eject the backup drive %s of another user",
	api.MethodBrowse:          "Authentication is required to browse another user's backups on the drive %s",
	api.MethodRestore:         "Authentication is required to restore files from another user's backups on the drive %s",
	api.MethodVerify:          "Authentication is required to verify another user's backups on the drive %s",
}

// authorizeOtherUser asks polkit for action as well unless the caller is the drive's run_as
// user: the backups on a drive are its user's files, and the drive their backup.
func (dr *Drive) authorizeOtherUser(c *call, st api.DriveStatus, method, action string) error {
	runAs, err := dr.d.backend.RunAs(c.ctx, dr.uuid)
	if err != nil {
		return err
	}
	caller, err := c.uid()
	if err != nil {
		return err
	}
	if runAs == "" {
		runAs = "root"
	}
	if uid, ok := dr.d.uidOf(c.ctx, runAs); ok && uid == caller {
		return nil
	}
	details := driveDetails(st, otherUserMessages[method])
	details["drive.user"] = runAs
	return c.authorizeAction(action, details)
}

// Unlock unlocks a drive that awaits its passphrase.
func (dr *Drive) Unlock(sender dbus.Sender, msg dbus.Message, passphrase []byte, opts map[string]dbus.Variant) *dbus.Error {
	defer zero(msg.Body, passphrase)
	c, _, err := dr.begin(sender, msg, api.MethodUnlock, opts)
	if err != nil {
		return c.reply(err)
	}
	if len(passphrase) == 0 || len(passphrase) > maxPassphrase {
		return c.reply(invalid("cannot unlock: the passphrase must be 1 to %d bytes", maxPassphrase))
	}
	return c.reply(dr.d.backend.Unlock(c.ctx, dr.uuid, passphrase))
}

// CheckPassphrase tells whether a passphrase opens the plugged-in drive, mapping nothing.
func (dr *Drive) CheckPassphrase(sender dbus.Sender, msg dbus.Message, passphrase []byte, opts map[string]dbus.Variant) *dbus.Error {
	defer zero(msg.Body, passphrase)
	c, _, err := dr.begin(sender, msg, api.MethodCheckPassphrase, opts)
	if err != nil {
		return c.reply(err)
	}
	if len(passphrase) == 0 || len(passphrase) > maxPassphrase {
		return c.reply(invalid("cannot check the passphrase: it must be 1 to %d bytes", maxPassphrase))
	}
	return c.reply(dr.d.backend.CheckPassphrase(c.ctx, dr.uuid, passphrase))
}

// BackupNow starts a run on a present, idle drive.
func (dr *Drive) BackupNow(sender dbus.Sender, msg dbus.Message, opts map[string]dbus.Variant) *dbus.Error {
	c, _, err := dr.begin(sender, msg, api.MethodBackupNow, opts)
	if err != nil {
		return c.reply(err)
	}
	return c.reply(dr.d.backend.BackupNow(c.ctx, dr.uuid))
}

// Cancel stops the running backup.
func (dr *Drive) Cancel(sender dbus.Sender, msg dbus.Message, opts map[string]dbus.Variant) *dbus.Error {
	c, _, err := dr.begin(sender, msg, api.MethodCancel, opts)
	if err != nil {
		return c.reply(err)
	}
	return c.reply(dr.d.backend.Cancel(c.ctx, dr.uuid))
}

// Eject stops, unmounts, locks and (by default) powers off the drive.
func (dr *Drive) Eject(sender dbus.Sender, msg dbus.Message, opts map[string]dbus.Variant) *dbus.Error {
	c, o, err := dr.begin(sender, msg, api.MethodEject, opts)
	if err != nil {
		return c.reply(err)
	}
	return c.reply(dr.d.backend.Eject(c.ctx, dr.uuid, o.bool(api.OptPowerOff, true)))
}

// ListSnapshots returns the snapshots read at the last unlock. It needs no authorization.
func (dr *Drive) ListSnapshots(opts map[string]dbus.Variant) ([]api.Snapshot, *dbus.Error) {
	if _, err := checkOptions(api.MethodListSnapshots, opts); err != nil {
		return nil, api.ToDBusError(err)
	}
	if _, known := dr.d.drive(dr.uuid); !known {
		return nil, api.ToDBusError(notFound("cannot list snapshots: the drive %s is no longer known", dr.uuid))
	}
	ctx, cancel := dr.d.callContext()
	defer cancel()
	snaps, err := dr.d.backend.ListSnapshots(ctx, dr.uuid)
	if err != nil {
		return nil, api.ToDBusError(err)
	}
	if snaps == nil {
		snaps = []api.Snapshot{}
	}
	return snaps, nil
}

// Browse mounts the drive read-only for the caller and returns where.
func (dr *Drive) Browse(sender dbus.Sender, msg dbus.Message, opts map[string]dbus.Variant) (string, *dbus.Error) {
	c, _, err := dr.begin(sender, msg, api.MethodBrowse, opts)
	if err != nil {
		return "", c.reply(err)
	}
	who, err := c.caller()
	if err != nil {
		return "", c.reply(err)
	}
	path, err := dr.d.backend.Browse(c.ctx, dr.uuid, who)
	if err != nil {
		return "", c.reply(err)
	}
	return path, c.reply(nil)
}

// Restore starts a job that copies a path out of a snapshot into a destination, as the
// caller, and returns the job.
func (dr *Drive) Restore(sender dbus.Sender, msg dbus.Message, snapshot, path, destination string, opts map[string]dbus.Variant) (dbus.ObjectPath, *dbus.Error) {
	c, o, err := dr.begin(sender, msg, api.MethodRestore, opts)
	if err != nil {
		return "", c.reply(err)
	}
	if err := validSnapshot(snapshot); err != nil {
		return "", c.reply(err)
	}
	rel, err := validRelPath(path)
	if err != nil {
		return "", c.reply(err)
	}
	if err := validAbsPath("destination", destination); err != nil {
		return "", c.reply(err)
	}
	who, err := c.caller()
	if err != nil {
		return "", c.reply(err)
	}
	req := drive.RestoreRequest{
		Snapshot:    snapshot,
		Path:        rel,
		Destination: destination,
		Overwrite:   o.bool(api.OptOverwrite, false),
		Caller:      who,
	}
	job, err := dr.d.startJob(c, api.OperationRestore, api.DrivePath(dr.uuid), func(ctx context.Context) (uint64, []string, error) {
		return 0, nil, dr.d.backend.Restore(ctx, dr.uuid, req, jobProgress(ctx))
	})
	return job, c.reply(err)
}

// Verify starts a job that compares a snapshot with its manifest, as the caller, and returns
// the job.
func (dr *Drive) Verify(sender dbus.Sender, msg dbus.Message, snapshot string, opts map[string]dbus.Variant) (dbus.ObjectPath, *dbus.Error) {
	c, _, err := dr.begin(sender, msg, api.MethodVerify, opts)
	if err != nil {
		return "", c.reply(err)
	}
	if snapshot != "" {
		if err := validSnapshot(snapshot); err != nil {
			return "", c.reply(err)
		}
	}
	who, err := c.caller()
	if err != nil {
		return "", c.reply(err)
	}
	job, err := dr.d.startJob(c, api.OperationVerify, api.DrivePath(dr.uuid), func(ctx context.Context) (uint64, []string, error) {
		checked, problems, err := dr.d.backend.Verify(ctx, dr.uuid, snapshot, who, jobProgress(ctx))
		if problems == nil {
			problems = []string{}
		}
		return checked, problems, err
	})
	return job, c.reply(err)
}
