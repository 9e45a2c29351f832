package backup

import "golang.org/x/sys/unix"

// Openat2Available reports whether openat2(2) works in this process. plugvaultd asks at start
// and logs the answer: the engine child inherits the daemon's seccomp filters (systemd
// installs them for the whole service and they survive fork and exec), so it holds for the
// engine too, which otherwise confines each lookup with a walk of openat(O_NOFOLLOW) calls
// (openBeneath).
func Openat2Available() bool {
	fd, err := unix.Openat2(unix.AT_FDCWD, "/", &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_SYMLINKS})
	if err == nil {
		unix.Close(fd)
	}
	return err != unix.ENOSYS
}
