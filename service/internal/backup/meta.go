package backup

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// setLatest points "latest" at name with an atomic rename.
func setLatest(hostFd int, name string) error {
	tmp := ".latest.tmp"
	_ = unix.Unlinkat(hostFd, tmp, 0)
	if err := unix.Symlinkat(name, hostFd, tmp); err != nil {
		return fmt.Errorf("cannot update latest: %w", err)
	}
	if err := unix.Renameat(hostFd, tmp, hostFd, latestName); err != nil {
		return fmt.Errorf("cannot update latest: %w", err)
	}
	if err := unix.Fsync(hostFd); err != nil {
		return fmt.Errorf("cannot sync the snapshot directory: %w", err)
	}
	return nil
}

func fsyncAt(root int, rel string) error {
	fd, err := openBeneath(root, rel, unix.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("cannot sync %s: %w", rel, err)
	}
	defer unix.Close(fd)
	if err := unix.Fsync(fd); err != nil {
		return fmt.Errorf("cannot sync %s: %w", rel, err)
	}
	return nil
}

// readFileAt reads a regular file below root.
func readFileAt(root int, rel string, max int64) ([]byte, error) {
	fd, err := openBeneath(root, rel, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%s is not a regular file", rel)
	}
	// Sized by the stat, one byte more so that a file that did not grow ends in one read:
	// the manifest's segments are thousands of small files read at every run.
	buf := make([]byte, min(st.Size, max)+1)
	n := 0
	for int64(n) < max {
		if n == len(buf) {
			buf = append(buf, make([]byte, len(buf))...) // it grew meanwhile
		}
		m, err := unix.Read(fd, buf[n:min(int64(len(buf)), max)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	return buf[:n], nil
}

func readStats(hostFd int, snap string) *Stats {
	data, err := readFileAt(hostFd, snap+"/"+metaDir+"/stats.json", 1<<20)
	if err != nil {
		return nil
	}
	var st Stats
	if json.Unmarshal(data, &st) != nil {
		return nil
	}
	return &st
}

// writeFileAt writes a small file below root (temp, rename). It does not sync: the caller
// syncs the filesystem before anything relies on the file (runEngine: before the journal
// goes), one syncfs instead of a journal commit per file.
func writeFileAt(root int, rel string, write func(io.Writer) error) error {
	dir, name := splitRel(rel)
	dfd, err := openDirBeneath(root, dir)
	if err != nil {
		return fmt.Errorf("cannot write %s: %w", rel, err)
	}
	defer unix.Close(dfd)
	tmp := "." + name + ".tmp"
	fd, err := unix.Openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("cannot write %s: %w", rel, err)
	}
	f := os.NewFile(uintptr(fd), tmp)
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("cannot write %s: %w", rel, err)
	}
	f.Close()
	if err := unix.Renameat(dfd, tmp, dfd, name); err != nil {
		return fmt.Errorf("cannot write %s: %w", rel, err)
	}
	return nil
}

// writeMeta writes the snapshot's metadata. When the entries are exactly those of an existing
// manifest (reuse >= 0, the directory fd holding it; reuse == destFd: it is already in place),
// that manifest is hard-linked instead of written again: manifests are never modified in place.
// segmented writes a segmented manifest (see segments.go); it returns the segments to remove
// once the new manifest is durable; kept are the directories whose segments stay as they are.
func writeMeta(destFd int, entries []*Entry, st Stats, res Result, reuse int, segmented bool, kept map[string]keptSegment) (stale []string, err error) {
	switch {
	case reuse == destFd:
	case reuse >= 0:
		mfd, err := openDirBeneath(reuse, metaDir)
		if err == nil {
			var dfd int
			if dfd, err = openDirBeneath(destFd, metaDir); err == nil {
				err = linkReplace(mfd, "manifest", dfd, "manifest")
				unix.Close(dfd)
			}
			unix.Close(mfd)
		}
		if err == nil {
			break
		}
		fallthrough
	default:
		if segmented {
			if stale, err = writeSegmented(destFd, entries, kept); err != nil {
				return nil, err
			}
		} else if err := writeFileAt(destFd, metaDir+"/manifest", func(w io.Writer) error { return writeManifest(w, entries) }); err != nil {
			return nil, err
		}
	}
	for name, v := range map[string]any{"stats.json": st, "result.json": res} {
		if err := writeFileAt(destFd, metaDir+"/"+name, func(w io.Writer) error {
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			return enc.Encode(v)
		}); err != nil {
			return nil, err
		}
	}
	return stale, nil
}

// setDirMeta gives a destination directory the source directory's owner, mode, xattrs and
// times.
func (e *engine) setDirMeta(en *Entry, src *source) error {
	fd, err := openDirBeneath(e.destFd, en.Path)
	if err != nil {
		return fmt.Errorf("cannot open %q on the target: %w", en.Path, err)
	}
	defer unix.Close(fd)
	xsrc := -1
	if src != nil {
		if sfd, err := openDirBeneath(src.fd, src.rel(en.Path)); err == nil {
			defer unix.Close(sfd)
			xsrc = sfd
		}
	}
	return setDirAttrs(fd, xsrc, en)
}

// setDirAttrs gives the directory fd en's owner, the xattrs of xsrc (-1: none), its mode
// (setOwnership) and its mtime, and flags en with what could not be kept. Attributes that
// are right already are not set: a btrfs directory in which files were only rewritten in
// place has its owner, mode and mtime right, and is not written at all.
func setDirAttrs(fd, xsrc int, en *Entry) error {
	var cur unix.Stat_t
	if err := setOwnership(fd, xsrc, en.UID, en.GID, en.Mode, en, &cur); err != nil {
		return fmt.Errorf("cannot set the owner and mode of %q on the target: %w", en.Path, err)
	}
	if mtime := unix.NsecToTimespec(en.Mtime); cur.Mtim != mtime {
		if err := futimens(fd, []unix.Timespec{mtime, mtime}); err != nil {
			return fmt.Errorf("cannot set the times of %q on the target: %w", en.Path, err)
		}
	}
	return nil
}
