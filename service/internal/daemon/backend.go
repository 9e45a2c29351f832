package daemon

import (
	"context"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/drive"
	"github.com/plugvault/plugvault/service/internal/enroll"
)

// Backend is the drive manager that the Drive objects delegate to once a call is authorized and
// its arguments validated (service/internal/drive implements it). Drives are named by LUKS
// UUID. Errors wrap the sentinels of service/api (api.ErrBusy, api.ErrNotPresent, …) and carry
// a message fit for the user.
type Backend interface {
	Unlock(ctx context.Context, uuid string, passphrase []byte) error
	// CheckPassphrase tests passphrase against the plugged-in drive without opening it.
	CheckPassphrase(ctx context.Context, uuid string, passphrase []byte) error
	BackupNow(ctx context.Context, uuid string) error
	Cancel(ctx context.Context, uuid string) error
	Eject(ctx context.Context, uuid string, powerOff bool) error
	ListSnapshots(ctx context.Context, uuid string) ([]api.Snapshot, error)
	Browse(ctx context.Context, uuid string, caller drive.Caller) (string, error)
	// Restore and Verify hand progress the bytes done and the total (0: unknown) as they go.
	Restore(ctx context.Context, uuid string, req drive.RestoreRequest, progress func(done, total uint64)) error
	// Verify runs with the caller's credentials, like Restore: a user verifies what they may
	// read, and the problems it lists (paths) never reveal other users' file names.
	Verify(ctx context.Context, uuid, snapshot string, caller drive.Caller, progress func(done, total uint64)) (checked uint64, problems []string, err error)
	// RunAs returns the user whose backups the drive holds and as whom they run (config
	// run_as; "" or "root" means root). Callers who are someone else need
	// api.ActionManageOtherUsersDrive for the methods in api.OtherUserActions.
	RunAs(ctx context.Context, uuid string) (string, error)
}

// Enroller implements the Manager's configuration methods. Enroll and Adopt return the LUKS
// UUID of the new drive, after which they call Publisher.AddDrive themselves.
type Enroller interface {
	Enroll(ctx context.Context, req enroll.Request) (enroll.Result, error)
	Adopt(ctx context.Context, req enroll.AdoptRequest) (uuid string, err error)
	Forget(ctx context.Context, uuid string, removeKeyslot bool) error
	// SealKeys seals the plain keyfiles in the key directory and returns their paths.
	SealKeys(ctx context.Context) ([]string, error)
}
