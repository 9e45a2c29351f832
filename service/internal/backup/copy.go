package backup

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"io"
	"unsafe"

	"golang.org/x/sys/unix"
)

// copyBufSize is the buffer a copy worker reads and writes file data with.
const copyBufSize = 1 << 20

// metaWorkers is how many workers make links and directories and set directory metadata:
// work that moves no data but waits for metadata to be read, so more of it is kept in
// flight than copies.
const metaWorkers = 16

// place writes (opCopy) or links (opLink) one non-directory entry into the destination
// directory dfd.
func (e *engine) place(srcDir func() (int, error), dfd, prevFd int, name string, a action, buf []byte) (*Entry, error) {
	s := a.s
	// ext4: an unchanged entry of the previous snapshot is hard-linked, never copied.
	if a.op == opLink && prevFd >= 0 {
		if p := e.prev[s.Path]; p != nil {
			err := linkReplace(prevFd, name, dfd, name)
			if err == nil {
				// The scan's entry (owned by the run) becomes the stored one, as keepEntry does.
				s.Hash, s.Flags, s.Blocks = p.Hash, p.Flags, p.Blocks
				return s, nil
			}
			// Otherwise copy: too many links (EMLINK), gone from the previous snapshot, or not
			// ours to link (fs.protected_hardlinks for an unprivileged engine: EPERM).
			if err == unix.ENOSPC || err == unix.EIO || err == unix.EROFS {
				return nil, err
			}
		}
	}
	en := *s
	// Only file data and symlink targets are read from the source; the rest is in the scan.
	sfd, err := srcDir()
	if err != nil && (s.Type == 'f' || s.Type == 'l') {
		return nil, err
	}
	// A name the destination is not known to hold is created in place (a crash leaves nothing
	// the journal vouches for, so the next run writes it again); a known one is replaced by
	// an atomic rename, so the old version stays whole until the new one is.
	tmp := tempName()
	if e.known[s.Path] == nil {
		tmp = name
	}
	switch s.Type {
	case 'f':
		if buf == nil {
			buf = make([]byte, copyBufSize) // a link worker's link that could not be made
		}
		return e.copyFile(sfd, dfd, name, tmp, &en, buf)
	case 'l':
		target, err := readlinkAt(sfd, name)
		if err != nil {
			if err == unix.ENOENT || err == unix.EINVAL {
				return nil, errVanished
			}
			return nil, err
		}
		en.Link = target
		err = unix.Symlinkat(target, dfd, tmp)
		if err == unix.EEXIST && tmp == name {
			tmp = tempName()
			err = unix.Symlinkat(target, dfd, tmp)
		}
		if err != nil {
			return nil, err
		}
	case 'p', 'c', 'b':
		if s.Type != 'p' && e.euid != 0 {
			return &en, nil // recorded only: an unprivileged engine cannot create devices
		}
		mode := map[byte]uint32{'p': unix.S_IFIFO, 'c': unix.S_IFCHR, 'b': unix.S_IFBLK}[s.Type]
		err := unix.Mknodat(dfd, tmp, mode|0o600, int(s.Rdev))
		if err == unix.EEXIST && tmp == name {
			tmp = tempName()
			err = unix.Mknodat(dfd, tmp, mode|0o600, int(s.Rdev))
		}
		if err != nil {
			return nil, err
		}
	case 's':
		return &en, nil // sockets are recorded, never created
	default:
		return &en, nil
	}
	if err := unix.Fchownat(dfd, tmp, int(s.UID), int(s.GID), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		en.addFlag(flagOwner)
	}
	if s.Type != 'l' {
		if err := unix.Fchmodat(dfd, tmp, s.Mode, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			_ = unix.Unlinkat(dfd, tmp, 0)
			return nil, err
		}
	}
	ts := []unix.Timespec{unix.NsecToTimespec(s.Mtime), unix.NsecToTimespec(s.Mtime)}
	if err := unix.UtimesNanoAt(dfd, tmp, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		_ = unix.Unlinkat(dfd, tmp, 0)
		return nil, err
	}
	if tmp != name {
		if err := renameReplace(dfd, tmp, name); err != nil {
			_ = unix.Unlinkat(dfd, tmp, 0)
			return nil, err
		}
	}
	return &en, nil
}

func tempName() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return ".pv-tmp-" + hex.EncodeToString(b[:])
}

// renameReplace renames tmp to name in dfd, replacing whatever is there (a directory too).
func renameReplace(dfd int, tmp, name string) error {
	err := unix.Renameat(dfd, tmp, dfd, name)
	if err == unix.EISDIR || err == unix.ENOTEMPTY || err == unix.EEXIST || err == unix.ENOTDIR {
		if err := removeAllAt(dfd, name); err != nil {
			return err
		}
		err = unix.Renameat(dfd, tmp, dfd, name)
	}
	return err
}

