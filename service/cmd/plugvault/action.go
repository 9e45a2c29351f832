package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/plugvault/plugvault/service/api"
)

func (a *app) actionDone(d drive, action, human string) error {
	if a.o.json {
		return a.printJSON(actionDoc{Drive: string(d.path), Action: action})
	}
	a.printf("%s\n", human)
	return nil
}

func runBackup(ctx context.Context, a *app, args []string) error {
	d, err := a.driveFromArgs(ctx, args)
	if err != nil {
		return err
	}
	if a.o.wait {
		return a.backupAndWait(ctx, d)
	}
	actx, cancel := a.actionCtx(ctx)
	defer cancel()
	if err := a.client.BackupNow(actx, d.path, a.options(nil)); err != nil {
		return fmt.Errorf("cannot start a backup to %s: %w", d.label(), err)
	}
	return a.actionDone(d, "backup", fmt.Sprintf("Backup to %s started. Follow it with 'plugvault status --watch'.", d.label()))
}

// runSimple runs the verbs that take only DRIVE: cancel and eject.
func runSimple(method string) func(ctx context.Context, a *app, args []string) error {
	return func(ctx context.Context, a *app, args []string) error {
		d, err := a.driveFromArgs(ctx, args)
		if err != nil {
			return err
		}
		switch method {
		case api.MethodCancel:
			actx, cancel := a.actionCtx(ctx)
			defer cancel()
			if err := a.client.Cancel(actx, d.path, a.options(nil)); err != nil {
				return fmt.Errorf("cannot cancel the backup to %s: %w", d.label(), err)
			}
			return a.actionDone(d, "cancel", fmt.Sprintf("Backup to %s cancelled.", d.label()))
		default:
			lctx, cancel := a.longCtx(ctx)
			defer cancel()
			if err := a.client.Eject(lctx, d.path, a.options(api.Options{api.OptPowerOff: !a.o.noPowerOff})); err != nil {
				return callErr(err, "cannot eject %s", d.label())
			}
			return a.actionDone(d, "eject", fmt.Sprintf("%s is safe to remove.", d.label()))
		}
	}
}

// withPassphrase resolves the drive in args, reads its passphrase (terminal without echo, or
// --passphrase-stdin) and hands both to call with an action's timeout; the passphrase is
// zeroed afterwards.
func withPassphrase(ctx context.Context, a *app, args []string, call func(ctx context.Context, d drive, pass []byte) error) error {
	d, err := a.driveFromArgs(ctx, args)
	if err != nil {
		return err
	}
	pass, err := a.readPassphrase(fmt.Sprintf("Passphrase for %s: ", d.label()), false)
	if err != nil {
		return err
	}
	defer clear(pass)
	actx, cancel := a.actionCtx(ctx)
	defer cancel()
	return call(actx, d, pass)
}

func runUnlock(ctx context.Context, a *app, args []string) error {
	return withPassphrase(ctx, a, args, func(ctx context.Context, d drive, pass []byte) error {
		if err := a.client.Unlock(ctx, d.path, pass, a.options(nil)); err != nil {
			return callErr(err, "cannot unlock %s", d.label())
		}
		return a.actionDone(d, "unlock", fmt.Sprintf("%s unlocked; the backup goes on.", d.label()))
	})
}

func runCheckPassphrase(ctx context.Context, a *app, args []string) error {
	return withPassphrase(ctx, a, args, func(ctx context.Context, d drive, pass []byte) error {
		err := a.client.CheckPassphrase(ctx, d.path, pass, a.options(nil))
		if errors.Is(err, api.ErrBadPassphrase) {
			return fmt.Errorf("that is not the passphrase of %s; its keyfile still unlocks it, but consider enrolling a new passphrase while you still can: %w", d.label(), err)
		}
		if err != nil {
			return callErr(err, "cannot check the passphrase of %s", d.label())
		}
		if a.o.json {
			return a.printJSON(struct {
				Drive   string `json:"drive"`
				Correct bool   `json:"correct"`
			}{string(d.path), true})
		}
		a.printf("The passphrase of %s is correct.\n", d.label())
		return nil
	})
}

// actionDoc is the JSON document of the verbs that only act.
type actionDoc struct {
	Drive  string `json:"drive"`
	Action string `json:"action"`
}
