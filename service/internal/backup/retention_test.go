package backup

import (
	"reflect"
	"testing"
	"time"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/config"
)

func TestPlanRetention(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) string { return now.Add(-d).Format(api.SnapshotLayout) }
	h, day := time.Hour, 24*time.Hour
	def := config.Retention{}
	cases := []struct {
		name  string
		snaps []string
		r     config.Retention
		del   []string
	}{
		{"empty", nil, def, nil},
		{"only one, very old", []string{at(400 * day)}, def, nil},
		{"everything within 24h kept", []string{at(1 * h), at(2 * h), at(23 * h)}, def, nil},
		{"one per day after 24h: newest of the day kept",
			// now-26h = Nov 25 10:00, now-27h = 09:00, now-30h = 06:00 (all Nov 25).
			[]string{at(26 * h), at(27 * h), at(30 * h), at(1 * h)}, def,
			[]string{at(30 * h), at(27 * h)}},
		{"one per week beyond 30 days",
			// Nov 26 - 40d = Oct 17 (Fri), -41d = Oct 16 (Thu): same ISO week 42; -47d = Oct 10 (week 41).
			[]string{at(40 * day), at(41 * day), at(47 * day), at(1 * h)}, def,
			[]string{at(41 * day)}},
		{"weekly limit deletes older",
			[]string{at(40 * day), at(200 * day), at(1 * h)}, config.Retention{WeeklyWeeks: 4},
			[]string{at(200 * day)}},
		{"newest is kept even when the policy would drop it",
			[]string{at(200 * day), at(201 * day)}, config.Retention{WeeklyWeeks: 1},
			[]string{at(201 * day)}},
		{"custom keep-all window: older ones of the same day as a kept one go",
			[]string{at(2 * h), at(3 * h), at(30 * time.Minute)}, config.Retention{KeepAllHours: 1},
			[]string{at(2 * h), at(3 * h)}},
		{"custom keep-all window: one per earlier day",
			// now-13h = 23:00 and -14h = 22:00 on Nov 25.
			[]string{at(13 * h), at(14 * h), at(30 * time.Minute)}, config.Retention{KeepAllHours: 1},
			[]string{at(14 * h)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := planRetention(c.snaps, now, c.r)
			want := append([]string(nil), c.del...)
			sortStrings(want)
			if len(got) == 0 && len(want) == 0 {
				return
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("deleted %v, want %v", got, want)
			}
		})
	}
}

func sortStrings(s []string) {
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
}

func TestEffectiveRetentionDefaults(t *testing.T) {
	r := effectiveRetention(config.Retention{})
	if r.KeepAllHours != 24 || r.DailyDays != 30 || r.WeeklyWeeks != 0 || r.MinFreePercent != 10 {
		t.Errorf("defaults = %+v", r)
	}
}
