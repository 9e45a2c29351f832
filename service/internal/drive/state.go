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
	powerOff   bool // the eject powers the stick off once it is locked
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

	run run // the backup run holding the slot (act == kindBackup)
	op  op  // the browse, restore, verify or cleanup holding the slot
}

// op is where a browse, restore, verify or cleanup is.
type op struct {
	phase     string    // one of the opPhase* constants
	opened    bool      // it opened the drive (read-only) and closes it again, browse aside
	endState  api.State // what it shows when it ends (the state before it, unless a browse opened)
	endReason string
	// reason is what it shows while it works (the claim's reason); openReason is what a
	// browse shows once the drive is open.
	reason     string
	openReason string
	keep       bool // a cleanup: the state stays as it is unless the teardown decides it
}

// Phases of a browse, restore, verify or cleanup; each waits for the result of an effect.
const (
	opPhaseOpen       = "open"       // effOpenReadOnly, or effMountReadOnly after the passphrase
	opPhasePassphrase = "passphrase" // effAwaitPassphrase: the keyfile cannot open the drive
	opPhaseWork       = "work"       // effWork (restore, verify)
	opPhaseClose      = "close"      // effTeardown of what it opened
	opPhaseCleanup    = "cleanup"    // effTeardown of what a removal left set up
)

// run is where a backup run is: the phase whose effect is under way and what the run has
// learnt so far.
type run struct {
	phase     string // one of the phase* constants
	inhibited bool   // the sleep inhibitor is held
	adopted   bool   // the run uses the mapping an earlier daemon left
	retried   bool   // the adopted mapping failed to mount and the drive was opened afresh
	res       *Result
	err       error     // why the run stops (its cancel cause, or a *userError); nil: success
	failedIn  api.State // the state whose step failed when err is a failure (FailedIn)
	failed    error     // the engine's failure, kept while the snapshot list is read again
	terr      error     // the final teardown's error
}

// Phases of a run, in order; each waits for the result of an effect.
const (
	phaseInhibit     = "inhibit"      // effInhibit
	phaseCloseBrowse = "close-browse" // effTeardown of the browse mount the run replaces
	phaseKeyfile     = "keyfile"      // effUnlockKeyfile
	phasePassphrase  = "passphrase"   // effAwaitPassphrase
	phaseMount       = "mount"        // effMount
	phaseReopen      = "reopen"       // effTeardown of an adopted mapping that did not mount
	phaseSnapshots   = "snapshots"    // effListSnapshots before the engine
	phaseEngine      = "engine"       // effRunEngine
	phaseFinished    = "finished"     // effListSnapshots after the engine (also after it failed)
	phaseTeardown    = "teardown"     // the final effTeardown
	phaseEnd         = "end"          // effRelease, effEndRun
)

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
	// the slot is free), evEjectClaim follows once it is, then the results of its teardown and
	// power-off, and evEjectOver in every case.
	evEject      struct{ powerOff bool }
	evEjectWait  struct{}
	evEjectClaim struct{}
	evEjectOver  struct{}
	// evClaim claims the slot for a browse, restore or verify (kind), shown as present with
	// reason; verb words a refusal; a browse shows openReason once the drive is open.
	evClaim         struct{ kind, verb, reason, openReason string }
	evUnlockAttempt struct{} // Unlock hands a passphrase over
	evUnlockOver    struct{} // the Unlock call ends
)

// Results of the steps of a run and of a teardown.
type (
	evWrongPassphrase struct{}
	evPassphraseOK    struct{}
	evOpenBegin       struct{}
	evOpened          struct{}
	evMountBegin      struct{}
	evMounted         struct{ readOnly bool }
	evProgress        struct{ p Progress }
	evSnapshots       struct{ snaps []api.Snapshot }
	evUnmounting      struct{}
	evUnmounted       struct{}
	evLocking         struct{}
	evLocked          struct{}
	evTornDown        struct{}
)

