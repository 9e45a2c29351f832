package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/plugvault/plugvault/service/api"
)

func runStatus(ctx context.Context, a *app, args []string) error {
	arg, _, err := a.driveArg(args, 1)
	if err != nil {
		return err
	}
	if a.o.watch {
		return a.watchStatus(ctx, arg)
	}
	drives, err := a.listDrives(ctx)
	if err != nil {
		return err
	}
	if arg != "" {
		d, err := pickDrive(drives, arg)
		if err != nil {
			return err
		}
		drives = []drive{d}
	}
	rctx, cancel := a.readCtx(ctx)
	defer cancel()
	days, err := a.client.ReminderDays(rctx)
	if err != nil {
		return fmt.Errorf("cannot read plugvaultd's settings: %w", err)
	}
	now := a.now()
	if a.o.json {
		version, _ := a.client.Version(rctx)
		return a.printJSON(statusJSON(drives, version, days, now))
	}
	if len(drives) == 0 {
		a.printf("No drive is enrolled. Set one up with 'plugvault enroll DEVICE' (see 'plugvault help enroll').\n")
		return nil
	}
	for _, d := range drives {
		a.printf("%s\n", statusLine(d))
		if d.st.State == api.StateAwaitingPassphrase {
			a.printf("    enter the passphrase with: plugvault unlock %s\n", shellQuote(d.label()))
		}
		a.printf("    %s\n", lastBackupText(d.st, now))
		if api.Overdue(d.st, days, now) {
			a.printf("    reminder: no backup to this drive for %d day(s) or more\n", days)
		}
	}
	return nil
}

func statusJSON(drives []drive, version string, days uint32, now time.Time) statusDoc {
	doc := statusDoc{Version: version, ReminderDays: days, Drives: []driveJSON{}}
	for _, d := range drives {
		doc.Drives = append(doc.Drives, toDriveJSON(d, now, days))
	}
	return doc
}

func runList(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 {
		return usagef("list takes no arguments")
	}
	drives, err := a.listDrives(ctx)
	if err != nil {
		return err
	}
	if a.o.json {
		rctx, cancel := a.readCtx(ctx)
		defer cancel()
		days, err := a.client.ReminderDays(rctx)
		if err != nil {
			return fmt.Errorf("cannot read plugvaultd's settings: %w", err)
		}
		version, _ := a.client.Version(rctx)
		return a.printJSON(statusJSON(drives, version, days, a.now()))
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tLUKS UUID\tPRESENT\tSTATE")
	for _, d := range drives {
		present := "no"
		if d.st.Present {
			present = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", d.st.Name, d.st.LuksUUID, present, d.st.State)
	}
	return tw.Flush()
}

func runCompleteDrives(ctx context.Context, a *app, args []string) error {
	drives, err := a.listDrives(ctx)
	if err != nil {
		return err
	}
	for _, d := range drives {
		if d.st.Name != "" {
			a.printf("%s\n", d.st.Name)
		} else {
			a.printf("%s\n", d.st.LuksUUID)
		}
	}
	return nil
}

// statusDoc is the JSON document of status and list.
type statusDoc struct {
	Version      string      `json:"version"`
	ReminderDays uint32      `json:"reminder_days"`
	Drives       []driveJSON `json:"drives"`
}
