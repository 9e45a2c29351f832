package model

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/plugvault/plugvault/service/api"
)

// DriveName is how the tray names a drive to the user: its configured name, else its
// filesystem label, else its model, else the start of its LUKS UUID.
func DriveName(st api.DriveStatus) string {
	for _, s := range []string{st.Name, st.Label, strings.TrimSpace(st.Vendor + " " + st.Model)} {
		if s = strings.TrimSpace(s); s != "" {
			return s
		}
	}
	if u := ShortUUID(st.LuksUUID); u != "" {
		return "drive " + u
	}
	return "backup drive"
}

// ShortUUID returns the first block of a UUID (8 hex digits), enough to tell drives apart.
func ShortUUID(uuid string) string {
	if i := strings.IndexByte(uuid, '-'); i > 0 {
		return uuid[:i]
	}
	if len(uuid) > 8 {
		return uuid[:8]
	}
	return uuid
}

func plural(n int64, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return fmt.Sprintf("%d %ss", n, unit)
}

// percent formats a progress fraction; it never shows 100% before the end.
func percent(p float64) string {
	if math.IsNaN(p) || p < 0 {
		p = 0
	}
	v := int(math.Floor(p * 100))
	if v > 100 {
		v = 100
	}
	return fmt.Sprintf("%d%%", v)
}

// StatusLine is the first menu line of a drive and its line in the tooltip. The daemon's
// StateReason says what the drive is doing, with the progress of a backup or the age of the
// last backup after it: "Blue stick: Backing up 1,234 of 5,678 files · 42% · 1.2 of 2.9 GB ·
// 3 min left", "Blue stick: Plugged in · Last backup 2 hours ago". A state without a reason
// is named by the tray: "Blue stick: Safe to remove".
func StatusLine(now time.Time, st api.DriveStatus) string {
	name := DriveName(st)
	if st.StateReason != "" {
		parts := []string{name + ": " + shorten(st.StateReason, 80)}
		switch st.State {
		case api.StateAbsent, api.StatePresent:
			parts = append(parts, lastBackup(now, st))
		case api.StateBackingUp:
			parts = append(parts, progress(st)...)
		}
		return strings.Join(parts, " · ")
	}
	switch st.State {
	case api.StatePresent:
		return name + ": Plugged in · " + lastBackup(now, st)
	case api.StateUnlocking:
		return "Unlocking " + name + "…"
	case api.StateAwaitingPassphrase:
		return name + ": Passphrase needed"
	case api.StateMounting:
		return "Preparing " + name + "…"
	case api.StateBackingUp:
		if st.BytesTotal == 0 {
			return "Backing up to " + name + ": counting files…"
		}
		return "Backing up to " + name + ": " + strings.Join(progress(st), " · ")
	case api.StateFinishing:
		return "Backing up to " + name + ": finishing…"
	case api.StateUnmounting:
		return "Unmounting " + name + "…"
	case api.StateLocking:
		return "Locking " + name + "…"
	case api.StateSafeToRemove:
		return name + ": Safe to remove"
	case api.StateFailed:
		return name + ": Backup failed"
	}
	return name + ": " + lastBackup(now, st)
}

// progress is how far a backup got: percent, bytes and time left, once the total is known.
func progress(st api.DriveStatus) []string {
	if st.BytesTotal == 0 {
		return nil
	}
	parts := []string{percent(st.Progress), api.FormatBytesPair(st.BytesDone, st.BytesTotal)}
	if eta := api.FormatTimeLeft(st.EtaSeconds); eta != "" {
		parts = append(parts, eta)
	}
	return parts
}

func lastBackup(now time.Time, st api.DriveStatus) string {
	if st.LastBackup == 0 {
		return "Never backed up"
	}
	return "Last backup " + api.FormatAge(now, time.Unix(int64(st.LastBackup), 0))
}

func shorten(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
