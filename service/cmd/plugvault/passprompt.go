package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/plugvault/plugvault/service/api"
)

// answeringPassphrase runs call (a browse, restore or verify of d) and answers the drive's
// request for its passphrase meanwhile: plugvaultd moves a drive whose keyfile cannot open it
// to awaiting-passphrase and waits for Unlock. On a terminal the passphrase is asked without
// echo, as plugvault unlock does, again after a wrong one; elsewhere the user is told once to
// answer in the tray or with plugvault unlock. Ctrl-C (ctx) while the drive waits cancels the
// drive's activity, so that the daemon stops waiting too.
func (a *app) answeringPassphrase(ctx context.Context, d drive, call func(ctx context.Context) error) error {
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	events, err := a.client.WatchDrives(wctx)
	if err != nil {
		return call(ctx)
	}
	// finished is closed once call has returned, with its error in callErr: a prompt that is
	// still open then is withdrawn (the drive may still look like it waits for a moment after
	// the Unlock that answered it).
	finished := make(chan struct{})
	var callErr error
	go func() {
		callErr = call(ctx)
		close(finished)
	}()
	term, _ := a.stdin.(*os.File)
	ask := term != nil && isTerminal(term) && !a.o.passphraseStdin
	told, waiting := false, false
	for {
		select {
		case <-finished:
			return callErr
		case <-ctx.Done():
			if waiting {
				cctx, cancel := context.WithTimeout(context.Background(), readTimeout)
				_ = a.client.Cancel(cctx, d.path, a.options(nil))
				cancel()
			}
			<-finished
			return callErr
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			st, found := statusOf(ev, d)
			if !found {
				continue
			}
			waiting = st.State == api.StateAwaitingPassphrase
			if !waiting {
				continue
			}
			if !ask {
				if !told {
					fmt.Fprintf(a.stderr, "%s: %s\nEnter the passphrase in the tray's dialog, or with: plugvault unlock %s\n", d.label(), st.StateReason, shellQuote(d.label()))
					told = true
				}
				continue
			}
			a.promptUntilUnlocked(ctx, finished, term, d)
		}
	}
}

// promptUntilUnlocked asks for d's passphrase on the terminal f and hands it to Unlock, again
// after a wrong one, for as long as d waits for it. What the drive waits for is read afresh
// before each prompt: the events that led here may be stale. It stops when the call that
// needs the passphrase has finished.
func (a *app) promptUntilUnlocked(ctx context.Context, finished <-chan struct{}, f *os.File, d drive) {
	for ctx.Err() == nil {
		select {
		case <-finished:
			return
		default:
		}
		rctx, cancel := a.readCtx(ctx)
		st, err := a.client.DriveStatus(rctx, d.path)
		cancel()
		if err != nil || st.State != api.StateAwaitingPassphrase {
			return
		}
		err = a.promptUnlock(ctx, finished, f, d, st.StateReason)
		switch {
		case err == nil || ctx.Err() != nil || errors.Is(err, api.ErrBusy):
			return
		case errors.Is(err, api.ErrBadPassphrase):
			fmt.Fprintf(a.stderr, "That passphrase does not unlock %s.\n", d.label())
		default:
			fmt.Fprintf(a.stderr, "%v\n", err)
			return
		}
	}
}

// statusOf returns d's status as ev reports it.
func statusOf(ev api.DrivesEvent, d drive) (api.DriveStatus, bool) {
	switch ev.Kind {
	case api.EventDriveChanged, api.EventDriveAdded:
		return ev.Status, ev.Drive == d.path
	case api.EventServiceUp:
		for _, e := range ev.Drives {
			if e.Path == d.path {
				return e.Status, true
			}
		}
	}
	return api.DriveStatus{}, false
}

// promptUnlock asks for d's passphrase on the terminal f and hands it to Unlock. Ctrl-C
// during the prompt, or the end of the call (finished), gives the terminal its settings back
// and returns without an Unlock.
func (a *app) promptUnlock(ctx context.Context, finished <-chan struct{}, f *os.File, d drive, reason string) error {
	fd := int(f.Fd())
	saved, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return fmt.Errorf("cannot read the terminal settings: %w", err)
	}
	type answer struct {
		pass []byte
		err  error
	}
	got := make(chan answer, 1)
	fmt.Fprintf(a.stderr, "%s\n", reason)
	go func() {
		p, err := readNoEcho(f, a.stderr, fmt.Sprintf("Passphrase for %s: ", d.label()))
		got <- answer{p, err}
	}()
	var ans answer
	select {
	case ans = <-got:
	case <-ctx.Done():
		_ = unix.IoctlSetTermios(fd, unix.TCSETS, saved)
		fmt.Fprintln(a.stderr)
		return ctx.Err()
	case <-finished:
		_ = unix.IoctlSetTermios(fd, unix.TCSETS, saved)
		fmt.Fprintln(a.stderr)
		return nil
	}
	if ans.err != nil {
		return ans.err
	}
	defer clear(ans.pass)
	if len(ans.pass) == 0 {
		return usagef("the passphrase is empty")
	}
	actx, cancel := a.actionCtx(ctx)
	defer cancel()
	return a.client.Unlock(actx, d.path, ans.pass, a.options(nil))
}
