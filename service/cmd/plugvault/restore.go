package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

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
	lctx, cancel := a.longCtx(ctx)
	defer cancel()
	if err := a.client.Restore(lctx, d.path, snap, path, dest, a.options(api.Options{api.OptOverwrite: a.o.overwrite})); err != nil {
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
	lctx, cancel := a.longCtx(ctx)
	defer cancel()
	checked, problems, err := a.client.Verify(lctx, d.path, snap, a.options(nil))
	if err != nil {
		return callErr(err, "cannot verify %s", d.label())
	}
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
