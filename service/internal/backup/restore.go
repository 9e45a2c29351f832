package backup

import (
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// Restore copies path (relative to the snapshot root, "" = everything) out of a snapshot into
// the directory dest, preserving mode, owner (where the caller may set it), times, xattrs,
// symlinks and hard links. Without overwrite an existing name at the destination is an error
// and nothing is written. The daemon runs it in the engine child with the caller's
// credentials (SpawnRestore), so the caller can only write where they may. progress (may be
// nil) gets the bytes of regular files restored so far and their total from the snapshot's
// manifest (0 when it cannot be read), at most every progressInterval and once at the end.
// A file takes its name only once it is whole: a restore stopped part-way leaves the files it
// finished, and (where the filesystem has O_TMPFILE: ext4, btrfs, xfs, tmpfs) nothing else.
func Restore(ctx context.Context, target, host, snapshot, rel, dest string, overwrite bool, progress func(done, total uint64)) error {
	if !validRel(rel) {
		return fmt.Errorf("cannot restore: invalid path %q", rel)
	}
	if !path.IsAbs(dest) {
		return fmt.Errorf("cannot restore: destination %q is not an absolute path", dest)
	}
	sfd, _, err := openSnapshot(target, host, snapshot)
	if err != nil {
		return fmt.Errorf("cannot restore: %w", err)
	}
	defer unix.Close(sfd)
	dfd, err := openDirPath(path.Clean(dest))
	if err != nil {
		return fmt.Errorf("cannot restore: cannot open %q: %w", dest, err)
	}
	defer unix.Close(dfd)
	r := &restorer{ctx: ctx, links: map[[2]uint64]string{}, euid: os.Geteuid(), buf: make([]byte, 1<<20), droot: dfd}
	if progress != nil {
		r.progress = newByteReporter(progress, restoreTotal(sfd, rel))
		r.progress.add(0)
	}
	if rel == "" {
		// Everything: the snapshot root's entries, without its metadata.
		names, err := readDirNames(sfd)
		if err != nil {
			return fmt.Errorf("cannot restore: %w", err)
		}
		if !overwrite {
			for _, n := range names {
				if _, err := lstatAt(dfd, n); err == nil && n != metaDir {
					return fmt.Errorf("cannot restore: %s already exists", path.Join(dest, n))
				}
			}
		}
		for _, n := range names {
			if n == metaDir {
				continue
			}
			if err := r.copy(sfd, n, dfd, n, n); err != nil { // rel relative to dest
				return err
			}
		}
		r.progress.finish()
		return nil
	}
	pd, name := splitRel(rel)
	pfd, err := openDirBeneath(sfd, pd)
	if err != nil {
		return fmt.Errorf("cannot restore %q: %w", rel, err)
	}
	defer unix.Close(pfd)
	if _, err := lstatAt(pfd, name); err != nil {
		return fmt.Errorf("cannot restore %q: not in the snapshot: %w", rel, os.ErrNotExist)
	}
	if _, err := lstatAt(dfd, name); err == nil && !overwrite {
		return fmt.Errorf("cannot restore: %s already exists", path.Join(dest, name))
	}
	if err := r.copy(pfd, name, dfd, name, name); err != nil {
		return err
	}
	r.progress.finish()
	return nil
}

// restoreTotal is the size of the regular files at rel ("" = everything) in the snapshot sfd
// by its manifest, 0 when the manifest cannot be read.
func restoreTotal(sfd int, rel string) uint64 {
	m, err := readManifestAt(sfd, metaDir+"/manifest")
	if err != nil {
		return 0
	}
	var total uint64
	for _, e := range m {
		if e.Type == 'f' && e.Size > 0 && (rel == "" || e.Path == rel || strings.HasPrefix(e.Path, rel+"/")) {
			total += uint64(e.Size)
		}
	}
	return total
}

type restorer struct {
	ctx   context.Context
	links map[[2]uint64]string // snapshot inode -> restored path (relative to droot)
	droot int
	euid  int
	buf   []byte

	progress *byteReporter // nil: nobody asked
}

// progressWriter counts the bytes written through it as restored.
type progressWriter struct{ r *byteReporter }

func (w progressWriter) Write(p []byte) (int, error) {
	w.r.add(uint64(len(p)))
	return len(p), nil
}

// copy restores name in sdir as dname in ddir; rel is its path relative to the destination.
func (r *restorer) copy(sdir int, name string, ddir int, dname, rel string) error {
	if err := r.ctx.Err(); err != nil {
		return fmt.Errorf("cannot restore: %w", err)
	}
	st, err := lstatAt(sdir, name)
	if err != nil {
		return fmt.Errorf("cannot restore %q: %w", rel, err)
	}
	fail := func(err error) error { return fmt.Errorf("cannot restore %q: %w", rel, err) }
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		err := unix.Mkdirat(ddir, dname, 0o700)
		if err == unix.EEXIST {
			if dst, e := lstatAt(ddir, dname); e != nil || dst.Mode&unix.S_IFMT != unix.S_IFDIR {
				if err := removeAllAt(ddir, dname); err != nil {
					return fail(err)
				}
				err = unix.Mkdirat(ddir, dname, 0o700)
			} else {
				err = nil
			}
		}
		if err != nil {
			return fail(err)
		}
		sfd, err := openDirBeneath(sdir, name)
		if err != nil {
			return fail(err)
		}
		defer unix.Close(sfd)
		dfd, err := openDirBeneath(ddir, dname)
		if err != nil {
			return fail(err)
		}
		defer unix.Close(dfd)
		_ = unix.Fchmod(dfd, 0o700)
		names, err := readDirNames(sfd)
		if err != nil {
			return fail(err)
		}
		for _, n := range names {
			if err := r.copy(sfd, n, dfd, n, joinRel(rel, n)); err != nil {
				return err
			}
		}
		// An owner or xattrs the caller may not set are no error here.
		var cur unix.Stat_t
		if err := setOwnership(dfd, sfd, st.Uid, st.Gid, st.Mode&0o7777, &Entry{}, &cur); err != nil {
			return fail(err)
		}
		return futimens(dfd, []unix.Timespec{st.Atim, st.Mtim})
	case unix.S_IFREG:
		id := [2]uint64{st.Dev, st.Ino}
		if st.Nlink > 1 {
			if first, ok := r.links[id]; ok {
				fd, fn := splitRel(first)
				if ffd, err := openDirBeneath(r.droot, fd); err == nil {
					err = linkReplace(ffd, fn, ddir, dname)
					unix.Close(ffd)
					if err == nil {
						r.progress.add(uint64(max(st.Size, 0)))
						return nil
					}
				}
				// Fall through to a copy.
			}
		}
		in, err := unix.Openat(sdir, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return fail(err)
		}
		defer unix.Close(in)
		// The copy has no name until it is whole (O_TMPFILE), so a restore killed while it
		// writes (a cancelled job) leaves nothing at the destination. Where the filesystem
		// cannot, it is written under a temporary name.
		tmp := ""
		out, err := unix.Openat(ddir, ".", unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
		if err != nil {
			tmp = tempName()
			out, err = unix.Openat(ddir, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		}
		if err != nil {
			return fail(err)
		}
		ok := false
		defer func() {
			if !ok && tmp != "" {
				_ = unix.Unlinkat(ddir, tmp, 0)
			}
		}()
		var counter io.Writer
		if r.progress != nil {
			counter = progressWriter{r.progress}
		}
		n, err := copyData(in, out, st.Size, st.Blocks*512 < st.Size, counter, r.buf)
		if err != nil {
			unix.Close(out)
			return fail(err)
		}
		if n < st.Size {
			r.progress.add(uint64(st.Size - n)) // the file shrank while it was read
		}
		var cur unix.Stat_t
		if err := setOwnership(out, in, st.Uid, st.Gid, st.Mode&0o7777, &Entry{}, &cur); err != nil {
			unix.Close(out)
			return fail(err)
		}
		if err := futimens(out, []unix.Timespec{st.Atim, st.Mtim}); err != nil {
			unix.Close(out)
			return fail(err)
		}
		if err := unix.Fsync(out); err != nil {
			unix.Close(out)
			return fail(err)
		}
		if tmp == "" {
			// Name the whole copy, then move it into place as any other.
			tmp = tempName()
			if err := linkUnnamed(out, ddir, tmp); err != nil {
				tmp = ""
				unix.Close(out)
				return fail(err)
			}
		}
		unix.Close(out)
		if err := renameReplace(ddir, tmp, dname); err != nil {
			return fail(err)
		}
		ok = true
		if st.Nlink > 1 {
			r.links[id] = rel
		}
		return nil
	case unix.S_IFLNK:
		t, err := readlinkAt(sdir, name)
		if err != nil {
			return fail(err)
		}
		tmp := tempName()
		if err := unix.Symlinkat(t, ddir, tmp); err != nil {
			return fail(err)
		}
		_ = unix.Fchownat(ddir, tmp, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW)
		_ = unix.UtimesNanoAt(ddir, tmp, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW)
		if err := renameReplace(ddir, tmp, dname); err != nil {
			_ = unix.Unlinkat(ddir, tmp, 0)
			return fail(err)
		}
		return nil
	case unix.S_IFIFO, unix.S_IFCHR, unix.S_IFBLK:
		if st.Mode&unix.S_IFMT != unix.S_IFIFO && r.euid != 0 {
			return nil
		}
		tmp := tempName()
		if err := unix.Mknodat(ddir, tmp, st.Mode&unix.S_IFMT|0o600, int(st.Rdev)); err != nil {
			return fail(err)
		}
		_ = unix.Fchownat(ddir, tmp, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW)
		_ = unix.Fchmodat(ddir, tmp, st.Mode&0o7777, unix.AT_SYMLINK_NOFOLLOW)
		_ = unix.UtimesNanoAt(ddir, tmp, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW)
		if err := renameReplace(ddir, tmp, dname); err != nil {
			_ = unix.Unlinkat(ddir, tmp, 0)
			return fail(err)
		}
	}
	return nil
}

// linkUnnamed gives the file fd, opened with O_TMPFILE, the name name in dir. Linking it by
// its /proc/self/fd link needs no privilege (AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH).
func linkUnnamed(fd, dir int, name string) error {
	return unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), dir, name, unix.AT_SYMLINK_FOLLOW)
}
