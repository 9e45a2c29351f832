package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/plugvault/plugvault/service/api"
)

// errNotConfirmed is returned when the user does not confirm a destructive action.
var errNotConfirmed = fmt.Errorf("not confirmed, nothing was changed: %w", api.ErrCancelled)

type driveDoc struct {
	Drive string `json:"drive"`
}

func runEnroll(ctx context.Context, a *app, args []string) error {
	if len(args) != 1 {
		return usagef("enroll needs exactly one DEVICE, for example /dev/sdb")
	}
	dev, err := a.canonicalDevice(args[0])
	if err != nil {
		return err
	}
	switch a.o.filesystem {
	case "", "btrfs", "ext4":
	default:
		return usagef("--filesystem must be btrfs or ext4, not %q", a.o.filesystem)
	}
	var headerPath string
	if a.o.headerBackup != "" {
		if headerPath, err = filepath.Abs(a.o.headerBackup); err != nil {
			return fmt.Errorf("cannot resolve %s: %w", a.o.headerBackup, err)
		}
		if err := checkNewHeaderFile(headerPath); err != nil {
			return err
		}
	}
	name := filepath.Base(dev)
	info, err := a.readDiskInfo(name)
	if err != nil {
		return err
	}
	if info.Partition {
		return usagef("%s is a partition: name the whole disk (enroll formats all of it)", dev)
	}
	fmt.Fprintf(a.stderr, "This DESTROYS everything on %s:\n%s", dev, info.describe())
	if !info.Removable && info.Bus != "usb" {
		fmt.Fprintf(a.stderr, "%s does not look like a removable USB disk: plugvaultd will refuse it.\n", dev)
	}
	if !a.o.yes {
		if a.o.passphraseStdin || !isTerminal(a.stdin) {
			return usagef("refusing to format %s without confirmation: run on a terminal or pass --yes", dev)
		}
		answer, err := a.ask(fmt.Sprintf("Type %q to format it: ", name))
		if err != nil {
			return err
		}
		if answer != name {
			return errNotConfirmed
		}
	}
	pass, err := a.readPassphrase("New passphrase for the drive: ", true)
	if err != nil {
		return err
	}
	defer clear(pass)
	o := api.Options{}
	if a.o.name != "" {
		o[api.OptName] = a.o.name
	}
	if a.o.label != "" {
		o[api.OptLabel] = a.o.label
	}
	if a.o.filesystem != "" {
		o[api.OptFilesystem] = a.o.filesystem
	}
	var hf *headerFile
	if headerPath != "" {
		o[api.OptHeaderBackup] = true
		if hf, err = createHeaderFile(headerPath); err != nil {
			return err
		}
	}
	if !a.o.json {
		fmt.Fprintf(a.stderr, "Formatting %s; this takes a minute…\n", dev)
	}
	lctx, cancel := a.longCtx(ctx)
	defer cancel()
	path, header, err := a.client.Enroll(lctx, dev, pass, a.options(o))
	if err != nil {
		if hf != nil {
			hf.discard()
		}
		return callErr(err, "cannot enroll %s", dev)
	}
	if hf != nil {
		if err := hf.commit(header); err != nil {
			// The drive is enrolled all the same; say so, and how to make the backup.
			return fmt.Errorf("%w (%s is enrolled as a backup drive all the same, %s; make a header backup with: sudo cryptsetup luksHeaderBackup %s --header-backup-file FILE)", err, dev, path, dev)
		}
		if !a.o.json {
			fmt.Fprintf(a.stderr, "The LUKS header backup is in %s; keep it somewhere safe.\n", headerPath)
		}
	}
	if a.o.json {
		return a.printJSON(driveDoc{Drive: string(path)})
	}
	a.printf("%s is enrolled as a backup drive (%s).\n", dev, path)
	if home, err := os.UserHomeDir(); err == nil && os.Getuid() != 0 {
		// plugvaultd makes the enrolling user's home the drive's source (as that user).
		a.printf("Every time you plug it in, plugvault backs up %s to it.\n", home)
		a.printf("To back up something else, edit the sources of its [[drive]] entry in /etc/plugvault/config.toml.\n")
	} else {
		a.printf("It backs up nothing yet: add sources and run_as to its [[drive]] entry in /etc/plugvault/config.toml.\n")
	}
	return nil
}