// linkReplace hard-links oldName in oldDir as newName in newDir, replacing what is there.
func linkReplace(oldDir int, oldName string, newDir int, newName string) error {
	err := unix.Linkat(oldDir, oldName, newDir, newName, 0)
	if err == unix.EEXIST {
		if err := removeAllAt(newDir, newName); err != nil {
			return err
		}
		err = unix.Linkat(oldDir, oldName, newDir, newName, 0)
	}
	return err
}

// maxAttempts bounds the copies of a file that keeps changing while it is read.
const maxAttempts = 3

// afterRead, set only by tests, runs once a file's data has been read and before the file is
// checked for a change: a test changes the file there instead of racing the copy.
var afterRead func(path string)

// copyFile copies the regular file name from sfd to a temporary file in dfd and renames it into
// place, with owner, mode, times and xattrs.
func (e *engine) copyFile(sfd, dfd int, name, tmp string, en *Entry, buf []byte) (*Entry, error) {
	in, err := openSourceFile(sfd, name)
	if err != nil {
		if err == unix.ENOENT || err == unix.ELOOP || err == unix.ENXIO {
			return nil, errVanished
		}
		return nil, err
	}
	defer unix.Close(in)
	if tmp != name && e.dest.rewritesInPlace() {
		if r, err := e.rewriteInPlace(in, dfd, name, en, buf); err != errNotInPlace {
			return r, err
		}
	}
	for attempt := 1; ; attempt++ {
		var before unix.Stat_t
		if err := unix.Fstat(in, &before); err != nil {
			return nil, err
		}
		if before.Mode&unix.S_IFMT != unix.S_IFREG || before.Ino != en.Ino {
			return nil, errChanged
		}
		out, err := unix.Openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err == unix.EEXIST && tmp == name {
			// Something the journal does not know is there: replace it atomically.
			tmp = tempName()
			out, err = unix.Openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		}
		if err != nil {
			return nil, err
		}
		var h hash.Hash
		if !e.job.NoHash {
			h = sha256.New()
		}
		n, written, blocks, err := e.copyContent(in, out, dfd, name, en.Path, &before, h, buf)
		if err != nil {
			unix.Close(out)
			_ = unix.Unlinkat(dfd, tmp, 0)
			return nil, err
		}
		e.bytesWritten.Add(uint64(written))
		e.prog.add(0, uint64(n))
		if afterRead != nil {
			afterRead(en.Path)
		}
		var after unix.Stat_t
		if err := unix.Fstat(in, &after); err != nil {
			unix.Close(out)
			_ = unix.Unlinkat(dfd, tmp, 0)
			return nil, err
		}
		changed := after.Size != before.Size || after.Mtim != before.Mtim || after.Ctim != before.Ctim || n != before.Size
		if changed && attempt < maxAttempts {
			unix.Close(out)
			_ = unix.Unlinkat(dfd, tmp, 0)
			continue
		}
		*en = entryFromStat(en.Path, &before)
		if changed {
			en.addFlag(flagChanging)
			e.warn("%s: changed while it was read; the copy may be inconsistent and is copied again next time", "/"+en.Path)
		}
		if h != nil {
			en.Hash = hex.EncodeToString(h.Sum(nil))
		}
		en.Blocks = blocks
		if err := setFileMeta(in, out, &before, en); err != nil {
			unix.Close(out)
			_ = unix.Unlinkat(dfd, tmp, 0)
			return nil, err
		}
		unix.Close(out)
		if tmp != name {
			if err := renameReplace(dfd, tmp, name); err != nil {
				_ = unix.Unlinkat(dfd, tmp, 0)
				return nil, err
			}
		}
		return en, nil
	}
}

// setFileMeta gives out (the copy of in, whose stat is st) in's owner, xattrs, mode and
// times (setOwnership), and flags en with what could not be kept (xattrs, owner). A mode or
// times that cannot be set is an error.
func setFileMeta(in, out int, st *unix.Stat_t, en *Entry) error {
	var cur unix.Stat_t
	if err := setOwnership(out, in, st.Uid, st.Gid, st.Mode&0o7777, en, &cur); err != nil {
		return err
	}
	return futimens(out, []unix.Timespec{st.Atim, st.Mtim})
}

