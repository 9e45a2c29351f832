package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
)

func runRestore(ctx context.Context, a *app, args []string) error {
	var snap, path, dest string
	switch len(args) {
	case 2:
		snap, dest = args[0], args[1]
	case 3:
		snap, path, dest = args[0], args[1], args[2]
	default:
		return usagef("restore needs SNAPSHOT [PATH] DESTINATION")
	}
	path = strings.TrimLeft(filepath.Clean("/"+path), "/")
	if path == "." {
		path = ""
	}
	dest, err := filepath.Abs(dest)
	if err != nil {
		return fmt.Errorf("cannot resolve %s: %w", dest, err)
	}
	d, err := a.resolveDrive(ctx, a.o.drive)
	if err != nil {
		return err
	}
	if snap == "latest" {
		if snap, err = a.latestSnapshot(ctx, d); err != nil {
			return err
		}
	}
	err = a.answeringPassphrase(ctx, d, func(ctx context.Context) error {
		_, err := a.runJob(ctx, "restore", func(ctx context.Context) (dbus.ObjectPath, error) {
			return a.client.StartRestore(ctx, d.path, snap, path, dest, a.options(api.Options{api.OptOverwrite: a.o.overwrite}))
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("cannot restore from %s: %w", d.label(), err)
	}
	if a.o.json {
		return a.printJSON(struct {
			Drive       string `json:"drive"`
			Snapshot    string `json:"snapshot"`
			Path        string `json:"path"`
			Destination string `json:"destination"`
		}{string(d.path), snap, path, dest})
	}
	what := path
	if what == "" {
		what = "everything"
	}
	a.printf("Restored %s from %s (%s) into %s.\n", what, snap, d.label(), dest)
	return nil
}

func runVerify(ctx context.Context, a *app, args []string) error {
	if len(args) > 1 {
		return usagef("verify takes at most one SNAPSHOT")
	}
	snap := ""
	if len(args) == 1 && args[0] != "latest" {
		snap = args[0]
	}
	d, err := a.resolveDrive(ctx, a.o.drive)
	if err != nil {
		return err
	}
	var res api.JobResult
	err = a.answeringPassphrase(ctx, d, func(ctx context.Context) error {
		var err error
		res, err = a.runJob(ctx, "verification", func(ctx context.Context) (dbus.ObjectPath, error) {
			return a.client.StartVerify(ctx, d.path, snap, a.options(nil))
		})
		return err
	})
	if err != nil {
		return callErr(err, "cannot verify %s", d.label())
	}
	checked, problems := res.Checked, res.Problems
	if problems == nil {
		problems = []string{}
	}
	if a.o.json {
		if err := a.printJSON(struct {
			Drive    string   `json:"drive"`
			Snapshot string   `json:"snapshot"`
			Checked  uint64   `json:"checked"`
			Problems []string `json:"problems"`
		}{string(d.path), snap, checked, problems}); err != nil {
			return err
		}
	} else {
		for _, p := range problems {
			a.printf("%s\n", p)
		}
		a.printf("%d entries checked, %d problems.\n", checked, len(problems))
	}
	if len(problems) > 0 {
		return fmt.Errorf("snapshot on %s has %d problems: %w", d.label(), len(problems), errProblems)
	}
	return nil
}

// runJob starts a restore or verify job with start and waits until it completes; on a
// terminal it shows the job's progress on stderr meanwhile (when plugvaultd reports it).
// Ctrl-C (ctx) cancels the job: the CLI calls its Cancel, and its leaving the bus cancels it
// as well.
func (a *app) runJob(ctx context.Context, what string, start func(context.Context) (dbus.ObjectPath, error)) (api.JobResult, error) {
	var progress func(api.JobStatus)
	shown := false
	if !a.o.json && isTerminal(a.stderr) {
		progress = func(st api.JobStatus) {
			if st.BytesTotal == 0 {
				return
			}
			fmt.Fprintf(a.stderr, "\r\033[K%s: %.0f%%, %s", what, st.Progress*100, api.FormatBytesPair(st.BytesDone, st.BytesTotal))
			shown = true
		}
	}
	res, err := a.client.RunJob(ctx, start, progress)
	if shown {
		fmt.Fprint(a.stderr, "\r\033[K")
	}
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return res, &interruptedError{what: what}
	}
	return res, err
}

// interruptedError ends a job that Ctrl-C stopped (exit code 130, as context.Canceled).
type interruptedError struct{ what string }

func (e *interruptedError) Error() string {
	return "interrupted; the " + e.what + " is cancelled"
}

func (e *interruptedError) Is(target error) bool { return target == context.Canceled }
