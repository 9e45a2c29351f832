package backup

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
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
	x, flat, err := openManifest(root, rel)
	if err != nil || x == nil {
		return flat, err
	}
	defer x.close()
	all := make([]int, len(x.names))
	for i := range all {
		all[i] = i
	}
	m := map[string]*Entry{}
	if err := x.readInto(m, all); err != nil {
		return nil, err
	}
	return m, nil
}

// segIndex is a segmented manifest's index, opened without reading its segments.
type segIndex struct {
	sfd   int      // the segment directory
	names []string // the segments, one per directory, in directory order
	// sigs maps a directory's signature (dirSig) to the index of its segment, from the
	// manifest's sidecar (dirsFile); nil when there is none that goes with this index.
	sigs     map[string]int
	resolved bool // engine.resolveBase ran
}

func (x *segIndex) close() { unix.Close(x.sfd) }

// dirsFile is the segmented manifest's sidecar: "plugvault-manifest-dirs 1 <SHA-256 of the
// index>", then for each line of the index the signature (dirSig) of the directory whose
// segment it names, or "-". A run whose scan of a directory has the recorded signature keeps
// that directory's segment as it is, without reading it (engine.resolveBase). Readers that
// predate it ignore it; one that does not go with the index is ignored.
const (
	dirsFile   = "manifest.dirs"
	dirsHeader = "plugvault-manifest-dirs 1"
)

// openManifest opens the manifest rel below root: a segmented one as its index (the caller
// closes it), a flat one read whole.
func openManifest(root int, rel string) (*segIndex, map[string]*Entry, error) {
	data, err := readFileAt(root, rel, 1<<30)
	if err != nil {
		return nil, nil, err
	}
	body, ok := bytes.CutPrefix(data, []byte(manifestHeaderV2+"\n"))
	if !ok {
		m, err := readManifest(bytes.NewReader(data))
		return nil, m, err
	}
	x := &segIndex{}
	for ln := range bytes.Lines(body) {
		name := string(bytes.TrimSuffix(ln, []byte{'\n'}))
		if len(name) != 2*sha256.Size || strings.Trim(name, "0123456789abcdef") != "" {
			return nil, nil, fmt.Errorf("bad manifest segment name %q", name)
		}
		x.names = append(x.names, name)
	}
	dir, _ := splitRel(rel)
	if x.sfd, err = openDirBeneath(root, joinRel(dir, segmentDir)); err != nil {
		return nil, nil, fmt.Errorf("cannot open the manifest's segments: %w", err)
	}
	if side, err := readFileAt(root, joinRel(dir, dirsFile), 1<<30); err == nil {
		x.sigs = parseDirs(side, data, len(x.names))
	}
	return x, nil, nil
}

// parseDirs reads the sidecar data of the index (whole file) with n segments; nil when it
// does not go with that index.
func parseDirs(data, index []byte, n int) map[string]int {
	sum := sha256.Sum256(index)
	head, body, _ := bytes.Cut(data, []byte{'\n'})
	if string(head) != dirsHeader+" "+hex.EncodeToString(sum[:]) || bytes.Count(body, []byte{'\n'}) != n {
		return nil
	}
	sigs := make(map[string]int, n)
	i := 0
	for ln := range bytes.Lines(body) {
		if i == n {
			break
		}
		if sig := bytes.TrimSuffix(ln, []byte{'\n'}); len(sig) == 2*dirSigLen {
			sigs[string(sig)] = i
		}
		i++
	}
	return sigs
}

// readInto reads the segments with the given indexes (in parallel: they are small files
// spread over the drive, and a cold cache then costs a few round trips at once instead of one
// per directory) and adds their entries to m.
func (x *segIndex) readInto(m map[string]*Entry, which []int) error {
	segs := make([][]Entry, len(which))
	errs := make([]error, len(which))
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := min(segmentReaders, len(which)); w > 0; w-- {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(which) {
					return
				}
				segs[i], errs[i] = readSegment(x.sfd, x.names[which[i]])
				if errs[i] != nil {
					next.Store(int64(len(which))) // stop the others
					return
				}
			}
		}()
	}
	wg.Wait()
	for i := range which {
		if errs[i] != nil {
			return errs[i]
		}
	}
	for _, seg := range segs {
		for i := range seg {
			m[seg[i].Path] = &seg[i]
		}
	}
	return nil
}

