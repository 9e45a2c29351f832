package backup

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"

	"golang.org/x/sys/unix"
)

// In-place rewrites. On btrfs the working subvolume's files are its own: a snapshot shares
// their data by copy-on-write, never their inodes. A small changed file the tree already holds
// is therefore rewritten in its inode instead of a new file renamed over it, which spares the
// new inode, the temporary name and the old inode's removal; and when the file grew by an
// append, only the new bytes are written. On the bench's 1 %-change run (1000 appends) the
// space the run adds to a btrfs stick fell from about 100 to 81 MiB. The file is read whole
// (it fits the copy buffer) and found unchanged before its destination is touched, so a
// source that fails or vanishes still leaves the previous version as it was. Once writing
// began, a failure leaves the name out of the snapshot (errRewriteLost) rather than storing
// a half-written file under the previous version's entry; an interrupted run rewrites it, as
// the source no longer matches the entry the tree is known by.

// afterRewrite, set only by tests, runs once an in-place rewrite has written the data; an
// error it returns stops the rewrite there, as a failing drive would.
var afterRewrite func(path string) error

// errNotInPlace: the file cannot be rewritten in place (nothing was written); copy it.
var errNotInPlace = errors.New("not rewritable in place")

// errRewriteLost wraps an error that stopped an in-place rewrite after it began: the name was
// removed from the tree.
type errRewriteLost struct{ err error }

func (e errRewriteLost) Error() string {
	return fmt.Sprintf("%v; it is left out of this snapshot and copied again next time", e.err)
}

func (e errRewriteLost) Unwrap() error { return e.err }

// rewriteInPlace rewrites name in dfd (a regular file the tree holds, the previous version of
// en) with the content of in, when the destination allows it (destination.rewritesInPlace), the
// file fits buf, is not sparse, and the tree's copy is a regular file of its own (one link) with
// no extended attributes. It returns errNotInPlace when it did not write anything.
func (e *engine) rewriteInPlace(in, dfd int, name string, en *Entry, buf []byte) (*Entry, error) {
	var before unix.Stat_t
	var n int
	changed := false
	for attempt := 1; ; attempt++ {
		if err := unix.Fstat(in, &before); err != nil {
			return nil, err
		}
		if before.Mode&unix.S_IFMT != unix.S_IFREG || before.Ino != en.Ino {
			return nil, errChanged
		}
		if before.Size > int64(len(buf)) || before.Blocks*512 < before.Size {
			return nil, errNotInPlace
		}
		var err error
		if n, err = preadFull(in, buf[:before.Size], 0); err != nil {
			return nil, err
		}
		if afterRead != nil {
			afterRead(en.Path)
		}
		var after unix.Stat_t
		if err := unix.Fstat(in, &after); err != nil {
			return nil, err
		}
		changed = after.Size != before.Size || after.Mtim != before.Mtim || after.Ctim != before.Ctim || int64(n) != before.Size
		if !changed || attempt == maxAttempts {
			break
		}
	}
	data := buf[:n]

	out, err := unix.Openat(dfd, name, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, errNotInPlace
	}
	defer unix.Close(out)
	var ost unix.Stat_t
	if unix.Fstat(out, &ost) != nil || ost.Mode&unix.S_IFMT != unix.S_IFREG || ost.Nlink != 1 {
		return nil, errNotInPlace
	}
	if e.euid != 0 && int(ost.Uid) != e.euid {
		return nil, errNotInPlace // its mode could not be set: an unprivileged engine's own files only
	}
	if names, err := listXattrs(out); err != nil && err != unix.ENOTSUP || len(names) > 0 {
		return nil, errNotInPlace // the new version must not keep the old one's attributes
	}

	// From here on the tree's copy is being changed.
	lost := func(err error) (*Entry, error) {
		if err == unix.ENOSPC || err == unix.EIO || err == unix.EROFS {
			return nil, err // the run stops; the next one rewrites the file
		}
		_ = unix.Unlinkat(dfd, name, 0)
		return nil, errRewriteLost{err}
	}
	// A file that grew by an append keeps its old content (the tree's copy is the version known
	// by its hash): only what follows it is written, and the drive's copy-on-write shares the
	// rest with the snapshots.
	var h hash.Hash
	if !e.job.NoHash {
		h = sha256.New()
	}
	var off int64
	if k := e.known[en.Path]; h != nil && k != nil && k.Type == 'f' && k.Hash != "" && !k.hasFlag(flagChanging) &&
		k.Size <= int64(n) && ost.Size == k.Size {
		h.Write(data[:k.Size])
		if hex.EncodeToString(h.Sum(nil)) == k.Hash {
			off = k.Size
		}
		h.Write(data[k.Size:])
	} else if h != nil {
		h.Write(data)
	}
	if err := pwriteFull(out, data[off:], off); err != nil {
		return lost(err)
	}
	if ost.Size > int64(n) { // it shrank (the writes made it as long as n otherwise)
		if err := unix.Ftruncate(out, int64(n)); err != nil {
			return lost(err)
		}
	}
	if afterRewrite != nil {
		if err := afterRewrite(en.Path); err != nil {
			return lost(err)
		}
	}
	e.bytesWritten.Add(uint64(int64(n) - off))
	e.prog.add(0, uint64(n))
	*en = entryFromStat(en.Path, &before)
	if changed {
		en.addFlag(flagChanging)
		e.warn("%s: changed while it was read; the copy may be inconsistent and is copied again next time", "/"+en.Path)
	}
	if h != nil {
		en.Hash = hex.EncodeToString(h.Sum(nil))
	}
	if err := setFileMeta(in, out, &before, en); err != nil {
		return lost(err)
	}
	return en, nil
}
