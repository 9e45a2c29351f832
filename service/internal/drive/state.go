package drive

import (
	"context"
	"log/slog"
	"path"
	"time"

	"github.com/plugvault/plugvault/service/api"
)

// Activity kinds: what holds a drive's one activity slot.
const (
	kindBackup  = "backup"
	kindBrowse  = "browse"
	kindRestore = "restore"
	kindVerify  = "verify"
	kindEject   = "eject"
	kindCleanup = "cleanup"
)

// device is the block device (disk or partition) that currently carries a drive.
type device struct {
	DevPath, DevName, DevType string
	Vendor, Model, Serial     string
	Label                     string
}

// diskDevPath is the DEVPATH of the whole disk, which is what USB power-off needs.
func (dv device) diskDevPath() string {
	if dv.DevType == "partition" {
		return path.Dir(dv.DevPath)
	}
	return dv.DevPath
}

// carries tells whether the removal of devPath takes dv with it (dv itself or its disk).
func (dv device) carries(devPath string) bool {
	return dv.DevPath == devPath || dv.diskDevPath() == devPath
}

// machine is everything the state machine knows about one drive: the status it publishes and
// the little a teardown and the next run need to know. step is the only code that changes it.
type machine struct {
	st api.DriveStatus

	dev     *device // nil when absent
	pending *device // the same drive seen on a second DEVPATH while the first was still there
	act     string  // kind of the activity holding the slot; "" when idle

	stopping   bool // the service is stopping: nothing new starts
	startAfter bool // start a backup run when the current activity ends (replug, resume)
	resume     bool // a run was stopped for suspend: start again after resume
	ejecting   bool
	// gone: the stick of what is set up now was removed; teardown may then detach a busy
	// mount lazily. Cleared once teardown has closed everything.
	gone bool

	// What is set up now. *Tried is set before the operation, so that teardown also looks
	// after an operation that was interrupted half way.
	mapTried, mapped    bool
	mountTried, mounted bool
	readOnly            bool

	unlocking    bool      // an Unlock attempt is being tried
	ioFailed     bool      // the last run failed on the device (maybe the stick was pulled)
	failedAt     time.Time // when it failed
	fails        int       // wrong passphrases since the last plug-in or success
	notBefore    time.Time // no Unlock attempt before this
	lastProgress time.Time // when progress was last published
}

// setUp tells whether a mapping or a mount may be left that a teardown must look after.
func (s machine) setUp() bool { return s.mapTried || s.mountTried }

// event is something that happened to a drive: a udev event, a bus call, the result of an
// effect. step turns it into the next machine and the effects to run.
type event interface{ eventName() string }

// Udev and logind events, and the service's own life.
type (
	evPlug     struct{ dev device } // udev add or change of a device carrying the drive
	evRemove   struct{ devPath string }
	evSleep    struct{}
	evResume   struct{}
	evShutdown struct{}
	// evShutdownLocked: at shutdown, the drive was unmounted and locked.
	evShutdownLocked struct{}
	// evAdopted: reconciliation found the mapping (mount false) or the mount an earlier
	// daemon left for this plugged-in drive.
	evAdopted struct{ mount bool }
)

// Bus calls. Those that can be refused answer with effRefuse.
type (
	evBackupNow struct{}
	evCancel    struct{}
	// evEject starts an eject; evEjectWait cancels the activity it waits for (each one until
	// the slot is free), evEjectClaim follows once it is, evEjectDone once the drive is locked
	// (and maybe powered off), and evEjectOver in every case.
	evEject      struct{}
	evEjectWait  struct{}
	evEjectClaim struct{}
	evEjectDone  struct{ teardownErr, powerOffErr error }
	evEjectOver  struct{}
	// evClaim claims the slot for a browse, restore or verify (kind), shown as present with
	// reason; verb words a refusal.
	evClaim struct{ kind, verb, reason string }
	// evActivityEnded ends a browse, restore, verify or cleanup; prev is the status to go back
	// to (nil: keep the current one).
	evActivityEnded struct {
		prev        *api.DriveStatus
		teardownErr error
	}
	evUnlockAttempt struct{} // Unlock hands a passphrase over
	evUnlockOver    struct{} // the Unlock call ends
)

