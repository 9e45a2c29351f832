package enroll

import (
	"github.com/plugvault/plugvault/service/internal/drive"
	"github.com/plugvault/plugvault/service/internal/logging"
)

// Request is a validated Manager.Enroll call.
type Request struct {
	Device     string         // canonical, under /dev
	Passphrase logging.Secret // zeroed by the daemon after the call returns; prints as [redacted]
	Name       string
	Label      string
	Filesystem string // "btrfs" or "ext4"
	// HeaderBackup asks for a LUKS header backup of the new drive, returned in
	// Result (never written to a path the caller names: root would write it).
	HeaderBackup bool
	// Caller enrolls the drive; unless it is root, the new drive backs up the caller's home
	// as the caller (sources and run_as in the configuration).
	Caller drive.Caller
}

// AdoptRequest is a validated Manager.Adopt call.
type AdoptRequest struct {
	Device             string
	Secret             logging.Secret // zeroed by the daemon after the call returns; prints as [redacted]
	SecretIsPassphrase bool
	AddKeyfileSlot     bool
	Name               string
	Caller             drive.Caller // as in Request
}

// Result is what a successful Enroll made.
type Result struct {
	UUID string // the new drive's LUKS UUID
	// HeaderBackup is the LUKS header backup (cryptsetup luksHeaderBackup) when the request
	// asked for one, else nil. The daemon hands it to the caller, who stores it.
	HeaderBackup []byte
}