// setOwnership gives fd the owner uid:gid, the xattrs of xsrc (-1: none) and mode, in that
// order: a chown clears a file capability (security.capability) and the set-ID bits, and an
// access ACL sets the mode's permission bits. It flags en with what could not be kept (owner,
// xattrs); a mode that cannot be set is an error. cur is fd's stat when it returns.
//
// An owner or mode that is right already is not set again: on btrfs every fchown and fchmod
// is a transaction that rewrites the inode even when nothing changes, and a new file is
// usually ours already (an unprivileged engine's, or root's for root's files), as a
// rewritten file or a directory written in usually keeps its mode.
func setOwnership(fd, xsrc int, uid, gid, mode uint32, en *Entry, cur *unix.Stat_t) error {
	if err := unix.Fstat(fd, cur); err != nil {
		return err
	}
	changed := false
	if cur.Uid != uid || cur.Gid != gid {
		if err := unix.Fchown(fd, int(uid), int(gid)); err != nil {
			en.addFlag(flagOwner)
		}
		changed = true
	}
	if xsrc >= 0 {
		set, inc, err := copyXattrs(xsrc, fd)
		if err != nil || inc {
			en.addFlag(flagXattr)
		}
		changed = changed || set > 0
	}
	if changed {
		if err := unix.Fstat(fd, cur); err != nil {
			return err
		}
	}
	if cur.Mode&0o7777 != mode {
		if err := unix.Fchmod(fd, mode); err != nil {
			return err
		}
	}
	return nil
}

// copyContent fills out with the content of in (stat st), feeding h (nil: no hashes). A file
// of at least blockMin bytes gets block hashes; when the destination holds its previous
// version (name in dfd, stored as e.known[path]) and clones in place, out starts as a clone of
// it and only the changed blocks are written. It returns the bytes read, the bytes written
// and the block hashes.
func (e *engine) copyContent(in, out, dfd int, name, path string, st *unix.Stat_t, h hash.Hash, buf []byte) (read, written int64, blocks string, err error) {
	sparse := st.Blocks*512 < st.Size
	if h == nil || st.Size < blockMin {
		n, err := copyData(in, out, st.Size, sparse, h, buf)
		return n, n, "", err
	}
	if e.dest.clonesInPlace() && !sparse {
		k := e.known[path]
		if base := cloneBase(dfd, name, k); base >= 0 {
			err := unix.IoctlFileClone(out, base)
			unix.Close(base)
			if err == nil {
				return updateBlocks(in, out, st.Size, k.Blocks, h, buf)
			}
			// Not clonable here (another filesystem below, say): copy.
			if err := unix.Ftruncate(out, 0); err != nil {
				return 0, 0, "", err
			}
		}
	}
	bh := newBlockHasher()
	n, err := copyData(in, out, st.Size, sparse, io.MultiWriter(h, bh), buf)
	return n, n, bh.result(), err
}

// futimens sets the times of an open file (utimensat with a NULL path).
func futimens(fd int, ts []unix.Timespec) error {
	_, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// openSourceFile opens a regular source file for reading without following a symlink, without
// blocking on a fifo swapped in, and without touching its atime where allowed.
func openSourceFile(dir int, name string) (int, error) {
	flags := unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC
	fd, err := unix.Openat(dir, name, flags|unix.O_NOATIME, 0)
	if err == unix.EPERM {
		fd, err = unix.Openat(dir, name, flags, 0)
	}
	return fd, err
}

// copyData copies size bytes from in to out, an empty file (preserving holes when sparse),
// feeding h.
func copyData(in, out int, size int64, sparse bool, h io.Writer, buf []byte) (int64, error) {
	var off, copied int64
	var outSize int64 // where the last write ended: out's size
	zero := []byte(nil)
	for off < size {
		end := size
		if sparse {
			data, err := unix.Seek(in, off, unix.SEEK_DATA)
			if err == unix.ENXIO {
				data = size
			} else if err != nil {
				sparse = false
				data = off
			}
			if data > size {
				data = size
			}
			if data > off && h != nil {
				if zero == nil {
					zero = make([]byte, 64<<10)
				}
				for z := data - off; z > 0; {
					c := min(z, int64(len(zero)))
					h.Write(zero[:c])
					z -= c
				}
			}
			copied += data - off
			off = data
			if off >= size {
				break
			}
			if sparse {
				hole, err := unix.Seek(in, off, unix.SEEK_HOLE)
				if err == nil && hole < size {
					end = hole
				}
			}
		}
		for off < end {
			want := min(int64(len(buf)), end-off)
			n, err := unix.Pread(in, buf[:want], off)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return copied, err
			}
			if n == 0 {
				// The file shrank while being read.
				if err := unix.Ftruncate(out, off); err != nil {
					return copied, err
				}
				return copied, nil
			}
			if h != nil {
				h.Write(buf[:n])
			}
			for w := 0; w < n; {
				m, err := unix.Pwrite(out, buf[w:n], off+int64(w))
				if err == unix.EINTR {
					continue
				}
				if err != nil {
					return copied, err
				}
				w += m
			}
			off += int64(n)
			copied += int64(n)
			outSize = off
		}
	}
	if outSize == size {
		return copied, nil // no hole at the end to make (and no transaction for nothing)
	}
	if err := unix.Ftruncate(out, size); err != nil {
		return copied, err
	}
	return copied, nil
}
