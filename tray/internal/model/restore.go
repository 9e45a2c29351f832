package model

import (
	"fmt"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/plugvault/plugvault/service/api"
)

// Timeline returns the complete snapshots, newest first: what the Restore window lists.
func Timeline(snaps []api.Snapshot) []api.Snapshot {
	var out []api.Snapshot
	for _, s := range snaps {
		if s.Status == api.SnapshotComplete {
			out = append(out, s)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created > out[j].Created })
	return out
}

// TimelineLabel is a snapshot's line in the Restore window's timeline, in local time:
// "Thu 26 Nov 2026, 08:31 · 1234 files · 2.1 GB · 12 files changed". A snapshot that did not
// record its changes (api.ChangedUnknown) has no "changed" part.
func TimelineLabel(s api.Snapshot, loc *time.Location) string {
	t := time.Unix(s.Created, 0).In(loc)
	line := fmt.Sprintf("%s · %s · %s", t.Format("Mon 2 Jan 2006, 15:04"), plural(int64(s.Files), "file"), api.FormatBytes(s.Bytes))
	switch {
	case s.Changed == 0:
		line += " · no files changed"
	case s.Changed > 0:
		line += " · " + plural(s.Changed, "file") + " changed"
	}
	return line
}

// OriginalPlace returns where rel (a path relative to a snapshot's root, where every source is
// kept under its absolute path) came from: the directory to restore into and the name in it.
// ok is false for the snapshot root and for paths that are not clean and relative.
func OriginalPlace(rel string) (dir, name string, ok bool) {
	if rel == "" || path.Clean(rel) != rel || path.IsAbs(rel) || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", "", false
	}
	dir, name = path.Split("/" + rel)
	return path.Clean(dir), name, true
}

// KeepBothName is the name a restored copy gets beside an existing file of the same name:
// "report (from 26 Nov 2026 08.31).txt". The time is the snapshot's, in local time.
func KeepBothName(name string, created time.Time) string {
	ext := path.Ext(name)
	if ext == name || strings.HasPrefix(name, ".") && strings.Count(name, ".") == 1 {
		ext = "" // ".bashrc" has no extension
	}
	return strings.TrimSuffix(name, ext) + " (from " + created.Format("2 Jan 2006 15.04") + ")" + ext
}
