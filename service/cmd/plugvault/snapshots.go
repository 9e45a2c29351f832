package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/plugvault/plugvault/service/api"
)

func runSnapshots(ctx context.Context, a *app, args []string) error {
	d, err := a.driveFromArgs(ctx, args)
	if err != nil {
		return err
	}
	rctx, cancel := a.readCtx(ctx)
	defer cancel()
	snaps, err := a.client.ListSnapshots(rctx, d.path)
	if err != nil {
		return fmt.Errorf("cannot list the snapshots on %s: %w", d.label(), err)
	}
	if a.o.json {
		doc := snapshotsDoc{Drive: string(d.path), Snapshots: []snapshotJSON{}}
		for _, s := range snaps {
			j := snapshotJSON{Name: s.Name, Created: time.Unix(s.Created, 0).UTC().Format(time.RFC3339),
				CreatedUnix: s.Created, Files: s.Files, Bytes: s.Bytes, Status: s.Status}
			if s.Changed >= 0 {
				j.Changed = &s.Changed
			}
			doc.Snapshots = append(doc.Snapshots, j)
		}
		return a.printJSON(doc)
	}
	if len(snaps) == 0 {
		a.printf("No snapshots on %s (as of its last unlock).\n", d.label())
		return nil
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SNAPSHOT\tCREATED\tFILES\tCHANGED\tSIZE\tSTATUS")
	for _, s := range snaps {
		changed := "-" // not recorded
		if s.Changed >= 0 {
			changed = fmt.Sprint(s.Changed)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", s.Name, time.Unix(s.Created, 0).Local().Format("2006-01-02 15:04"), s.Files, changed,
			api.FormatBytes(s.Bytes), s.Status)
	}
	return tw.Flush()
}

func runBrowse(ctx context.Context, a *app, args []string) error {
	d, err := a.driveFromArgs(ctx, args)
	if err != nil {
		return err
	}
	var path string
	err = a.answeringPassphrase(ctx, d, func(ctx context.Context) error {
		lctx, cancel := a.longCtx(ctx)
		defer cancel()
		var err error
		path, err = a.client.Browse(lctx, d.path, a.options(nil))
		return err
	})
	if err != nil {
		return callErr(err, "cannot browse %s", d.label())
	}
	if a.o.json {
		return a.printJSON(struct {
			Drive string `json:"drive"`
			Path  string `json:"path"`
		}{string(d.path), path})
	}
	a.printf("%s\n", path)
	return nil
}

// latestSnapshot resolves "latest" to the newest complete snapshot.
func (a *app) latestSnapshot(ctx context.Context, d drive) (string, error) {
	rctx, cancel := a.readCtx(ctx)
	defer cancel()
	snaps, err := a.client.ListSnapshots(rctx, d.path)
	if err != nil {
		return "", fmt.Errorf("cannot list the snapshots on %s: %w", d.label(), err)
	}
	for i := len(snaps) - 1; i >= 0; i-- {
		if snaps[i].Status == api.SnapshotComplete {
			return snaps[i].Name, nil
		}
	}
	return "", fmt.Errorf("cannot find a complete snapshot on %s: %w", d.label(), api.ErrNotFound)
}

// snapshotJSON is the stable JSON shape of a snapshot.
type snapshotJSON struct {
	Name        string `json:"name"`
	Created     string `json:"created"`
	CreatedUnix int64  `json:"created_unix"`
	Files       uint64 `json:"files"`
	Bytes       uint64 `json:"bytes"`
	Status      string `json:"status"`
	// Changed is how many files the snapshot added, changed or removed since the one before
	// it; null when the snapshot did not record it.
	Changed *int64 `json:"changed"`
}

type snapshotsDoc struct {
	Drive     string         `json:"drive"`
	Snapshots []snapshotJSON `json:"snapshots"`
}
