package e2e

import (
	"time"

	"golang.org/x/sys/unix"
)

// lutimes sets a path's access and modification times without following a symlink.
func lutimes(path string, t time.Time) error {
	ts := unix.NsecToTimespec(t.UnixNano())
	return unix.UtimesNanoAt(unix.AT_FDCWD, path, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
}
