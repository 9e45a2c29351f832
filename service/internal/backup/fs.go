package backup

import (
	"errors"
	"os"
	"path"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// resolveFlags confine a path lookup to below the directory fd and refuse every symlink on the
// way, including in the last component.
const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// openBeneath opens rel (slash separated, "" or "." for the root itself) below root, never
// following a symlink and never leaving root. It uses openat2 with RESOLVE_BENEATH and
// RESOLVE_NO_SYMLINKS; where openat2 is unavailable (ENOSYS: an old kernel, or a seccomp
// filter that hides it, as seen under systemd in the Debian 12 guest) it walks the path one
// component at a time with openat(O_NOFOLLOW), which refuses the same things.
func openBeneath(root int, rel string, flags int, mode uint32) (int, error) {
	if rel == "" {
		rel = "."
	}
	if !noOpenat2.Load() {
		how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW), Mode: uint64(mode), Resolve: resolveFlags}
		for {
			fd, err := unix.Openat2(root, rel, &how)
			if err == unix.EINTR || err == unix.EAGAIN {
				continue
			}
			if err != unix.ENOSYS {
				return fd, err
			}
			noOpenat2.Store(true)
			break
		}
	}
	return openBeneathWalk(root, rel, flags, mode)
}

// noOpenat2 is set once openat2 answered ENOSYS.
var noOpenat2 atomic.Bool

// openBeneathWalk is openBeneath without openat2: every directory on the way is opened
// relative to its parent with O_PATH|O_NOFOLLOW|O_DIRECTORY, ".." is refused (EXDEV, as
// RESOLVE_BENEATH answers), and the last component is opened with O_NOFOLLOW, so a symlink
// anywhere is refused (ELOOP or ENOTDIR) rather than followed. O_PATH needs only search
// permission on the way, as openat2's resolution does: an unprivileged engine or restore
// passes a directory it may enter but not list.
func openBeneathWalk(root int, rel string, flags int, mode uint32) (int, error) {
	parts := strings.Split(rel, "/")
	dir, owned := root, false
	defer func() {
		if owned {
			unix.Close(dir)
		}
	}()
	for i, p := range parts {
		switch {
		case p == "..":
			return -1, unix.EXDEV
		case p == "" || p == ".":
			if i == len(parts)-1 {
				p = "."
				break
			}
			continue
		}
		if i == len(parts)-1 {
			return retryEINTR(func() (int, error) { return unix.Openat(dir, p, flags|unix.O_CLOEXEC|unix.O_NOFOLLOW, mode) })
		}
		fd, err := retryEINTR(func() (int, error) {
			return unix.Openat(dir, p, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		})
		if err != nil {
			return -1, err
		}
		if owned {
			unix.Close(dir)
		}
		dir, owned = fd, true
	}
	return -1, unix.EINVAL // not reached: the last part always returns
}

func retryEINTR(f func() (int, error)) (int, error) {
	for {
		fd, err := f()
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// openDirBeneath opens the directory rel below root.
func openDirBeneath(root int, rel string) (int, error) {
	return openBeneath(root, rel, unix.O_RDONLY|unix.O_DIRECTORY, 0)
}

// openDirPath opens an absolute directory given by the (root-owned) configuration. The last
// component must not be a symlink.
func openDirPath(p string) (int, error) {
	for {
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.EINTR {
			continue
		}
		return fd, err
	}
}

// splitRel splits a relative path into its parent ("" for the root) and last component.
func splitRel(rel string) (dir, name string) {
	i := strings.LastIndexByte(rel, '/')
	if i < 0 {
		return "", rel
	}
	return rel[:i], rel[i+1:]
}

// joinRel joins relative path components, treating "" as the root.
func joinRel(dir, name string) string {
	if dir == "" {
		return name
	}
	if name == "" {
		return dir
	}
	return dir + "/" + name
}

// validRel reports whether rel is a clean relative path that cannot climb out of its root.
func validRel(rel string) bool {
	if rel == "" {
		return true
	}
	if strings.HasPrefix(rel, "/") || path.Clean(rel) != rel {
		return false
	}
	for _, c := range strings.Split(rel, "/") {
		if c == ".." || c == "." || c == "" {
			return false
		}
	}
	return true
}

// lstatAt stats name in dir without following a symlink.
func lstatAt(dir int, name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	for {
		err := unix.Fstatat(dir, name, &st, unix.AT_SYMLINK_NOFOLLOW)
		if err == unix.EINTR {
			continue
		}
		return st, err
	}
}

// readlinkAt reads the target of the symlink name in dir.
func readlinkAt(dir int, name string) (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Readlinkat(dir, name, buf)
		if err != nil {
			return "", err
		}
		if n < len(buf) {
			return string(buf[:n]), nil
		}
		buf = make([]byte, len(buf)*2)
	}
}

// removeAllAt removes name in dir and, if it is a directory, everything below it, never
// following a symlink. A missing name is not an error.
func removeAllAt(dir int, name string) error {
	err := unix.Unlinkat(dir, name, 0)
	if err == nil || err == unix.ENOENT {
		return nil
	}
	if err != unix.EISDIR && err != unix.EPERM {
		return err
	}
	fd, oerr := unix.Openat(dir, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if oerr != nil {
		if oerr == unix.ENOENT {
			return nil
		}
		return err
	}
	// A read-only directory of the user's own cannot have entries removed until it is writable.
	_ = unix.Fchmod(fd, 0o700)
	f := os.NewFile(uintptr(fd), name)
	for {
		names, rerr := f.Readdirnames(1024)
		for _, n := range names {
			if e := removeAllAt(fd, n); e != nil {
				f.Close()
				return e
			}
		}
		if rerr != nil {
			break
		}
	}
	f.Close()
	err = unix.Unlinkat(dir, name, unix.AT_REMOVEDIR)
	if err == unix.ENOENT {
		return nil
	}
	return err
}

// readDirNames lists a directory fd without closing it.
func readDirNames(fd int) ([]string, error) {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dup), "dir")
	defer f.Close()
	if _, err := unix.Seek(dup, 0, 0); err != nil {
		return nil, err
	}
	return f.Readdirnames(-1)
}

// fileType maps st_mode to the manifest's type letter.
func fileType(mode uint32) byte {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return 'f'
	case unix.S_IFDIR:
		return 'd'
	case unix.S_IFLNK:
		return 'l'
	case unix.S_IFCHR:
		return 'c'
	case unix.S_IFBLK:
		return 'b'
	case unix.S_IFIFO:
		return 'p'
	case unix.S_IFSOCK:
		return 's'
	}
	return '?'
}

