package backup

import (
	"fmt"
	"sort"
	"time"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/config"
)

// effectiveRetention fills unset fields with the Time Machine defaults: everything for 24 h,
// one per day for 30 days, one per week beyond that forever, thin below 10% free space.
func effectiveRetention(r config.Retention) config.Retention {
	if r.KeepAllHours <= 0 {
		r.KeepAllHours = 24
	}
	if r.DailyDays <= 0 {
		r.DailyDays = 30
	}
	if r.WeeklyWeeks < 0 {
		r.WeeklyWeeks = 0
	}
	if r.MinFreePercent <= 0 {
		r.MinFreePercent = 10
	}
	return r
}

// planRetention decides which complete snapshots the policy deletes. names are snapshot names
// (any order); the newest is never deleted. Within the daily and weekly ranges the newest
// snapshot of each UTC day / ISO week is kept.
func planRetention(names []string, now time.Time, r config.Retention) (del []string) {
	r = effectiveRetention(r)
	type snap struct {
		name string
		t    time.Time
	}
	var ss []snap
	for _, n := range names {
		t, err := time.Parse(api.SnapshotLayout, n)
		if err != nil {
			continue
		}
		ss = append(ss, snap{n, t})
	}
	sort.Slice(ss, func(i, j int) bool { return ss[i].t.After(ss[j].t) }) // newest first
	keepAll := now.Add(-time.Duration(r.KeepAllHours) * time.Hour)
	daily := now.AddDate(0, 0, -r.DailyDays)
	var weeklyEnd time.Time
	if r.WeeklyWeeks > 0 {
		weeklyEnd = daily.AddDate(0, 0, -7*r.WeeklyWeeks)
	}
	seen := map[string]bool{}
	for i, s := range ss {
		var bucket string
		switch {
		case !s.t.Before(daily):
			bucket = "d" + s.t.UTC().Format("20060102")
		case weeklyEnd.IsZero() || !s.t.Before(weeklyEnd):
			y, w := s.t.UTC().ISOWeek()
			bucket = fmt.Sprintf("w%d-%d", y, w)
		}
		if i == 0 || !s.t.Before(keepAll) {
			// The newest, and everything young, is kept and fills its day.
			seen[bucket] = true
			continue
		}
		if bucket == "" || seen[bucket] {
			del = append(del, s.name)
			continue
		}
		seen[bucket] = true
	}
	sort.Strings(del)
	return del
}
