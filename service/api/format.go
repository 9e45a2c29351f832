package api

import (
	"fmt"
	"time"
)

// This file holds the rules that the CLI and the tray apply to a drive's properties in the
// same way, so the two never tell the user different things.

// OverdueAt returns when a drive becomes overdue: reminderDays after its last complete backup.
// ok is false when it never does: reminders are off (reminderDays 0), or the drive was never
// backed up (a drive that has no backup yet is not overdue: there is no backup growing old).
func OverdueAt(st DriveStatus, reminderDays uint32) (at time.Time, ok bool) {
	if reminderDays == 0 || st.LastBackup == 0 {
		return time.Time{}, false
	}
	return time.Unix(int64(st.LastBackup), 0).Add(time.Duration(reminderDays) * 24 * time.Hour), true
}

// Overdue reports whether the drive is overdue at now: its last complete backup is
// reminderDays or more old (see OverdueAt).
func Overdue(st DriveStatus, reminderDays uint32, now time.Time) bool {
	at, ok := OverdueAt(st, reminderDays)
	return ok && !now.Before(at)
}

// FormatBytes formats n with decimal units, one decimal above a thousand: "1 byte",
// "512 bytes", "1.2 GB".
func FormatBytes(n uint64) string {
	unit, div := byteUnit(n)
	switch {
	case n == 1:
		return "1 byte"
	case div == 1:
		return fmt.Sprintf("%d %s", n, unit)
	}
	return fmt.Sprintf("%.1f %s", float64(n)/div, unit)
}

// FormatBytesPair formats done and total in the unit of total: "1.2 of 2.9 GB".
func FormatBytesPair(done, total uint64) string {
	unit, div := byteUnit(total)
	if div == 1 {
		return fmt.Sprintf("%d of %d %s", done, total, unit)
	}
	return fmt.Sprintf("%.1f of %.1f %s", float64(done)/div, float64(total)/div, unit)
}

// byteUnit picks the unit n is shown in. The thresholds sit where the rounded value reaches
// 1000 of the smaller unit, so 999,960 bytes reads "1.0 MB", never "1000.0 kB".
func byteUnit(n uint64) (string, float64) {
	switch {
	case n >= 999_950_000_000:
		return "TB", 1e12
	case n >= 999_950_000:
		return "GB", 1e9
	case n >= 999_950:
		return "MB", 1e6
	case n >= 1000:
		return "kB", 1e3
	}
	return "bytes", 1
}

// FormatAge says how long ago t was, seen from now: "just now", "5 minutes ago", "2 hours
// ago", "3 days ago". The CLI and the tray both say it this way.
func FormatAge(now, t time.Time) string {
	d := now.Sub(t)
	ago := func(n int64, unit string) string {
		if n == 1 {
			return "1 " + unit + " ago"
		}
		return fmt.Sprintf("%d %ss ago", n, unit)
	}
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return ago(int64(d/time.Minute), "minute")
	case d < 24*time.Hour:
		return ago(int64(d/time.Hour), "hour")
	}
	return ago(int64(d/(24*time.Hour)), "day")
}

// NextAgeChange returns when FormatAge(·, t) next reads differently after now (a display that
// shows the age wakes then, instead of polling).
func NextAgeChange(now, t time.Time) time.Time {
	d := now.Sub(t)
	var step time.Duration
	switch {
	case d < 0:
		return t
	case d < time.Hour:
		step = time.Minute
	case d < 24*time.Hour:
		step = time.Hour
	default:
		step = 24 * time.Hour
	}
	return t.Add((d/step + 1) * step)
}

// FormatTimeLeft formats the seconds left of a backup or a job: "3 min left"; "" when unknown
// (negative). The CLI and the tray both say it this way.
func FormatTimeLeft(seconds int64) string {
	switch {
	case seconds < 0:
		return ""
	case seconds < 60:
		return "less than a minute left"
	}
	mins := (seconds + 30) / 60
	if mins < 60 {
		return fmt.Sprintf("%d min left", mins)
	}
	if h, m := mins/60, mins%60; m != 0 {
		return fmt.Sprintf("%d h %d min left", h, m)
	}
	return fmt.Sprintf("%d h left", mins/60)
}
