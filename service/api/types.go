package api

import "regexp"

// State is the State property of a Drive: where its state machine is.
type State string

// The drive states, in the order a normal run passes through them.
const (
	StateAbsent             State = "absent"
	StatePresent            State = "present"
	StateUnlocking          State = "unlocking"
	StateAwaitingPassphrase State = "awaiting-passphrase"
	StateMounting           State = "mounting"
	StateBackingUp          State = "backing-up"
	StateFinishing          State = "finishing"
	StateUnmounting         State = "unmounting"
	StateLocking            State = "locking"
	StateSafeToRemove       State = "safe-to-remove"
	StateFailed             State = "failed"
)

// States lists every state, for validation and exhaustive tests.
var States = []State{
	StateAbsent, StatePresent, StateUnlocking, StateAwaitingPassphrase, StateMounting,
	StateBackingUp, StateFinishing, StateUnmounting, StateLocking, StateSafeToRemove, StateFailed,
}

// Running reports whether a run (unlock … lock) is in progress in this state.
func (s State) Running() bool {
	switch s {
	case StateUnlocking, StateAwaitingPassphrase, StateMounting, StateBackingUp,
		StateFinishing, StateUnmounting, StateLocking:
		return true
	}
	return false
}

// Result is the LastResult property of a Drive.
type Result string

// The outcomes of a run.
const (
	ResultNone        Result = ""
	ResultSuccess     Result = "success"
	ResultFailed      Result = "failed"
	ResultCancelled   Result = "cancelled"
	ResultInterrupted Result = "interrupted"
)

// DriveStatus holds every property of a Drive object. The daemon publishes it, the client reads
// it; the field names are the property names.
type DriveStatus struct {
	Name          string
	LuksUUID      string
	Label         string
	Vendor        string
	Model         string
	Serial        string
	Present       bool
	State         State
	StateReason   string
	FailedIn      State
	Progress      float64
	FilesDone     uint64
	FilesTotal    uint64
	BytesDone     uint64
	BytesTotal    uint64
	Rate          float64
	EtaSeconds    int64
	LastBackup    uint64
	LastResult    Result
	SnapshotCount uint32
}

// Snapshot is one element of ListSnapshots' a(sxttsx).
type Snapshot struct {
	Name    string // directory name, a UTC timestamp in SnapshotLayout
	Created int64  // Unix seconds
	Files   uint64
	Bytes   uint64
	Status  string // SnapshotComplete or SnapshotPartial
	// Changed is how many files (entries other than directories) the snapshot added,
	// changed or removed since the one before it; -1 when not known (ChangedUnknown).
	Changed int64
}

// ChangedUnknown is Snapshot.Changed of a snapshot that did not record its changes: one made
// by an older version, or one that resumed an interrupted run.
const ChangedUnknown = -1

// Snapshot statuses.
const (
	SnapshotComplete = "complete"
	SnapshotPartial  = "partial"
)

// SnapshotLayout is the time layout (time.Format) of a snapshot's name: the UTC second the
// snapshot was started, such as 20261126T083100Z. Names sort in time order.
const SnapshotLayout = "20060102T150405Z"

// snapshotName is the one form a snapshot name takes: SnapshotLayout's digits, T and Z.
var snapshotName = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}Z$`)

// IsSnapshotName reports whether name is a snapshot name. The daemon checks every snapshot
// name a caller sends with it, and the engine every directory name before it counts it as a
// snapshot.
func IsSnapshotName(name string) bool { return snapshotName.MatchString(name) }
