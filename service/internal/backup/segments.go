package backup

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// A segmented manifest (btrfs) shares what did not change with the previous snapshot: the
// entries of each directory (its children's lines) are a segment file named by its SHA-256
// in .plugvault/m/, and .plugvault/manifest is an index, "plugvault-manifest 2" and then one
// segment name a line. A run writes only the segments that do not exist yet (the directories
// that changed) and the index; the working subvolume keeps the unchanged segments in place,
// so a snapshot shares them with the one before. A flat manifest (format 1) is read as before.
const (
	manifestHeaderV2 = "plugvault-manifest 2"
	segmentDir       = "m"
)

// readManifestAt reads the manifest rel (".plugvault/manifest") below root, flat or segmented.
func readManifestAt(root int, rel string) (map[string]*Entry, error) {
	fd, err := openBeneath(root, rel, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<16)
	head, err := br.Peek(len(manifestHeaderV2) + 1)
	if err != nil || string(head) != manifestHeaderV2+"\n" {
		return readManifest(br)
	}
	dir, _ := splitRel(rel)
	sfd, err := openDirBeneath(root, joinRel(dir, segmentDir))
	if err != nil {
		return nil, fmt.Errorf("cannot open the manifest's segments: %w", err)
	}
	defer unix.Close(sfd)
	var names []string
	sc := bufio.NewScanner(br)
	sc.Scan() // the header
	for sc.Scan() {
		name := sc.Text()
		if len(name) != 2*sha256.Size || strings.Trim(name, "0123456789abcdef") != "" {
			return nil, fmt.Errorf("bad manifest segment name %q", name)
		}
		names = append(names, name)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	// The segments are small files spread over the drive: read in parallel, so that a cold
	// cache costs a few round trips to the drive at once instead of one per directory.
	segs := make([][]Entry, len(names))
	errs := make([]error, len(names))
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := min(segmentReaders, len(names)); w > 0; w-- {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(names) {
					return
				}
				segs[i], errs[i] = readSegment(sfd, names[i])
				if errs[i] != nil {
					next.Store(int64(len(names))) // stop the others
					return
				}
			}
		}()
	}
	wg.Wait()
	n := 0
	for i := range names {
		if errs[i] != nil {
			return nil, errs[i]
		}
		n += len(segs[i])
	}
	m := make(map[string]*Entry, n)
	for _, seg := range segs {
		for i := range seg {
			m[seg[i].Path] = &seg[i]
		}
	}
	return m, nil
}

// segmentReaders is how many manifest segments are read at once.
const segmentReaders = 8

// readSegment reads and checks one segment (below the segment directory sfd).
func readSegment(sfd int, name string) ([]Entry, error) {
	data, err := readFileAt(sfd, name, 1<<30)
	if err != nil {
		return nil, fmt.Errorf("cannot read manifest segment %s: %w", name, err)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != name {
		return nil, fmt.Errorf("manifest segment %s is damaged", name)
	}
	out := make([]Entry, 0, bytes.Count(data, []byte{'\n'}))
	for i, ln := range bytes.Split(data, []byte{'\n'}) {
		if len(ln) == 0 {
			continue
		}
		e, err := parseEntry(string(ln))
		if err != nil {
			return nil, fmt.Errorf("manifest segment %s line %d: %w", name, i+1, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// writeSegmented writes entries as a segmented manifest below destFd: the segments that do
// not exist yet, then the index. It syncs nothing (runEngine syncs the filesystem before the
// journal goes). It returns the segments no longer referenced, to remove once the index is
// durable.
func writeSegmented(destFd int, entries []*Entry) (stale []string, err error) {
	mfd, err := openDirBeneath(destFd, metaDir)
	if err != nil {
		return nil, fmt.Errorf("cannot write the manifest: %w", err)
	}
	defer unix.Close(mfd)
	if err := unix.Mkdirat(mfd, segmentDir, 0o700); err != nil && err != unix.EEXIST {
		return nil, fmt.Errorf("cannot write the manifest: %w", err)
	}
	sfd, err := openDirBeneath(mfd, segmentDir)
	if err != nil {
		return nil, fmt.Errorf("cannot write the manifest: %w", err)
	}
	defer unix.Close(sfd)
	names, err := readDirNames(sfd)
	if err != nil {
		return nil, fmt.Errorf("cannot write the manifest: %w", err)
	}
	have := make(map[string]bool, len(names))
	for _, n := range names {
		have[n] = true
	}
	// One segment per directory, the directories in path order: sort by parent, keeping the
	// scan's order within a directory, and write each group as it ends.
	order := append([]*Entry(nil), entries...)
	sort.SliceStable(order, func(i, j int) bool { return parentOf(order[i].Path) < parentOf(order[j].Path) })
	index := []byte(manifestHeaderV2 + "\n")
	used := map[string]bool{}
	var data []byte
	for i, en := range order {
		data = appendEntry(data, en)
		if i+1 < len(order) && parentOf(order[i+1].Path) == parentOf(en.Path) {
			continue
		}
		sum := sha256.Sum256(data)
		name := hex.EncodeToString(sum[:])
		index = append(index, name+"\n"...)
		used[name] = true
		if !have[name] {
			if err := writeSegment(sfd, name, data); err != nil {
				return nil, fmt.Errorf("cannot write the manifest: %w", err)
			}
			have[name] = true
		}
		data = data[:0]
	}
	if err := writeFileAt(destFd, metaDir+"/manifest", func(w io.Writer) error {
		_, err := w.Write(index)
		return err
	}); err != nil {
		return nil, err
	}
	for _, n := range names {
		if !used[n] {
			stale = append(stale, n)
		}
	}
	return stale, nil
}

func writeSegment(sfd int, name string, data []byte) error {
	tmp := ".tmp-" + name
	fd, err := unix.Openat(sfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	if err := pwriteFull(fd, data, 0); err != nil {
		unix.Close(fd)
		_ = unix.Unlinkat(sfd, tmp, 0)
		return err
	}
	unix.Close(fd)
	return unix.Renameat(sfd, tmp, sfd, name)
}

// removeSegments removes the named segments (and stray temporary files) below destFd.
func removeSegments(destFd int, names []string) {
	if len(names) == 0 {
		return
	}
	sfd, err := openDirBeneath(destFd, metaDir+"/"+segmentDir)
	if err != nil {
		return
	}
	defer unix.Close(sfd)
	for _, n := range names {
		_ = unix.Unlinkat(sfd, n, 0)
	}
}