// Results of a run's effects. cause is the run's cancel cause when it was cancelled before the
// effect returned (context.Cause), else nil.
type (
	evRunStarted  struct{}
	evInhibited   struct{}
	evKeyfileDone struct {
		problem    string
		err, cause error
	}
	evPassphraseDone struct{ err, cause error }
	evMountDone      struct{ err, cause error }
	evSnapshotsRead  struct{}
	evEngineDone     struct {
		res        Result
		err, cause error
	}
	evTeardownDone struct{ err error }
	evPowerOffDone struct{ err error }
	// evOpenDone: the read-only open of a browse, restore or verify; problem (lower case)
	// says why the keyfile cannot open a stick that is the drive: its passphrase is needed.
	evOpenDone struct {
		failed  bool
		problem string
	}
	evWorkDone struct{} // the restore or verify itself
	// evRunEnded: the run released its inhibitor; removed tells whether its cause is
	// ErrRemoved.
	evRunEnded struct{ removed bool }
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
func (evEjectOver) eventName() string       { return "eject-over" }
func (evClaim) eventName() string           { return "claim" }
func (evUnlockAttempt) eventName() string   { return "unlock-attempt" }
func (evUnlockOver) eventName() string      { return "unlock-over" }
func (evWrongPassphrase) eventName() string { return "wrong-passphrase" }
func (evPassphraseOK) eventName() string    { return "passphrase-ok" }
func (evOpenBegin) eventName() string       { return "open-begin" }
func (evOpened) eventName() string          { return "opened" }
func (evMountBegin) eventName() string      { return "mount-begin" }
func (evMounted) eventName() string         { return "mounted" }
func (evProgress) eventName() string        { return "progress" }
func (evSnapshots) eventName() string       { return "snapshots" }
func (evUnmounting) eventName() string      { return "unmounting" }
func (evUnmounted) eventName() string       { return "unmounted" }
func (evLocking) eventName() string         { return "locking" }
func (evLocked) eventName() string          { return "locked" }
func (evTornDown) eventName() string        { return "torn-down" }
func (evRunStarted) eventName() string      { return "run-started" }
func (evInhibited) eventName() string       { return "inhibited" }
func (evKeyfileDone) eventName() string     { return "keyfile-done" }
func (evPassphraseDone) eventName() string  { return "passphrase-done" }
func (evMountDone) eventName() string       { return "mount-done" }
func (evSnapshotsRead) eventName() string   { return "snapshots-read" }
func (evEngineDone) eventName() string      { return "engine-done" }
func (evTeardownDone) eventName() string    { return "teardown-done" }
func (evPowerOffDone) eventName() string    { return "power-off-done" }
func (evOpenDone) eventName() string        { return "open-done" }
func (evWorkDone) eventName() string        { return "work-done" }
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
	// effStartCleanup starts the goroutine of a cleanup, the teardown of what a removed stick
	// left set up; its result is an evTeardownDone.
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

// Effects of an activity (a backup run or an eject), run by the goroutine that owns it, which
// feeds their results back.
type (
	effInhibit         struct{} // take the sleep inhibitor → evInhibited
	effUnlockKeyfile   struct{} // identify the stick, open it with the keyfile → evKeyfileDone
	effAwaitPassphrase struct{} // try what Unlock hands over until one opens → evPassphraseDone
	effMount           struct{} // mount read-write → evMountDone
	effListSnapshots   struct{} // read the snapshot list → evSnapshots, evSnapshotsRead
	effRunEngine       struct{} // run the engine → evProgress…, evEngineDone
	// effTeardown unmounts and locks → evTeardownDone; final: a run's last, which passes
	// through unmounting and locking unless the stick was removed; eject: an eject's, which
	// passes through them.
	effTeardown    struct{ final, eject bool }
	effRelease     struct{} // release the sleep inhibitor
	effEndRun      struct{} // free the slot → evRunEnded
	effPowerOff    struct{} // power the USB device off → evPowerOffDone
	effEndActivity struct{} // free the slot (step has published the outcome)
	// effOpenReadOnly unlocks with the keyfile and mounts read-only → evOpenDone.
	effOpenReadOnly struct{}
	// effMountReadOnly mounts read-only the mapping a passphrase opened → evOpenDone.
	effMountReadOnly struct{}
	effWork          struct{} // restore or verify → evWorkDone
)

func (effInhibit) effectName() string         { return "inhibit" }
func (effUnlockKeyfile) effectName() string   { return "unlock-keyfile" }
func (effAwaitPassphrase) effectName() string { return "await-passphrase" }
func (effMount) effectName() string           { return "mount" }
func (effListSnapshots) effectName() string   { return "list-snapshots" }
func (effRunEngine) effectName() string       { return "run-engine" }
func (e effTeardown) effectName() string {
	switch {
	case e.final:
		return "final-teardown"
	case e.eject:
		return "eject-teardown"
	}
	return "teardown"
}
func (effRelease) effectName() string       { return "release" }
func (effEndRun) effectName() string        { return "end-run" }
func (effPowerOff) effectName() string      { return "power-off" }
func (effEndActivity) effectName() string   { return "end-activity" }
func (effOpenReadOnly) effectName() string  { return "open-read-only" }
func (effMountReadOnly) effectName() string { return "mount-read-only" }
func (effWork) effectName() string          { return "work" }

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
	pass   chan attempt // passphrases from Unlock: backup runs, browse, restore and verify
}

// attempt is one Unlock call handed to the run that awaits a passphrase.
type attempt struct {
	passphrase []byte // owned by the caller, who zeroes it once reply has answered
	reply      chan error
}
