package daemon

import (
	"context"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/logging"
)

// Caller is who made an authorized call, from the bus daemon's SO_PEERCRED-based
// GetConnectionCredentials (never from anything the caller said about itself).
type Caller struct {
	BusName string // unique name, the polkit subject
	UID     uint32
	GID     uint32 // primary group of UID (NSS)
	// Groups are the calling process's groups as the bus daemon reported them
	// (UnixGroupIDs); when the bus does not report them, the groups NSS lists for User.
	Groups []uint32
	PID    uint32
	User   string // login name of UID (NSS)
	Home   string // home directory of UID (NSS)
}

// RestoreRequest is a validated Drive.Restore call.
type RestoreRequest struct {
	Snapshot    string // a name from ListSnapshots
	Path        string // cleaned, relative to the snapshot root; "" = everything
	Destination string // absolute, cleaned
	Overwrite   bool
	Caller      Caller // the restore runs with the caller's credentials
}

// Backend is the drive manager that the Drive objects delegate to once a call is authorized and
// its arguments validated (service/internal/drive implements it). Drives are named by LUKS
// UUID. Errors wrap the sentinels of service/api (api.ErrBusy, api.ErrNotPresent, …) and carry
// a message fit for the user.
type Backend interface {
	Unlock(ctx context.Context, uuid string, passphrase []byte) error
	BackupNow(ctx context.Context, uuid string) error
	Cancel(ctx context.Context, uuid string) error
	Eject(ctx context.Context, uuid string, powerOff bool) error
	ListSnapshots(ctx context.Context, uuid string) ([]api.Snapshot, error)
	Browse(ctx context.Context, uuid string, caller Caller) (string, error)
	Restore(ctx context.Context, uuid string, req RestoreRequest) error
	// Verify runs with the caller's credentials, like Restore: a user verifies what they may
	// read, and the problems it lists (paths) never reveal other users' file names.
	Verify(ctx context.Context, uuid, snapshot string, caller Caller) (checked uint64, problems []string, err error)
	// RunAs returns the user whose backups the drive holds and as whom they run (config
	// run_as; "" or "root" means root). Callers who are someone else need
	// api.ActionManageOtherUsersDrive for the methods in api.OtherUserActions.
	RunAs(ctx context.Context, uuid string) (string, error)
}

// EnrollRequest is a validated Manager.Enroll call.
type EnrollRequest struct {
	Device     string         // canonical, under /dev
	Passphrase logging.Secret // zeroed by the daemon after the call returns; prints as [redacted]
	Name       string
	Label      string
	Filesystem string // "btrfs" or "ext4"
	// HeaderBackup asks for a LUKS header backup of the new drive, returned in
	// EnrollResult (never written to a path the caller names: root would write it).
	HeaderBackup bool
	// Caller enrolls the drive; unless it is root, the new drive backs up the caller's home
	// as the caller (sources and run_as in the configuration).
	Caller Caller
}

// AdoptRequest is a validated Manager.Adopt call.
type AdoptRequest struct {
	Device             string
	Secret             logging.Secret // zeroed by the daemon after the call returns; prints as [redacted]
	SecretIsPassphrase bool
	AddKeyfileSlot     bool
	Name               string
	Caller             Caller // as in EnrollRequest
}

// EnrollResult is what a successful Enroll made.
type EnrollResult struct {
	UUID string // the new drive's LUKS UUID
	// HeaderBackup is the LUKS header backup (cryptsetup luksHeaderBackup) when the request
	// asked for one, else nil. The daemon hands it to the caller, who stores it.
	HeaderBackup []byte
}

// Enroller implements the Manager's configuration methods. Enroll and Adopt return the LUKS
// UUID of the new drive, after which they call Publisher.AddDrive themselves.
type Enroller interface {
	Enroll(ctx context.Context, req EnrollRequest) (EnrollResult, error)
	Adopt(ctx context.Context, req AdoptRequest) (uuid string, err error)
	Forget(ctx context.Context, uuid string, removeKeyslot bool) error
	// SealKeys seals the plain keyfiles in the key directory and returns their paths.
	SealKeys(ctx context.Context) ([]string, error)
}

// Publisher is how the state machines publish Drive properties; the daemon implements it and
// turns every change into PropertiesChanged. Status values are complete snapshots: the daemon
// diffs them against what it published before.
type Publisher interface {
	AddDrive(uuid string, st api.DriveStatus) error
	UpdateDrive(uuid string, st api.DriveStatus)
	RemoveDrive(uuid string)
}
