package drive

import "github.com/plugvault/plugvault/service/api"

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

// Publisher is how the state machine publishes a drive's properties; the daemon implements it
// and turns every change into PropertiesChanged. Status values are complete snapshots: the
// daemon diffs them against what it published before.
type Publisher interface {
	AddDrive(uuid string, st api.DriveStatus) error
	UpdateDrive(uuid string, st api.DriveStatus)
	RemoveDrive(uuid string)
}
