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
// Browsing: Browse unlocks with the keyfile and mounts the drive read-only at
// <mount_base>/<luks_uuid>/drive, which only root and the drive's run_as user can reach. While it is open for browsing the drive's State is present (it is
// not safe to remove) and StateReason names the mount point; Eject, a removal or the next
// backup run closes it.
package drive
