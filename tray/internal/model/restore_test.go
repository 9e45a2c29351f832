package model

import (
	"strings"
	"testing"
	"time"

	"github.com/plugvault/plugvault/service/api"
)

func TestTimeline(t *testing.T) {
	snaps := []api.Snapshot{
		{Name: "a", Created: 100, Status: api.SnapshotComplete},
		{Name: "b", Created: 300, Status: api.SnapshotPartial},
		{Name: "c", Created: 200, Status: api.SnapshotComplete, Files: 1, Bytes: 2_100_000_000},
	}
	got := Timeline(snaps)
	if len(got) != 2 || got[0].Name != "c" || got[1].Name != "a" {
		t.Errorf("timeline %+v, want c then a (complete only, newest first)", got)
	}
	line := TimelineLabel(api.Snapshot{Created: time.Date(2026, 11, 26, 8, 31, 0, 0, time.UTC).Unix(), Files: 1234, Bytes: 2_100_000_000}, time.UTC)
	if !strings.HasPrefix(line, "Thu 26 Nov 2026, 08:31 · ") || !strings.Contains(line, "file") || !strings.Contains(line, "GB") {
		t.Errorf("timeline label %q", line)
	}
}

func TestOriginalPlace(t *testing.T) {
	for _, tc := range []struct {
		rel, dir, name string
		ok             bool
	}{
		{"home/alice/report.txt", "/home/alice", "report.txt", true},
		{"home", "/", "home", true},
		{"", "", "", false},
		{"/etc/passwd", "", "", false},
		{"home/../etc", "", "", false},
		{"../x", "", "", false},
		{"home/alice/", "", "", false},
	} {
		dir, name, ok := OriginalPlace(tc.rel)
		if dir != tc.dir || name != tc.name || ok != tc.ok {
			t.Errorf("OriginalPlace(%q) = %q %q %v, want %q %q %v", tc.rel, dir, name, ok, tc.dir, tc.name, tc.ok)
		}
	}
}

func TestKeepBothName(t *testing.T) {
	at := time.Date(2026, 11, 26, 8, 31, 0, 0, time.UTC)
	for name, want := range map[string]string{
		"report.txt": "report (from 26 Nov 2026 08.31).txt",
		"Photos":     "Photos (from 26 Nov 2026 08.31)",
		".bashrc":    ".bashrc (from 26 Nov 2026 08.31)",
	} {
		if got := KeepBothName(name, at); got != want {
			t.Errorf("KeepBothName(%q) = %q, want %q", name, got, want)
		}
	}
}

// TestTimelineLabelChanged: the files changed are shown when the snapshot recorded them, and
// nothing (not 0) when it did not.
func TestTimelineLabelChanged(t *testing.T) {
	at := time.Date(2026, 11, 26, 8, 31, 0, 0, time.UTC).Unix()
	for _, tc := range []struct {
		changed int64
		want    string
	}{
		{api.ChangedUnknown, ""},
		{0, " · no files changed"},
		{1, " · 1 file changed"},
		{12, " · 12 files changed"},
	} {
		base := TimelineLabel(api.Snapshot{Created: at, Files: 3, Bytes: 10, Changed: api.ChangedUnknown}, time.UTC)
		got := TimelineLabel(api.Snapshot{Created: at, Files: 3, Bytes: 10, Changed: tc.changed}, time.UTC)
		if got != base+tc.want || strings.Contains(base, "changed") {
			t.Errorf("changed %d: %q, want %q", tc.changed, got, base+tc.want)
		}
	}
}
