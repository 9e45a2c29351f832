package api_test

import (
	"testing"
	"time"

	"github.com/plugvault/plugvault/service/api"
)

func TestIsSnapshotName(t *testing.T) {
	for _, at := range []time.Time{time.Unix(0, 0), time.Date(2026, 11, 26, 8, 31, 0, 0, time.UTC), time.Date(2099, 12, 31, 23, 59, 59, 0, time.FixedZone("x", 3600))} {
		name := at.UTC().Format(api.SnapshotLayout)
		if !api.IsSnapshotName(name) {
			t.Errorf("IsSnapshotName(%q) = false for a name made with SnapshotLayout", name)
		}
		back, err := time.Parse(api.SnapshotLayout, name)
		if err != nil || !back.Equal(at) {
			t.Errorf("%q parses back as %v, %v; want %v", name, back, err, at)
		}
	}
	for _, bad := range []string{"", "latest", ".working", "20261126T083100Z.partial", "20261126T083100Z.deleting",
		"20261126T083100", "20261126t083100z", "2026-11-26T08:31:00Z", "20261126T083100Z/..", "../20261126T083100Z",
		"20261126T083100Z\n", "120261126T083100Z", "-0261126T083100Z"} {
		if api.IsSnapshotName(bad) {
			t.Errorf("IsSnapshotName(%q) = true", bad)
		}
	}
}
