// Package enroll is the daemon side of the Manager's Enroll, Adopt and Forget methods: it
// implements the daemon's Enroller. plugvaultd has already authorized the caller with polkit
// (org.plugvault.enroll, .configure, .forget, all auth_admin_keep) and validated the request
// before any of these run.
//
// Enroll formats a stick: it refuses anything that is not a whole removable USB disk
// (sysfs removable=1 or ID_BUS=usb in the udev database), that is mounted or in use (any of its
// block devices in mountinfo, holders in sysfs, swap) or that holds the running system. Then:
// LUKS2 with the user's passphrase in slot 0 (argon2id, cryptsetup's default); a udev rule that
// makes udisks ignore the drive and its mapping (before any mapping is opened, so the one made
// for mkfs is ignored too); a random 64-byte key in its own slot with PBKDF2 at 1000 iterations
// (a random key needs no stretching; see luks.Cryptsetup.AddKey); the key is written to
// /etc/plugvault/keys/UUID.key (0400, the directory 0700, owned by the daemon's user, root); a
// filesystem (btrfs or ext4, with a label) is made inside the opened mapping; optionally a LUKS
// header backup, made in a private temporary directory and returned to the caller (never
// written to a path the caller names); the [[drive]] entry in config.toml (atomic write); and finally the Registry
// (the drive state machine and the D-Bus objects) learns about it.
// The device is pinned when it is checked (device number, sysfs place, and the kernel's disk
// sequence number, which no other disk ever gets): it is checked in full again right before
// luksFormat, and its identity before every later step that writes to it, so a stick swapped
// for another under the same name is refused (System.same says why the path is checked again
// rather than the device held open).
// Every step that succeeded is undone in reverse order when a later one fails, so there is never
// a half-registered drive or a key without a drive. (The LUKS format itself cannot be undone:
// the stick is then formatted but not registered, which the error says.)
//
// Adopt registers a LUKS device prepared by hand, without formatting: the secret must open it
// (cryptsetup open --test-passphrase); a keyfile is copied into the key directory; when the
// keyfile's own slot uses argon2 and the caller did not refuse it (add_keyfile_slot, which the
// daemon defaults to true for keyfiles), a fast keyfile slot with a new random key is added and
// that key is stored instead. Keyfiles of up to config.MaxKeyfileSize (cryptsetup's 8 MiB) work.
//
// The [[drive]] entry of a drive that a user (not root) enrolls or adopts backs up that user's
// home directory as that user (sources and run_as); root's gets no sources.
//
// Forget unregisters a drive: the Registry forgets it, config.toml loses its entry, and its
// keyfile (only when it lives in the key directory) and udev rule are deleted; with
// removeKeyslot the keyfile's slot is first removed from the present drive, authorized by the
// keyfile itself, and never when it is the last slot.
//
// The LUKS operations (service/internal/luks), the configuration writer
// (service/internal/config) and the Registry are consumed through the small interfaces and
// function fields of Deps, so the unit tests run with fakes and a fake sysfs tree; every
// cryptsetup call goes through LUKS. mkfs and udevadm run through sysexec.Runner; mkfs needs
// the opened mapping (device-mapper), so it only really runs in the VM.
//
// plugvaultd wires it like this (luks.Header is not imported here, so Dump is adapted):
//
//	enroll.New(enroll.Deps{
//		LUKS: cs,
//		Keyslots: func(ctx context.Context, dev string) (map[int]enroll.Keyslot, error) {
//			h, err := cs.Dump(ctx, dev)
//			if err != nil {
//				return nil, err
//			}
//			m := map[int]enroll.Keyslot{}
//			for n, ks := range h.Keyslots {
//				m[n] = enroll.Keyslot{Type: ks.Type, PBKDF: ks.PBKDF}
//			}
//			return m, nil
//		},
//		LoadConfig: config.Load, AppendDrive: config.AppendDrive, RemoveDrive: config.RemoveDrive,
//		Registry: registry, Runner: sysexec.Exec{}, Logger: logger,
//	})
package enroll
