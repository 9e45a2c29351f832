package api_test

import (
	"testing"
	"time"

	"github.com/plugvault/plugvault/service/api"
)

func TestOverdue(t *testing.T) {
	backup := time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	for _, tc := range []struct {
		name string
		last uint64
		days uint32
		now  time.Time
		want bool
	}{
		{"never backed up", 0, 7, backup.Add(100 * day), false},
		{"reminders off", uint64(backup.Unix()), 0, backup.Add(100 * day), false},
		{"fresh", uint64(backup.Unix()), 7, backup.Add(day), false},
		{"a second before", uint64(backup.Unix()), 7, backup.Add(7*day - time.Second), false},
		{"exactly reminderDays", uint64(backup.Unix()), 7, backup.Add(7 * day), true},
		{"long ago", uint64(backup.Unix()), 7, backup.Add(30 * day), true},
		{"clock before the backup", uint64(backup.Unix()), 7, backup.Add(-day), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := api.DriveStatus{LastBackup: tc.last}
			if got := api.Overdue(st, tc.days, tc.now); got != tc.want {
				t.Errorf("Overdue = %v, want %v", got, tc.want)
			}
			at, ok := api.OverdueAt(st, tc.days)
			if ok != (tc.last != 0 && tc.days != 0) {
				t.Errorf("OverdueAt ok = %v", ok)
			}
			if ok && !at.Equal(time.Unix(int64(tc.last), 0).Add(time.Duration(tc.days)*day)) {
				t.Errorf("OverdueAt = %v", at)
			}
		})
	}
}

func TestFormatBytes(t *testing.T) {
	for n, want := range map[uint64]string{
		0:                    "0 bytes",
		1:                    "1 byte",
		999:                  "999 bytes",
		1000:                 "1.0 kB",
		1500:                 "1.5 kB",
		999_949:              "999.9 kB",
		999_950:              "1.0 MB",
		1 << 20:              "1.0 MB",
		1_234_567_890:        "1.2 GB",
		2_900_000_000:        "2.9 GB",
		999_960_000_000:      "1.0 TB",
		4_000_000_000_000:    "4.0 TB",
		18446744073709551615: "18446744.1 TB",
	} {
		if got := api.FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestFormatBytesPair(t *testing.T) {
	for _, tc := range []struct {
		done, total uint64
		want        string
	}{
		{0, 0, "0 of 0 bytes"},
		{10, 999, "10 of 999 bytes"},
		{1_200_000_000, 2_900_000_000, "1.2 of 2.9 GB"},
		{500, 2_000_000, "0.0 of 2.0 MB"},
	} {
		if got := api.FormatBytesPair(tc.done, tc.total); got != tc.want {
			t.Errorf("FormatBytesPair(%d, %d) = %q, want %q", tc.done, tc.total, got, tc.want)
		}
	}
}

// The age reads coarsely, and NextAgeChange is the first moment it reads differently.
func TestFormatAge(t *testing.T) {
	t0 := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		ago  time.Duration
		want string
	}{{30 * time.Second, "just now"}, {time.Minute, "1 minute ago"}, {59 * time.Minute, "59 minutes ago"},
		{time.Hour, "1 hour ago"}, {2 * time.Hour, "2 hours ago"}, {30 * time.Hour, "1 day ago"}, {49 * time.Hour, "2 days ago"}} {
		then := t0.Add(-c.ago)
		got := api.FormatAge(t0, then)
		if got != c.want {
			t.Errorf("FormatAge(-%v) = %q, want %q", c.ago, got, c.want)
		}
		next := api.NextAgeChange(t0, then)
		if !next.After(t0) {
			t.Errorf("NextAgeChange(-%v) = %v, not after now", c.ago, next)
			continue
		}
		if api.FormatAge(next.Add(-time.Nanosecond), then) != got || api.FormatAge(next, then) == got {
			t.Errorf("-%v: the age reads %q until %v, then %q", c.ago, got, next, api.FormatAge(next, then))
		}
	}
}

func TestFormatTimeLeft(t *testing.T) {
	for _, c := range []struct {
		s    int64
		want string
	}{{-1, ""}, {0, "less than a minute left"}, {10, "less than a minute left"}, {89, "1 min left"}, {180, "3 min left"},
		{3569, "59 min left"}, {3599, "1 h left"}, {3600, "1 h left"}, {3900, "1 h 5 min left"}, {7170, "2 h left"}} {
		if got := api.FormatTimeLeft(c.s); got != c.want {
			t.Errorf("FormatTimeLeft(%d) = %q, want %q", c.s, got, c.want)
		}
	}
}
