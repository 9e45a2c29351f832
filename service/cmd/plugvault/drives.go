package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
)

// drive is an enrolled drive as the daemon describes it.
type drive struct {
	path dbus.ObjectPath
	st   api.DriveStatus
}

// label is how the CLI names a drive to the user.
func (d drive) label() string {
	if d.st.Name != "" {
		return d.st.Name
	}
	if d.st.LuksUUID != "" {
		return d.st.LuksUUID
	}
	return string(d.path)
}

// listDrives reads every enrolled drive and its properties.
func (a *app) listDrives(ctx context.Context) ([]drive, error) {
	ctx, cancel := a.readCtx(ctx)
	defer cancel()
	paths, err := a.client.ListDrives(ctx)
	if err != nil {
		return nil, fmt.Errorf("cannot list drives: %w", err)
	}
	drives := make([]drive, 0, len(paths))
	for _, p := range paths {
		st, err := a.client.DriveStatus(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("cannot read drive %s: %w", p, err)
		}
		drives = append(drives, drive{path: p, st: st})
	}
	return drives, nil
}

// resolveDrive picks the drive named by arg (see driveHelp), or the only enrolled drive when arg
// is empty.
func (a *app) resolveDrive(ctx context.Context, arg string) (drive, error) {
	drives, err := a.listDrives(ctx)
	if err != nil {
		return drive{}, err
	}
	return pickDrive(drives, arg)
}

func pickDrive(drives []drive, arg string) (drive, error) {
	names := func(ds []drive) string {
		s := make([]string, len(ds))
		for i, d := range ds {
			s[i] = d.label()
		}
		return strings.Join(s, ", ")
	}
	if arg == "" {
		switch len(drives) {
		case 0:
			return drive{}, fmt.Errorf("cannot pick a drive: none is enrolled (see 'plugvault help enroll'): %w", api.ErrNotFound)
		case 1:
			return drives[0], nil
		}
		return drive{}, usagef("%d drives are enrolled, name one: %s", len(drives), names(drives))
	}
	var matches []drive
	match := func(ok func(d drive) bool) bool {
		matches = matches[:0]
		for _, d := range drives {
			if ok(d) {
				matches = append(matches, d)
			}
		}
		return len(matches) > 0
	}
	switch {
	case strings.HasPrefix(arg, "/"):
		match(func(d drive) bool { return string(d.path) == arg })
	case match(func(d drive) bool { return d.st.Name == arg }):
	case match(func(d drive) bool { return strings.EqualFold(d.st.LuksUUID, arg) }):
	default:
		match(func(d drive) bool {
			return len(d.st.LuksUUID) >= len(arg) && strings.EqualFold(d.st.LuksUUID[:len(arg)], arg)
		})
	}
	switch len(matches) {
	case 0:
		if len(drives) == 0 {
			return drive{}, fmt.Errorf("cannot find drive %q: no drive is enrolled: %w", arg, api.ErrNotFound)
		}
		return drive{}, fmt.Errorf("cannot find drive %q (enrolled: %s): %w", arg, names(drives), api.ErrNotFound)
	case 1:
		return matches[0], nil
	}
	return drive{}, usagef("drive %q is ambiguous: it matches %s", arg, names(matches))
}

// driveJSON is the stable JSON shape of a drive (documented in jsonHelp).
type driveJSON struct {
	Path                 string  `json:"path"`
	Name                 string  `json:"name"`
	LuksUUID             string  `json:"luks_uuid"`
	Label                string  `json:"label"`
	Vendor               string  `json:"vendor"`
	Model                string  `json:"model"`
	Serial               string  `json:"serial"`
	Present              bool    `json:"present"`
	State                string  `json:"state"`
	StateReason          string  `json:"state_reason"`
	Running              bool    `json:"running"`
	Progress             float64 `json:"progress"`
	FilesDone            uint64  `json:"files_done"`
	FilesTotal           uint64  `json:"files_total"`
	BytesDone            uint64  `json:"bytes_done"`
	BytesTotal           uint64  `json:"bytes_total"`
	Rate                 float64 `json:"rate"`
	EtaSeconds           int64   `json:"eta_seconds"`
	LastBackup           *string `json:"last_backup"`
	LastBackupAgeSeconds *int64  `json:"last_backup_age_seconds"`
	LastResult           string  `json:"last_result"`
	SnapshotCount        uint32  `json:"snapshot_count"`
	Overdue              bool    `json:"overdue"`
}