// copyXattrs copies every extended attribute (including POSIX ACLs, which are the
// system.posix_acl_* attributes) from fd src to fd dst. It reports how many it set and
// whether some could not be set (unsupported by the target, or not permitted for this user).
func copyXattrs(src, dst int) (set int, incomplete bool, err error) {
	names, err := listXattrs(src)
	if err != nil {
		if err == unix.ENOTSUP {
			return 0, false, nil
		}
		return 0, false, err
	}
	buf := make([]byte, 4096)
	for _, n := range names {
		var sz int
		for {
			sz, err = unix.Fgetxattr(src, n, buf)
			if err == unix.ERANGE {
				buf = make([]byte, len(buf)*4)
				continue
			}
			break
		}
		if err != nil {
			if err == unix.ENODATA {
				continue
			}
			return set, incomplete, err
		}
		if err := unix.Fsetxattr(dst, n, buf[:sz], 0); err != nil {
			if err == unix.ENOTSUP || err == unix.EPERM || err == unix.EACCES || err == unix.EOPNOTSUPP {
				incomplete = true
				continue
			}
			return set, incomplete, err
		}
		set++
	}
	return set, incomplete, nil
}

func listXattrs(fd int) ([]string, error) {
	buf := make([]byte, 1024)
	for {
		n, err := unix.Flistxattr(fd, buf)
		if err == unix.ERANGE {
			buf = make([]byte, len(buf)*4)
			continue
		}
		if err != nil {
			return nil, err
		}
		var names []string
		for _, s := range strings.Split(string(buf[:n]), "\x00") {
			if s != "" {
				names = append(names, s)
			}
		}
		return names, nil
	}
}

// errVanished marks a source entry that disappeared between the walk and the copy.
var errVanished = errors.New("vanished")

// errChanged marks a source entry that was replaced between the walk and the copy.
var errChanged = errors.New("changed during the backup")