// Results of the steps of a run and of a teardown.
type (
	evUnlocking       struct{}
	evAwaitPassphrase struct{ reason string }
	evWrongPassphrase struct{}
	evPassphraseOK    struct{}
	evOpenBegin       struct{}
	evOpened          struct{}
	evMounting        struct{}
	evMountBegin      struct{}
	evMounted         struct{ readOnly bool }
	evBackingUp       struct{}
	evProgress        struct{ p Progress }
	evFinishing       struct{}
	evSnapshots       struct{ snaps []api.Snapshot }
	evUnmounting      struct{}
	evUnmounted       struct{}
	evLocking         struct{}
	evLocked          struct{}
	evTornDown        struct{}
	evRunEnded        struct {
		res         *Result
		err         error // why the run stopped (its cancel cause, or a *userError)
		removed     bool  // the run's cause was ErrRemoved
		teardownErr error
	}
)

func (evPlug) eventName() string            { return "plug" }
func (evRemove) eventName() string          { return "remove" }
func (evSleep) eventName() string           { return "sleep" }
func (evResume) eventName() string          { return "resume" }
func (evShutdown) eventName() string        { return "shutdown" }
func (evShutdownLocked) eventName() string  { return "shutdown-locked" }
func (evAdopted) eventName() string         { return "adopted" }
func (evBackupNow) eventName() string       { return "backup-now" }
func (evCancel) eventName() string          { return "cancel" }
func (evEject) eventName() string           { return "eject" }
func (evEjectWait) eventName() string       { return "eject-wait" }
func (evEjectClaim) eventName() string      { return "eject-claim" }
func (evEjectDone) eventName() string       { return "eject-done" }
func (evEjectOver) eventName() string       { return "eject-over" }
func (evClaim) eventName() string           { return "claim" }
func (evActivityEnded) eventName() string   { return "activity-ended" }
func (evUnlockAttempt) eventName() string   { return "unlock-attempt" }
func (evUnlockOver) eventName() string      { return "unlock-over" }
func (evUnlocking) eventName() string       { return "unlocking" }
func (evAwaitPassphrase) eventName() string { return "await-passphrase" }
func (evWrongPassphrase) eventName() string { return "wrong-passphrase" }
func (evPassphraseOK) eventName() string    { return "passphrase-ok" }
func (evOpenBegin) eventName() string       { return "open-begin" }
func (evOpened) eventName() string          { return "opened" }
func (evMounting) eventName() string        { return "mounting" }
func (evMountBegin) eventName() string      { return "mount-begin" }
func (evMounted) eventName() string         { return "mounted" }
func (evBackingUp) eventName() string       { return "backing-up" }
func (evProgress) eventName() string        { return "progress" }
func (evFinishing) eventName() string       { return "finishing" }
func (evSnapshots) eventName() string       { return "snapshots" }
func (evUnmounting) eventName() string      { return "unmounting" }
func (evUnmounted) eventName() string       { return "unmounted" }
func (evLocking) eventName() string         { return "locking" }
func (evLocked) eventName() string          { return "locked" }
func (evTornDown) eventName() string        { return "torn-down" }
func (evRunEnded) eventName() string        { return "run-ended" }

// effect is what step asks the executor to do.
type effect interface{ effectName() string }

type (
	// effPublish hands the complete status to the Publisher (after Manager.mu is released,
	// in order).
	effPublish struct{ st api.DriveStatus }
	// effStartRun claims the slot for a backup run on dev and starts its goroutine (which
	// holds the sleep inhibitor, unlocks, mounts, runs the engine and tears down).
	effStartRun struct{ dev device }
	// effStartCleanup starts the teardown of what a removed stick left set up.
	effStartCleanup struct{}
	// effClaim creates the activity (kind) that the calling goroutine runs itself.
	effClaim struct{ kind string }
	// effCancel cancels the current activity with cause.
	effCancel struct{ cause error }
	// effRefuse answers the call that caused the event with err.
	effRefuse struct{ err error }
	// effLog writes one log entry.
	effLog struct {
		level slog.Level
		msg   string
		args  []any
	}
)

func (effPublish) effectName() string      { return "publish" }
func (effStartRun) effectName() string     { return "start-run" }
func (effStartCleanup) effectName() string { return "start-cleanup" }
func (effClaim) effectName() string        { return "claim" }
func (effCancel) effectName() string       { return "cancel" }
func (effRefuse) effectName() string       { return "refuse" }
func (effLog) effectName() string          { return "log" }

// activity is the one thing a drive is doing: a backup run or a browse, restore, verify, eject
// or cleanup operation. It owns the drive's mapping and mount while it lasts. The machine
// knows its kind; the executor keeps its context and channels.
type activity struct {
	kind   string
	ctx    context.Context
	cancel context.CancelCauseFunc
	done   chan struct{}
	pass   chan attempt // passphrases from Unlock, backup runs only
}

// attempt is one Unlock call handed to the run that awaits a passphrase.
type attempt struct {
	passphrase []byte // owned by the caller, who zeroes it once reply has answered
	reply      chan error
}
