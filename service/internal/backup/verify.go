package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"sort"
	"sync"

	"github.com/plugvault/plugvault/service/api"
	"golang.org/x/sys/unix"
)

// maxProblems bounds the problems Verify reports.
const maxProblems = 1000

// openSnapshot opens plugvault/<host>/<snapshot> on target; snapshot "" is the newest complete
// one.
func openSnapshot(target, host, snapshot string) (fd int, name string, err error) {
	if !validHost(host) {
		return -1, "", fmt.Errorf("invalid host name %q", host)
	}
	tfd, err := openDirPath(target)
	if err != nil {
		return -1, "", fmt.Errorf("cannot open target %q: %w", target, err)
	}
	defer unix.Close(tfd)
	hfd, err := openDirBeneath(tfd, rootDir+"/"+host)
	if err != nil {
		return -1, "", fmt.Errorf("cannot open %s/%s: %w", rootDir, host, err)
	}
	defer unix.Close(hfd)
	if snapshot == "" {
		if snapshot = newestComplete(hfd); snapshot == "" {
			return -1, "", fmt.Errorf("cannot find a complete snapshot: %w", os.ErrNotExist)
		}
	}
	if !api.IsSnapshotName(snapshot) {
		return -1, "", fmt.Errorf("cannot find snapshot %q: %w", snapshot, os.ErrNotExist)
	}
	fd, err = openDirBeneath(hfd, snapshot)
	if err != nil {
		return -1, "", fmt.Errorf("cannot open snapshot %s: %w", snapshot, err)
	}
	return fd, snapshot, nil
}

// Verify re-reads a snapshot and compares it with its manifest: type, size, mode, owner (where
// it was preserved), times, symlink targets and content hashes where recorded; names the
// manifest does not list are reported too. snapshot "" is the newest complete one. progress
// (may be nil) gets the bytes of the manifest's regular files checked so far and their total,
// at most every progressInterval and once at the end.
func Verify(ctx context.Context, target, host, snapshot string, progress func(done, total uint64)) (checked uint64, problems []string, err error) {
	sfd, _, err := openSnapshot(target, host, snapshot)
	if err != nil {
		return 0, nil, fmt.Errorf("cannot verify: %w", err)
	}
	defer unix.Close(sfd)
	m, err := readManifestAt(sfd, metaDir+"/manifest")
	if err != nil {
		return 0, nil, fmt.Errorf("cannot verify: cannot read the manifest: %w", err)
	}
	entries := sortedEntries(m)
	var pr *byteReporter
	if progress != nil {
		var total uint64
		for _, e := range entries {
			if e.Type == 'f' && e.Size > 0 {
				total += uint64(e.Size)
			}
		}
		pr = newByteReporter(progress, total)
		pr.add(0)
	}
	children := map[string]map[string]bool{"": {metaDir: true}}
	for _, e := range entries {
		d, n := splitRel(e.Path)
		if children[d] == nil {
			children[d] = map[string]bool{}
		}
		children[d][n] = true
	}
	var mu sync.Mutex
	report := func(format string, args ...any) {
		mu.Lock()
		if len(problems) < maxProblems {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
		mu.Unlock()
	}
	// Group by directory; check each directory's entries and look for unlisted names.
	byDir := map[string][]*Entry{}
	for _, e := range entries {
		d, _ := splitRel(e.Path)
		byDir[d] = append(byDir[d], e)
	}
	var dirs []string
	for d := range children {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs)
	work := make(chan string)
	var wg sync.WaitGroup
	var n uint64
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1<<20)
			for d := range work {
				if ctx.Err() != nil {
					continue
				}
				c := verifyDir(sfd, d, byDir[d], children[d], buf, report, pr)
				mu.Lock()
				n += c
				mu.Unlock()
			}
		}()
	}
	for _, d := range dirs {
		work <- d
	}
	close(work)
	wg.Wait()
	if ctx.Err() != nil {
		return n, problems, fmt.Errorf("cannot verify: %w", ctx.Err())
	}
	pr.finish()
	return n, problems, nil
}

// verifyDir checks the entries of dir and counts their regular files' sizes on pr (may be nil).
func verifyDir(root int, dir string, entries []*Entry, want map[string]bool, buf []byte, report func(string, ...any), pr *byteReporter) uint64 {
	fd, err := openDirBeneath(root, dir)
	if err != nil {
		report("%s: cannot open: %v", "/"+dir, err)
		return 0
	}
	defer unix.Close(fd)
	names, err := readDirNames(fd)
	if err != nil {
		report("%s: cannot read: %v", "/"+dir, err)
	}
	for _, nm := range names {
		if !want[nm] {
			report("%s: not in the manifest", "/"+joinRel(dir, nm))
		}
	}
	var checked uint64
	var pending uint64 // the size of the file checked last, counted when its check ends
	for _, e := range entries {
		checked++
		pr.add(pending)
		pending = 0
		if e.Type == 'f' && e.Size > 0 {
			pending = uint64(e.Size)
		}
		_, name := splitRel(e.Path)
		p := "/" + e.Path
		st, err := lstatAt(fd, name)
		if err != nil {
			if e.Type == 's' || ((e.Type == 'c' || e.Type == 'b') && os.Geteuid() != 0) {
				continue // recorded, never created
			}
			report("%s: missing", p)
			continue
		}
		if t := fileType(st.Mode); t != e.Type {
			report("%s: type %c, manifest says %c", p, t, e.Type)
			continue
		}
		if e.Type != 'l' && st.Mode&0o7777 != e.Mode {
			report("%s: mode %o, manifest says %o", p, st.Mode&0o7777, e.Mode)
		}
		if !e.hasFlag(flagOwner) && (st.Uid != e.UID || st.Gid != e.GID) {
			report("%s: owner %d:%d, manifest says %d:%d", p, st.Uid, st.Gid, e.UID, e.GID)
		}
		if e.Type != 'd' && st.Mtim.Nano() != e.Mtime {
			report("%s: mtime %d, manifest says %d", p, st.Mtim.Nano(), e.Mtime)
		}
		switch e.Type {
		case 'f':
			if st.Size != e.Size {
				report("%s: size %d, manifest says %d", p, st.Size, e.Size)
				continue
			}
			if e.Hash != "" {
				h, err := hashFile(fd, name, buf)
				if err != nil {
					report("%s: cannot read: %v", p, err)
				} else if h != e.Hash {
					report("%s: content differs from the manifest's hash", p)
				}
			}
		case 'l':
			if t, err := readlinkAt(fd, name); err != nil || t != e.Link {
				report("%s: symlink target %q, manifest says %q", p, t, e.Link)
			}
		case 'c', 'b':
			if st.Rdev != e.Rdev {
				report("%s: device %d, manifest says %d", p, st.Rdev, e.Rdev)
			}
		}
	}
	pr.add(pending)
	return checked
}

func hashFile(dir int, name string, buf []byte) (string, error) {
	fd, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	h := sha256.New()
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return "", err
		}
		if n == 0 {
			break
		}
		h.Write(buf[:n])
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