func toDriveJSON(d drive, now time.Time, reminderDays uint32) driveJSON {
	j := driveJSON{
		Path: string(d.path), Name: d.st.Name, LuksUUID: d.st.LuksUUID, Label: d.st.Label,
		Vendor: d.st.Vendor, Model: d.st.Model, Serial: d.st.Serial, Present: d.st.Present,
		State: string(d.st.State), StateReason: d.st.StateReason, Running: d.st.State.Running(),
		Progress: d.st.Progress, FilesDone: d.st.FilesDone, FilesTotal: d.st.FilesTotal,
		BytesDone: d.st.BytesDone, BytesTotal: d.st.BytesTotal, Rate: d.st.Rate,
		EtaSeconds: d.st.EtaSeconds, LastResult: string(d.st.LastResult),
		SnapshotCount: d.st.SnapshotCount, Overdue: api.Overdue(d.st, reminderDays, now),
	}
	if d.st.LastBackup > 0 {
		t := time.Unix(int64(d.st.LastBackup), 0).UTC()
		s := t.Format(time.RFC3339)
		age := int64(now.Sub(t) / time.Second)
		j.LastBackup, j.LastBackupAgeSeconds = &s, &age
	}
	return j
}

// progressText is the live part of a drive's status: "42%, 1234/5678 files, 1.2 of 3.4 GB,
// 12.0 MB/s, 3 min left".
func progressText(st api.DriveStatus) string {
	var parts []string
	if st.FilesTotal > 0 {
		parts = append(parts, fmt.Sprintf("%d%%", int(st.Progress*100)))
		parts = append(parts, fmt.Sprintf("%d/%d files", st.FilesDone, st.FilesTotal))
	} else {
		parts = append(parts, fmt.Sprintf("%d files", st.FilesDone))
	}
	if st.BytesTotal > 0 {
		parts = append(parts, api.FormatBytesPair(st.BytesDone, st.BytesTotal))
	} else {
		parts = append(parts, api.FormatBytes(st.BytesDone))
	}
	if st.Rate > 0 {
		parts = append(parts, api.FormatBytes(uint64(st.Rate))+"/s")
	}
	if left := api.FormatTimeLeft(st.EtaSeconds); left != "" && st.State == api.StateBackingUp {
		parts = append(parts, left)
	}
	return strings.Join(parts, ", ")
}

// statusLine is one line about a drive: the daemon's StateReason, with the progress of a run
// ("blue: Backing up 12 of 20 files (42%, 12/20 files, …)"); the state where there is no reason
// ("blue: backing-up 42%, …", "blue: absent").
func statusLine(d drive) string {
	progress := d.st.State == api.StateBackingUp || d.st.State == api.StateFinishing
	switch {
	case d.st.StateReason == "" && progress:
		return fmt.Sprintf("%s: %s %s", d.label(), d.st.State, progressText(d.st))
	case d.st.StateReason == "":
		return fmt.Sprintf("%s: %s", d.label(), d.st.State)
	case progress:
		return fmt.Sprintf("%s: %s (%s)", d.label(), d.st.StateReason, progressText(d.st))
	}
	return fmt.Sprintf("%s: %s", d.label(), d.st.StateReason)
}

// lastBackupText says when the last complete backup was and how the last run ended.
func lastBackupText(st api.DriveStatus, now time.Time) string {
	s := "never backed up"
	if st.LastBackup > 0 {
		t := time.Unix(int64(st.LastBackup), 0)
		s = "last backup " + api.FormatAge(now, t) + " (" + t.Local().Format("2006-01-02 15:04") + ")"
	}
	if st.LastResult != api.ResultNone {
		s += ", last run " + string(st.LastResult)
	}
	return s + fmt.Sprintf(", %d snapshots", st.SnapshotCount)
}

// callErr says what the CLI was doing when plugvaultd answered err, unless the daemon's message
// already says what could not be done ("cannot …"): no "cannot x: cannot y" chains. errors.Is
// sees the same sentinel either way.
func callErr(err error, format string, args ...any) error {
	if strings.HasPrefix(err.Error(), "cannot ") {
		return err
	}
	return fmt.Errorf(format+": %w", append(args, err)...)
}