func runAdopt(ctx context.Context, a *app, args []string) error {
	if len(args) != 1 {
		return usagef("adopt needs exactly one DEVICE, for example /dev/sdb1")
	}
	if (a.o.keyFile == "") == !a.o.passphrase {
		return usagef("adopt needs either --key-file FILE or --passphrase")
	}
	if a.o.addKeyfileSlot && a.o.keepSlot {
		return usagef("--add-keyfile-slot and --keep-slot contradict each other")
	}
	if a.o.passphraseStdin && !a.o.passphrase {
		return usagef("--passphrase-stdin goes with --passphrase")
	}
	dev, err := a.canonicalDevice(args[0])
	if err != nil {
		return err
	}
	var secret []byte
	if a.o.passphrase {
		secret, err = a.readPassphrase(fmt.Sprintf("Passphrase of %s: ", dev), false)
	} else {
		secret, err = a.readKeyFile(a.o.keyFile)
	}
	if err != nil {
		return err
	}
	defer clear(secret)
	// A keyfile's slow (argon2) slot gets a fast one beside it unless --keep-slot says no;
	// plugvaultd only adds it when the keyfile's slot is slow.
	addSlot := a.o.addKeyfileSlot || (!a.o.passphrase && !a.o.keepSlot)
	if a.o.passphrase && !a.o.addKeyfileSlot && !a.o.keepSlot && isTerminal(a.stdin) && !a.o.passphraseStdin {
		answer, err := a.ask("Add a keyfile slot so the drive unlocks without the passphrase? [Y/n] ")
		if err != nil {
			return err
		}
		addSlot = answer == "" || strings.HasPrefix(strings.ToLower(answer), "y")
	}
	if addSlot && !a.o.passphrase && !a.o.json {
		fmt.Fprintf(a.stderr, "If the keyfile's slot uses argon2 (cryptsetup's default, seconds and up to 1 GiB at every plug),\n"+
			"plugvaultd adds a fast keyfile slot (PBKDF2) for itself; your keyfile and its slot stay as they are.\n")
	}
	o := api.Options{api.OptSecretIsPassphrase: a.o.passphrase, api.OptAddKeyfileSlot: addSlot}
	if a.o.name != "" {
		o[api.OptName] = a.o.name
	}
	lctx, cancel := a.longCtx(ctx)
	defer cancel()
	path, err := a.client.Adopt(lctx, dev, secret, a.options(o))
	if err != nil {
		return callErr(err, "cannot adopt %s", dev)
	}
	if a.o.json {
		return a.printJSON(driveDoc{Drive: string(path)})
	}
	a.printf("%s is registered as a backup drive (%s).\n", dev, path)
	return nil
}

// readKeyFile reads a keyfile with the user's own permissions, byte-exact ("-" is stdin).
func (a *app) readKeyFile(name string) ([]byte, error) {
	if name == "-" {
		b, err := readSecret(a.stdin)
		if err == nil && len(b) == 0 {
			err = usagef("the keyfile on stdin is empty")
		}
		return b, err
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("cannot open the keyfile: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cannot read the keyfile: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, usagef("the keyfile %s is not a regular file", name)
	}
	b, err := readSecret(f)
	if err == nil && len(b) == 0 {
		err = usagef("the keyfile %s is empty", name)
	}
	return b, err
}

func runForget(ctx context.Context, a *app, args []string) error {
	d, err := a.driveFromArgs(ctx, args)
	if err != nil {
		return err
	}
	if !a.o.yes {
		if !isTerminal(a.stdin) {
			return usagef("refusing to forget %s without confirmation: run on a terminal or pass --yes", d.label())
		}
		fmt.Fprintf(a.stderr, "Forget %s (%s)? plugvault deletes its keyfile and stops backing up to it;\n"+
			"the data on the drive stays and its passphrase still opens it.\n", d.label(), d.st.LuksUUID)
		if a.o.removeKeyslot {
			fmt.Fprintf(a.stderr, "The keyfile's slot is also removed from the drive's LUKS header.\n")
		}
		answer, err := a.ask(fmt.Sprintf("Type %q to forget it: ", d.label()))
		if err != nil {
			return err
		}
		if answer != d.label() {
			return errNotConfirmed
		}
	}
	lctx, cancel := a.longCtx(ctx)
	defer cancel()
	if err := a.client.Forget(lctx, d.path, a.options(api.Options{api.OptRemoveKeyslot: a.o.removeKeyslot})); err != nil {
		return callErr(err, "cannot forget %s", d.label())
	}
	return a.actionDone(d, "forget", fmt.Sprintf("%s is forgotten.", d.label()))
}