// dirSigLen is the bytes of SHA-256 a directory signature keeps.
const dirSigLen = 16

// dirSig is the signature of a directory's entries (its children, in name order) as the
// source shows them: every field of their manifest lines but what was learnt from their
// content (hash, block hashes). Equal signatures mean every child's name, type, owner, mode, size, times,
// inode, link count, link target and flags are the same. A scanned entry has no flags but
// an ancestor's, so a directory with an entry flagged in the manifest (changing while read,
// owner or xattrs not kept) never matches and is always read. Otherwise a run keeps every
// child (sameSource) and stores the same lines, unless it re-links a hard link group: then
// it writes in the directory, and engine.fillKept reads its segment after all.
func dirSig(children []*Entry, buf []byte) (sig string, ok bool) {
	h := sha256.New()
	for _, c := range children {
		// The fields in binary, the strings after their length: cheaper than the quoted
		// manifest line, and as exact.
		buf = append(buf[:0], c.Type)
		for _, v := range []uint64{uint64(c.Mode), uint64(c.UID), uint64(c.GID), uint64(c.Size), uint64(c.Mtime),
			uint64(c.Ctime), c.Ino, c.Dev, uint64(c.Nlink), c.Rdev} {
			buf = binary.LittleEndian.AppendUint64(buf, v)
		}
		for _, s := range []string{c.Flags, c.Path, c.Link} {
			buf = binary.AppendUvarint(buf, uint64(len(s)))
			buf = append(buf, s...)
		}
		h.Write(buf)
	}
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0])[:dirSigLen]), len(children) > 0
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

// keptSegment is a directory whose segment a run keeps without reading it
// (engine.resolveBase): its name and the directory's signature.
type keptSegment struct{ name, sig string }

// writeSegmented writes entries as a segmented manifest below destFd: the segments that do
// not exist yet, then the index, then its sidecar (dirsFile). The directories in kept keep
// their segment as it is. It syncs nothing (runEngine syncs the filesystem before the journal
// goes). It returns the segments no longer referenced, to remove once the index is durable.
func writeSegmented(destFd int, entries []*Entry, kept map[string]keptSegment) (stale []string, err error) {
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
	// One segment per directory, the directories in path order, each keeping the scan's order
	// of its entries.
	groups := map[string][]*Entry{}
	var dirs []string
	for _, en := range entries {
		d := parentOf(en.Path)
		if _, ok := groups[d]; !ok {
			dirs = append(dirs, d)
		}
		groups[d] = append(groups[d], en)
	}
	sort.Strings(dirs)
	index := []byte(manifestHeaderV2 + "\n")
	var side []byte
	used := make(map[string]bool, len(dirs))
	var data []byte
	buf := make([]byte, 0, 512)
	for _, d := range dirs {
		k, ok := kept[d]
		if ok && !have[k.name] {
			return nil, fmt.Errorf("cannot write the manifest: segment %s of %q is gone", k.name, d)
		}
		if !ok {
			data = data[:0]
			for _, en := range groups[d] {
				data = appendEntry(data, en)
			}
			sum := sha256.Sum256(data)
			k.name = hex.EncodeToString(sum[:])
			if k.sig, ok = dirSig(groups[d], buf); !ok {
				k.sig = "-"
			}
			if !have[k.name] {
				if err := writeSegment(sfd, k.name, data); err != nil {
					return nil, fmt.Errorf("cannot write the manifest: %w", err)
				}
				have[k.name] = true
			}
		}
		index = append(index, k.name+"\n"...)
		side = append(side, k.sig+"\n"...)
		used[k.name] = true
	}
	if err := writeFileAt(destFd, metaDir+"/manifest", func(w io.Writer) error {
		_, err := w.Write(index)
		return err
	}); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(index)
	if err := writeFileAt(destFd, metaDir+"/"+dirsFile, func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "%s %x\n%s", dirsHeader, sum, side)
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
