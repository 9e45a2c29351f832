package main

import (
	"context"
	"flag"
	"strings"

	"github.com/plugvault/plugvault/service/api"
)

// verbs is every command, in the order the overview lists them.
var verbs []verb

func init() {
	verbs = []verb{
		{name: "status", args: "[DRIVE] [--watch]", summary: "show every drive: state, progress, last backup",
			help: `Shows each enrolled drive (or only DRIVE): its state (in plugvaultd's words where it gives
a reason), the progress of a running backup, and when the last complete backup was taken,
with a reminder when the drive is overdue: its last complete backup is reminder_days or more
old (a drive that was never backed up is not overdue). With --watch it keeps running and
prints every change as plugvaultd announces it (no polling): on a terminal a live progress
line, otherwise one plain line per change (or one JSON object per line with --json). It
follows plugvaultd across restarts; stop it with Ctrl-C.

Examples:
  plugvault status
  plugvault status blue --watch
  plugvault status --json | jq '.drives[] | {name, state, last_backup}'`,
			flags: func(fs *flag.FlagSet, o *opts) {
				driveFlag(fs, o)
				fs.BoolVar(&o.watch, "watch", false, "keep running and print every change")
				fs.BoolVar(&o.watch, "w", false, "short for --watch")
			},
			run: runStatus},
		{name: "list", args: "", summary: "list the enrolled drives",
			help: `Lists the enrolled drives: name, LUKS UUID, whether present, state.

Examples:
  plugvault list
  plugvault list --json`,
			run: runList},
		{name: "backup", args: "[DRIVE] [--wait]", summary: "back up to a drive now",
			help: `Starts a backup run (unlock, mount, back up, lock) on a present, idle drive. It returns
when the run has started; with --wait it shows the progress and returns when the run ends,
with exit status 0 only if the backup succeeded.

Examples:
  plugvault backup
  plugvault backup blue --wait`,
			flags: func(fs *flag.FlagSet, o *opts) {
				driveFlag(fs, o)
				fs.BoolVar(&o.wait, "wait", false, "wait for the run to end and report how it ended")
			},
			run: runBackup},
		{name: "cancel", args: "[DRIVE]", summary: "stop a running backup",
			help: `Stops the running backup at once; the partial snapshot is resumed by the next run.
Cancelling when nothing runs is not an error.

Example:
  plugvault cancel blue`,
			flags: driveFlag, run: runSimple(api.MethodCancel)},
		{name: "eject", args: "[DRIVE] [--no-power-off]", summary: "finish, lock and power off a drive",
			help: `Cancels a running backup cleanly, unmounts, locks and powers the drive off. Returns when
the drive is safe to remove.

Example:
  plugvault eject blue`,
			flags: func(fs *flag.FlagSet, o *opts) {
				driveFlag(fs, o)
				fs.BoolVar(&o.noPowerOff, "no-power-off", false, "lock but leave the USB device powered")
			},
			run: runSimple(api.MethodEject)},
		{name: "unlock", args: "[DRIVE] [--passphrase-stdin]", summary: "unlock a drive that waits for its passphrase",
			help: `Sends the passphrase to a drive in state awaiting-passphrase (its keyfile is missing or
was rejected); the run then goes on. The passphrase is read from the terminal without echo.
With --passphrase-stdin it is read from standard input up to end of file, and exactly one
trailing newline ("\n") is removed if present; every other byte is part of the passphrase.

Examples:
  plugvault unlock blue
  printf '%s' "$PASS" | plugvault unlock blue --passphrase-stdin`,
			flags: func(fs *flag.FlagSet, o *opts) {
				driveFlag(fs, o)
				fs.BoolVar(&o.passphraseStdin, "passphrase-stdin", false, "read the passphrase from stdin (one trailing newline is removed)")
			},
			run: runUnlock},
		{name: "check-passphrase", args: "[DRIVE] [--passphrase-stdin]", summary: "check that you still know a drive's passphrase",
			help: `Tests a passphrase against the plugged-in drive without unlocking anything, so you learn
in time whether you still know it (the keyfile does the daily work). Exits 0 when it is
right and 6 when it is not; the drive's state does not change. Repeated wrong passphrases
are answered more and more slowly. The passphrase is read as for unlock.

Examples:
  plugvault check-passphrase blue
  printf '%s' "$PASS" | plugvault check-passphrase blue --passphrase-stdin --json`,
			flags: func(fs *flag.FlagSet, o *opts) {
				driveFlag(fs, o)
				fs.BoolVar(&o.passphraseStdin, "passphrase-stdin", false, "read the passphrase from stdin (one trailing newline is removed)")
			},
			run: runCheckPassphrase},
		{name: "snapshots", args: "[DRIVE]", summary: "list the snapshots on a drive",
			help: `Lists the snapshots on the drive as of its last unlock, oldest first.

Examples:
  plugvault snapshots blue
  plugvault snapshots blue --json`,
			flags: driveFlag, run: runSnapshots},
		{name: "browse", args: "[DRIVE]", summary: "mount a drive read-only and print where",
			help: `Unlocks and mounts the drive read-only and prints the directory with the snapshots, so
you can look at them with any file manager. 'plugvault eject' ends it. When the drive's
keyfile is missing, the drive asks for its passphrase: on a terminal it is asked here
(without echo), otherwise enter it in the tray's dialog or with 'plugvault unlock'; the same
holds for restore and verify. Ctrl-C cancels.

Examples:
  plugvault browse blue
  xdg-open "$(plugvault browse blue)"`,
			flags: driveFlag, run: runBrowse},
		{name: "restore", args: "[--drive DRIVE] SNAPSHOT [PATH] DESTINATION", summary: "copy files out of a snapshot",
			help: `Copies PATH (relative to the snapshot root; left out, "/" or "." = everything) out of
SNAPSHOT (a name from 'plugvault snapshots', or "latest") into the directory DESTINATION,
which must exist and be writable by you. The restore runs with your own permissions.
Existing files are kept unless --overwrite is given. Ctrl-C cancels the restore.

Examples:
  plugvault restore latest home/me/thesis.odt ~/restored
  plugvault restore -d blue 20261126T083100Z home/me/photos /tmp/photos --overwrite`,
			flags: func(fs *flag.FlagSet, o *opts) {
				driveFlag(fs, o)
				fs.BoolVar(&o.overwrite, "overwrite", false, "replace existing files at the destination")
			},
			run: runRestore},
		{name: "verify", args: "[--drive DRIVE] [SNAPSHOT]", summary: "re-read a snapshot and check it",
			help: `Re-reads a snapshot (default: the newest complete one) and compares it with its manifest.
Exits with status 1 when problems are found. Ctrl-C cancels the check.

Examples:
  plugvault verify
  plugvault verify -d blue 20261126T083100Z`,
			flags: driveFlag, run: runVerify},
		{name: "log", args: "[DRIVE] [--follow] [--since TIME] [--lines N]", summary: "print the journalctl command that shows plugvaultd's log",
			help: `plugvaultd logs to the systemd journal. This command prints the journalctl command line
that shows it (optionally only lines about DRIVE); it does not run it, because plugvault
never starts other programs. Run it yourself, or pipe it to a shell. Reading the system
journal needs membership in the adm or systemd-journal group (or sudo).

Examples:
  plugvault log
  plugvault log blue --since today | sh
  $(plugvault log --follow)`,
			flags: func(fs *flag.FlagSet, o *opts) {
				fs.BoolVar(&o.follow, "follow", false, "follow new entries")
				fs.BoolVar(&o.follow, "f", false, "short for --follow")
				fs.StringVar(&o.since, "since", "", "show entries since `TIME` (journalctl syntax: today, -1h, 2026-11-26)")
				fs.IntVar(&o.lines, "lines", 0, "show only the last `N` entries")
				fs.IntVar(&o.lines, "n", 0, "short for --lines")
			},
			run: runLog, local: true},
		{name: "enroll", args: "DEVICE [--name NAME] [--filesystem btrfs|ext4] [--yes]", summary: "format a USB stick as a new backup drive",
			help: `DESTROYS everything on DEVICE (a whole removable USB disk such as /dev/sdb) and sets it up
as a backup drive: LUKS2 with your passphrase (argon2id) plus a keyfile slot whose random key
stays on this machine (/etc/plugvault/keys, root only), a filesystem inside, and an entry in
/etc/plugvault/config.toml. Desktop automounters are told to leave the drive alone.

plugvault first shows what is on the disk (model, serial, size, partitions, labels) and asks
you to type the device name to confirm; --yes skips that, for scripts. The passphrase is
asked twice on the terminal, or read once from stdin with --passphrase-stdin (one trailing
newline removed). Needs administrator authentication (polkit).

--header-backup FILE also saves a LUKS header backup of the new drive to FILE, a new file
that plugvault creates as you (mode 0600) before anything is formatted; an existing file or a
symlink is refused. With the backup, a drive whose header got damaged can be repaired
(cryptsetup luksHeaderRestore); keep it as safe as the drive.

Examples:
  plugvault enroll /dev/sdb --name blue
  plugvault enroll /dev/sdb --name blue --header-backup ~/blue.luksheader
  plugvault enroll /dev/disk/by-id/usb-SanDisk_Ultra_4C53-0:0 --filesystem ext4
  printf '%s' "$PASS" | plugvault enroll /dev/sdb --name blue --yes --passphrase-stdin`,
			flags: func(fs *flag.FlagSet, o *opts) {
				fs.StringVar(&o.name, "name", "", "the drive's `NAME` (default: the label)")
				fs.StringVar(&o.label, "label", "", "the filesystem `LABEL` (default: plugvault)")
				fs.StringVar(&o.filesystem, "filesystem", "", "the `FILESYSTEM`: btrfs (default) or ext4")
				fs.StringVar(&o.headerBackup, "header-backup", "", "also write a LUKS header backup to this new `FILE` (yours, mode 0600)")
				fs.BoolVar(&o.yes, "yes", false, "do not ask for confirmation (scripts)")
				fs.BoolVar(&o.passphraseStdin, "passphrase-stdin", false, "read the passphrase from stdin (one trailing newline is removed)")
			},
			run: runEnroll},
		{name: "adopt", args: "DEVICE (--key-file FILE | --passphrase) [--name NAME]", summary: "register a LUKS stick you prepared yourself",
			help: `Registers a LUKS1/LUKS2 device that you prepared by hand (for example with
'cryptsetup luksFormat' and 'cryptsetup luksAddKey'), without formatting it. Give its keyfile
with --key-file (read with your permissions and sent to plugvaultd, which checks that it opens
the drive and keeps a root-only copy), or --passphrase to adopt it with a passphrase only.

A keyfile may be up to 8 MiB (cryptsetup's own limit). A keyfile slot made with cryptsetup's
defaults uses argon2id, which costs seconds and up to 1 GiB of memory at every plug, so when
the keyfile's slot uses argon2 plugvaultd adds a fast keyfile slot of its own (a random key,
PBKDF2 with 1000 iterations) and keeps that key; your keyfile and its slot stay as they are.
--keep-slot never adds one. With --passphrase, --add-keyfile-slot adds a keyfile slot so the
drive unlocks without the passphrase; on a terminal you are asked.

Examples:
  plugvault adopt /dev/sdb1 --key-file ~/stick.key --name blue
  plugvault adopt /dev/sdc --passphrase --add-keyfile-slot`,
			flags: func(fs *flag.FlagSet, o *opts) {
				fs.StringVar(&o.name, "name", "", "the drive's `NAME`")
				fs.StringVar(&o.keyFile, "key-file", "", "the keyfile that opens the drive (`FILE`; \"-\" reads stdin to end of file, byte-exact)")
				fs.BoolVar(&o.passphrase, "passphrase", false, "adopt with a passphrase instead of a keyfile")
				fs.BoolVar(&o.passphraseStdin, "passphrase-stdin", false, "with --passphrase: read it from stdin (one trailing newline is removed)")
				fs.BoolVar(&o.addKeyfileSlot, "add-keyfile-slot", false, "with --passphrase: add a keyfile slot (a keyfile's slow slot gets one anyway)")
				fs.BoolVar(&o.keepSlot, "keep-slot", false, "never add a keyfile slot")
			},
			run: runAdopt},
		{name: "forget", args: "[DRIVE] [--remove-keyslot] [--yes]", summary: "unregister a drive",
			help: `Unregisters the drive: removes it from the configuration and deletes its keyfile and
udev rule. The data on the drive is not touched, and its passphrase still opens it. With
--remove-keyslot the keyfile's slot is also removed from the drive's LUKS header (the drive
must be plugged in). Asks for confirmation on a terminal; --yes skips it.

Examples:
  plugvault forget blue
  plugvault forget blue --remove-keyslot --yes`,
			flags: func(fs *flag.FlagSet, o *opts) {
				driveFlag(fs, o)
				fs.BoolVar(&o.removeKeyslot, "remove-keyslot", false, "also remove the keyfile slot from the drive")
				fs.BoolVar(&o.yes, "yes", false, "do not ask for confirmation (scripts)")
			},
			run: runForget},
		{name: "keys", args: "seal", summary: "seal the drives' keyfiles to this machine",
			help: `"keys seal" encrypts every plain keyfile in /etc/plugvault/keys with systemd-creds: with
the machine's host key (/var/lib/systemd/credential.secret), and with its TPM2 as well
where there is one. plugvaultd decrypts a key only when its drive is plugged in, so a copy of
/etc (a backup of it, a stolen config) no longer opens the drives; with a TPM2, neither does a
copy of the whole disk. Enroll and adopt seal new keys already; this converts keys written
before. Keys sealed already, drives without a keyfile and keyfiles configured outside
/etc/plugvault/keys are left alone. A sealed key opens the drive on this machine only: keep
each drive's passphrase.

Examples:
  plugvault keys seal
  plugvault keys seal --json`,
			run: runKeys},
		{name: "completion", args: "bash", summary: "print a shell completion script",
			help: `Prints a completion script. For bash:

  plugvault completion bash > ~/.local/share/bash-completion/completions/plugvault
  source <(plugvault completion bash)`,
			run: runCompletion, local: true},
		{name: "version", args: "", summary: "print the versions of plugvault and plugvaultd",
			run: runVersion, local: true},
		{name: "help", args: "[COMMAND|exit-codes|json|drive]", summary: "show help",
			run: func(_ context.Context, a *app, args []string) error { return a.printHelp(args) }, local: true},
		// __drives lists drive names for shell completion.
		{name: "__drives", run: runCompleteDrives},
	}
}

// driveArg takes DRIVE from --drive or the only positional argument.
func (a *app) driveArg(args []string, maxPos int) (string, []string, error) {
	if len(args) > maxPos {
		return "", nil, usagef("too many arguments: %s", strings.Join(args[maxPos:], " "))
	}
	if a.o.drive != "" {
		return a.o.drive, args, nil
	}
	if maxPos == 1 && len(args) == 1 {
		return args[0], nil, nil
	}
	return "", args, nil
}

// driveFromArgs resolves the drive named by --drive or the only positional argument.
func (a *app) driveFromArgs(ctx context.Context, args []string) (drive, error) {
	arg, _, err := a.driveArg(args, 1)
	if err != nil {
		return drive{}, err
	}
	return a.resolveDrive(ctx, arg)
}
