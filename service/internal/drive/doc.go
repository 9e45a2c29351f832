// Package drive is plugvaultd's drive state machine: from the moment a USB stick appears on udev
// until it is safe to remove. One Manager serves every configured drive and implements
// daemon.Backend; every state change is published as a complete api.DriveStatus through
// Publisher.
//
// A run passes absent → present → unlocking → [awaiting-passphrase] → mounting → backing-up →
// finishing → unmounting → locking → safe-to-remove, or ends in failed with a reason the user can
// act on. Exactly one run exists per plug-in: udev events are keyed by DEVPATH and LUKS UUID, so
// duplicates, reordered events and the change events our own luksOpen causes never start a
// second one. Whatever ends a run (success, Cancel, Eject, removal of the stick, suspend, daemon
// shutdown), the run's own goroutine tears down what it set up: it waits for the engine to stop,
// unmounts and closes the mapping, so that a replugged stick can be opened and mounted at once.
// When programs keep the mount busy, what happens depends on the stick: if it was pulled, the
// mount is detached lazily and the mapping's close deferred (nothing can reach the device any
// more, and a replug must work); if it is still plugged in, the drive stays mounted and unlocked
// and is reported failed ("still in use — close the programs using it, then eject it"), never
// safe to remove.
//
// The machine: step(machine, event, now) → (machine, effects) is the whole state machine, a pure
// function with no I/O, no lock and no goroutine (state.go, step.go, steprun.go). The machine
// holds the published status and what a teardown and the next run need to know (the device, the
// activity holding the drive's one slot, whether the mapping and mount are there, the phase of the
// activity and whether a run holds the sleep inhibitor). Udev events, sleep and resume, the
// service's stop and bus calls are events; so are the results of effects. The executor runs the
// effects (exec.go, actor.go, unlock.go, mount.go): cancelling, claiming the slot and logging at
// once; unlocking, mounting, the engine, teardown, power-off and the inhibitor one at a time in
// the goroutine that owns the activity (the run's or the cleanup's own, the caller's for an eject,
// browse, restore or verify), feeding each result back to step. Publications are delivered after
// the Manager's lock is released, one drive's in the order step made them, and a call returns once
// what it changed is published.
//
// The lower layers (udev, cryptsetup, mount, USB power, the backup engine, logind) are consumed
// through small interfaces declared here (Source, LUKS, Mounter, Engine, Logind) whose method
// sets follow the agreed internal APIs; service/cmd/plugvaultd (adapters.go, logind.go) adapts
// the real types and wires them in.
//
// Unlocking: once the LUKS UUID read from the header has confirmed udev's, the keyfile (the
// drive's keyfile setting, or DefaultKeyDir/<uuid>.key) is tried first. A missing, empty,
// unsafe (the ReadKeyfile dependency: lax ownership or mode, a symlink) or rejected keyfile moves the run to
// awaiting-passphrase, with the reason in StateReason; Unlock then hands passphrases to the
// run. Wrong passphrases are answered after a growing delay that only the caller waits for. A
// device that does not open with our key is never mounted.
//
// Suspend: every run holds a logind delay inhibitor on "sleep" (logind takes delay locks only
// on sleep and shutdown: closing the lid is a sleep). Before sleep the run is stopped, the drive
// unmounted and locked, and only then the inhibitor released; after resume the run starts
// again if the stick is still there. PrepareForSleep arrives on the
// daemon's own bus connection, which accepts no fds; each inhibitor is taken on a short-lived
// connection of its own that closes every fd it did not ask for (see inhibit).
//
// Restart: Run first adopts what an earlier daemon left (the plugvault-* mapping and the mount
// of a drive whose stick is plugged in, and the run continues from there) and cleans the rest.
//
// Browse, restore and verify without the keyfile: when the keyfile cannot open a stick that is
// the drive (the same test as a run's: its header carries the recorded fingerprint), the
// activity moves the drive to awaiting-passphrase with the reason in StateReason, exactly as a
// run does, and the Unlock that hands a run its passphrase hands this one over too (with the
// same growing delay after wrong ones); the mapping it opens is read-only. This reuses what
// every client already has: the tray opens its passphrase dialog for any drive in
// awaiting-passphrase, and the CLI's unlock answers it, so no method grew a second way to
// take a secret. The caller of Browse waits (its call has the daemon's long call timeout; a
// Restore or Verify job runs on meanwhile); Cancel, Eject, a removal or
// opPassphraseWait without an answer end the wait, and the drive goes back to where it was.
// An impostor or a drive without a recorded fingerprint is refused as in a run, never asked.
//
// Browsing: Browse unlocks with the keyfile and mounts the drive read-only at
// <mount_base>/<luks_uuid>/drive, which only root and the drive's run_as user can reach. While it is open for browsing the drive's State is present (it is
// not safe to remove) and StateReason names the mount point; Eject, a removal or the next
// backup run closes it.
//
// # State table
//
// For each event, the next state and the effects (logging left out) of step from each state.
// The first column is a state as a run leaves it, or state/variant for another phase of a run
// or another situation in that state; "*" stands for every state not listed for that event,
// "=" for the state unchanged, "-" for no effect. An event not listed for a state leaves the
// state alone and publishes nothing (it may record what is set up: open-begin, opened,
// mount-begin, mounted, unmounted, locked, torn-down, adopted-mapping, adopted-mount,
// passphrase-ok, unlock-over, eject-over, and a duplicate plug). shutdown-locked and the
// power-off results come after a teardown that closed everything. The events are those of
// step_test.go, which checks this table against step:
//
//	state                    event                next                 effects
//	absent                   plug                 present              publish,start-run
//	locking/eject-gone       plug                 present              publish
//	absent                   plug-other           present              publish,start-run
//	locking/eject-gone       plug-other           present              publish
//	absent                   remove               =                    -
//	present                  remove               absent               publish
//	present/browsing         remove               =                    start-cleanup
//	locking/eject-gone       remove               =                    -
//	safe-to-remove           remove               absent               publish
//	safe-to-remove/resume    remove               absent               publish
//	failed                   remove               absent               publish
//	*                        remove               =                    cancel
//	present/run              sleep                =                    cancel
//	present/inhibit          sleep                =                    cancel
//	present/close-browse     sleep                =                    cancel
//	unlocking                sleep                =                    cancel
//	unlocking/reopen         sleep                =                    cancel
//	awaiting-passphrase      sleep                =                    cancel
//	mounting                 sleep                =                    cancel
//	mounting/adopted         sleep                =                    cancel
//	mounting/snapshots       sleep                =                    cancel
//	backing-up               sleep                =                    cancel
//	finishing                sleep                =                    cancel
//	unmounting               sleep                =                    cancel
//	locking                  sleep                =                    cancel
//	locking/end              sleep                =                    cancel
//	safe-to-remove/resume    resume               =                    start-run
//	absent                   shutdown             =                    -
//	present                  shutdown             =                    -
//	present/browsing         shutdown             =                    -
//	safe-to-remove           shutdown             =                    -
//	safe-to-remove/resume    shutdown             =                    -
//	failed                   shutdown             =                    -
//	*                        shutdown             =                    cancel
//	present                  shutdown-locked      safe-to-remove       publish
//	present/browsing         shutdown-locked      safe-to-remove       publish
//	safe-to-remove           shutdown-locked      =                    publish
//	safe-to-remove/resume    shutdown-locked      =                    publish
//	failed                   shutdown-locked      safe-to-remove       publish
//	present                  backup-now           =                    start-run
//	present/browsing         backup-now           =                    start-run
//	safe-to-remove           backup-now           =                    start-run
//	safe-to-remove/resume    backup-now           =                    start-run
//	failed                   backup-now           =                    start-run
//	*                        backup-now           =                    refuse
//	absent                   cancel               =                    -
//	present                  cancel               =                    -
//	present/browsing         cancel               =                    -
//	present/waiting          cancel               =                    -
//	locking/eject            cancel               =                    -
//	locking/eject-power-off  cancel               =                    -
//	locking/eject-gone       cancel               =                    -
//	safe-to-remove           cancel               =                    -
//	safe-to-remove/resume    cancel               =                    -
//	failed                   cancel               =                    -
//	*                        cancel               =                    cancel
//	absent                   eject                =                    refuse
//	locking/eject            eject                =                    refuse
//	locking/eject-power-off  eject                =                    refuse
//	locking/eject-gone       eject                =                    refuse
//	absent                   eject-wait           =                    -
//	present                  eject-wait           =                    -
//	present/browsing         eject-wait           =                    -
//	present/waiting          eject-wait           =                    -
//	safe-to-remove           eject-wait           =                    -
//	safe-to-remove/resume    eject-wait           =                    -
//	failed                   eject-wait           =                    -
//	*                        eject-wait           =                    cancel
//	present                  eject-claim          =                    claim,eject-teardown
//	present/browsing         eject-claim          =                    claim,eject-teardown
//	safe-to-remove           eject-claim          =                    claim,eject-teardown
//	safe-to-remove/resume    eject-claim          =                    claim,eject-teardown
//	failed                   eject-claim          =                    claim,eject-teardown
//	present                  browse               =                    claim,publish,open-read-only
//	present/browsing         browse               =                    claim,publish,publish,end-activity
//	safe-to-remove           browse               present              claim,publish,open-read-only
//	safe-to-remove/resume    browse               present              claim,publish,open-read-only
//	failed                   browse               present              claim,publish,open-read-only
//	*                        browse               =                    refuse
//	present                  verify               =                    claim,publish,open-read-only
//	present/browsing         verify               =                    claim,publish,work
//	safe-to-remove           verify               present              claim,publish,open-read-only
//	safe-to-remove/resume    verify               present              claim,publish,open-read-only
//	failed                   verify               present              claim,publish,open-read-only
//	*                        verify               =                    refuse
//	present/browse-open      open-done            =                    publish,end-activity
//	present/verify-open      open-done            =                    work
//	present/browse-open      open-failed          =                    teardown
//	present/verify-open      open-failed          =                    teardown
//	present/browse-open      open-keyfile-refused awaiting-passphrase  publish,await-passphrase
//	present/verify-open      open-keyfile-refused awaiting-passphrase  publish,await-passphrase
//	present/verify-work      work-done            =                    teardown
//	awaiting-passphrase      unlock               =                    -
//	awaiting-passphrase/op   unlock               =                    -
//	*                        unlock               =                    refuse
//	awaiting-passphrase      wrong-passphrase     =                    publish
//	awaiting-passphrase/op   wrong-passphrase     =                    publish
//	*                        wrong-passphrase     awaiting-passphrase  publish
//	unmounting               unmounting           =                    publish
//	*                        unmounting           unmounting           publish
//	locking                  locking              =                    publish
//	locking/end              locking              =                    publish
//	locking/eject            locking              =                    publish
//	locking/eject-power-off  locking              =                    publish
//	locking/eject-gone       locking              =                    publish
//	*                        locking              locking              publish
//	backing-up               progress             =                    publish
//	backing-up               progress-finishing   finishing            publish
//	*                        snapshots            =                    publish
//	present/run              run-started          =                    inhibit
//	present/inhibit          inhibited            unlocking            publish,unlock-keyfile
//	unlocking                keyfile-ok           mounting             publish,mount
//	unlocking                keyfile-refused      awaiting-passphrase  publish,await-passphrase
//	unlocking                keyfile-failed       =                    final-teardown
//	awaiting-passphrase      passphrase-done      mounting             publish,mount
//	awaiting-passphrase/op   passphrase-done      present              publish,mount-read-only
//	awaiting-passphrase      passphrase-failed    =                    final-teardown
//	awaiting-passphrase/op   passphrase-failed    present              publish,teardown
//	mounting                 mount-done           =                    list-snapshots
//	mounting/adopted         mount-done           =                    list-snapshots
//	mounting                 mount-failed         =                    final-teardown
//	mounting/adopted         mount-failed         =                    teardown
//	mounting                 cancelled            =                    final-teardown
//	mounting/adopted         cancelled            =                    final-teardown
//	mounting/snapshots       snapshots-read       backing-up           publish,run-engine
//	finishing                snapshots-read       =                    final-teardown
//	backing-up               engine-done          finishing            publish,list-snapshots
//	backing-up               engine-failed        =                    list-snapshots
//	present/waiting          teardown-done        =                    publish,start-run,end-activity
//	present/verify-close     teardown-done        safe-to-remove       publish,end-activity
//	present/close-browse     teardown-done        unlocking            publish,unlock-keyfile
//	unlocking/reopen         teardown-done        =                    publish,unlock-keyfile
//	unmounting               teardown-done        =                    release,end-run
//	locking                  teardown-done        =                    release,end-run
//	locking/eject            teardown-done        safe-to-remove       publish,end-activity
//	locking/eject-power-off  teardown-done        =                    power-off
//	locking/eject-gone       teardown-done        absent               publish,end-activity
//	present/waiting          teardown-failed      =                    publish,publish,start-run,end-activity
//	present/verify-close     teardown-failed      failed               publish,end-activity
//	present/close-browse     teardown-failed      =                    final-teardown
//	unlocking/reopen         teardown-failed      =                    final-teardown
//	unmounting               teardown-failed      =                    release,end-run
//	locking                  teardown-failed      =                    release,end-run
//	locking/eject            teardown-failed      failed               publish,refuse,end-activity
//	locking/eject-power-off  teardown-failed      failed               publish,refuse,end-activity
//	locking/eject-gone       teardown-failed      absent               publish,end-activity
//	locking/eject            power-off-done       safe-to-remove       publish,end-activity
//	locking/eject-power-off  power-off-done       safe-to-remove       publish,end-activity
//	locking/eject-gone       power-off-done       absent               publish,end-activity
//	locking/eject            power-off-in-use     present              publish,refuse,end-activity
//	locking/eject-power-off  power-off-in-use     present              publish,refuse,end-activity
//	locking/eject-gone       power-off-in-use     absent               publish,end-activity
//	locking/eject            power-off-failed     safe-to-remove       publish,end-activity
//	locking/eject-power-off  power-off-failed     safe-to-remove       publish,end-activity
//	locking/eject-gone       power-off-failed     absent               publish,end-activity
//	locking/end              run-ended            safe-to-remove       publish
package drive
