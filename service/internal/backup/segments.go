package backup

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// A segmented manifest (btrfs) shares what did not change with the previous snapshot: the
// entries of each directory (its children's lines) are a segment named by its SHA-256, and
// .plugvault/manifest is an index, "plugvault-manifest 3" and then one segment a line. A run
// writes only the segments that do not exist yet (the directories that changed), all of them
// appended to one pack file in .plugvault/m/, and the index; the working subvolume keeps the
// unchanged segments and packs in place, so a snapshot shares them with the one before. One
// pack per run instead of a file per changed directory: on btrfs every file costs metadata
// (inode, directory items, COW-ed leaves, twice with DUP), which made a 1%-change run's
// manifest cost more than its data.
//
// An index line is "<name>" (format 2, which format 3 reads: the segment is the file
// m/<name>) or "<name> <pack> <offset> <length>" (the segment is those bytes of m/<pack>,
// pack "p-<SHA-256 of the pack>"). Format 2 indexes, and a format 3 index's loose segments,
// are read as they are; a loose segment goes into a pack when its directory changes. A flat
// manifest (format 1) is read as before.
const (
	manifestHeaderV2 = "plugvault-manifest 2"
	manifestHeaderV3 = "plugvault-manifest 3"
	segmentDir       = "m"
	packPrefix       = "p-"
	// maxSegment bounds one segment (a directory's lines), as readFileAt bounds a file.
	maxSegment = 1 << 30
)

// segRef says where a segment is.
type segRef struct {
	name   string // the SHA-256 of its bytes, hex
	pack   string // "": the file m/<name>; else the pack m/<pack> holds it
	off, n int64  // its bytes in the pack
}

// file is the name of the file below the segment directory that holds the segment.
func (r segRef) file() string {
	if r.pack != "" {
		return r.pack
	}
	return r.name
}

func isHexName(s string) bool {
	return len(s) == 2*sha256.Size && strings.Trim(s, "0123456789abcdef") == ""
}

// parseIndex reads the body of a segmented index (after its header line).
func parseIndex(body []byte) ([]segRef, error) {
	var refs []segRef
	for ln := range bytes.Lines(body) {
		line := string(bytes.TrimSuffix(ln, []byte{'\n'}))
		f := strings.Split(line, " ")
		r := segRef{name: f[0]}
		ok := isHexName(r.name)
		if ok && len(f) == 4 {
			r.pack = f[1]
			var err1, err2 error
			r.off, err1 = strconv.ParseInt(f[2], 10, 64)
			r.n, err2 = strconv.ParseInt(f[3], 10, 64)
			ok = strings.HasPrefix(r.pack, packPrefix) && isHexName(r.pack[len(packPrefix):]) &&
				err1 == nil && err2 == nil && r.off >= 0 && r.n >= 0 && r.n <= maxSegment
		} else if len(f) != 1 {
			ok = false
		}
		if !ok {
			return nil, fmt.Errorf("bad manifest index line %q", line)
		}
		refs = append(refs, r)
	}
	return refs, nil
}

// readManifestAt reads the manifest rel (".plugvault/manifest") below root, flat or segmented.
func readManifestAt(root int, rel string) (map[string]*Entry, error) {
	x, flat, err := openManifest(root, rel)
	if err != nil || x == nil {
		return flat, err
	}
	defer x.close()
	all := make([]int, len(x.refs))
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
	sfd  int      // the segment directory
	refs []segRef // the segments, one per directory, in directory order
	// sigs maps a directory's signature (dirSig) to the index of its segment, from the
	// manifest's sidecar (dirsFile); nil when there is none that goes with this index.
	sigs     map[string]int
	resolved bool // engine.resolveBase ran

	mu    sync.Mutex
	packs map[string]openPack // the packs opened so far
}

func (x *segIndex) close() {
	x.closePacks()
	unix.Close(x.sfd)
}

func (x *segIndex) closePacks() {
	for _, p := range x.packs {
		unix.Close(p.fd)
	}
	x.packs = nil
}

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
	body, ok := indexBody(data)
	if !ok {
		m, err := readManifest(bytes.NewReader(data))
		return nil, m, err
	}
	x := &segIndex{}
	if x.refs, err = parseIndex(body); err != nil {
		return nil, nil, err
	}
	dir, _ := splitRel(rel)
	if x.sfd, err = openDirBeneath(root, joinRel(dir, segmentDir)); err != nil {
		return nil, nil, fmt.Errorf("cannot open the manifest's segments: %w", err)
	}
	if side, err := readFileAt(root, joinRel(dir, dirsFile), 1<<30); err == nil {
		x.sigs = parseDirs(side, data, len(x.refs))
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

// readInto reads the segments with the given indexes (in parallel: they are spread over
// the drive, and a cold cache then costs a few round trips at once instead of one per
// directory) and adds their entries to m.
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
				segs[i], errs[i] = x.read(x.refs[which[i]])
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

// read reads, checks and parses one segment.
func (x *segIndex) read(r segRef) ([]Entry, error) {
	data, err := x.bytes(r)
	if err != nil {
		return nil, fmt.Errorf("cannot read manifest segment %s: %w", r.name, err)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != r.name {
		return nil, fmt.Errorf("manifest segment %s is damaged", r.name)
	}
	out := make([]Entry, 0, bytes.Count(data, []byte{'\n'}))
	for i, ln := range bytes.Split(data, []byte{'\n'}) {
		if len(ln) == 0 {
			continue
		}
		e, err := parseEntry(string(ln))
		if err != nil {
			return nil, fmt.Errorf("manifest segment %s line %d: %w", r.name, i+1, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// bytes reads a segment's bytes, unchecked.
func (x *segIndex) bytes(r segRef) ([]byte, error) {
	if r.pack == "" {
		return readFileAt(x.sfd, r.name, maxSegment)
	}
	fd, size, err := x.pack(r.pack)
	if err != nil {
		return nil, err
	}
	if r.off > size || r.n > size-r.off {
		// Before the buffer: an index line must not make a reader allocate what no pack holds.
		return nil, fmt.Errorf("pack %s is shorter than its index says", r.pack)
	}
	buf := make([]byte, r.n)
	n, err := preadFull(fd, buf, r.off)
	if err != nil {
		return nil, err
	}
	if n < len(buf) {
		return nil, fmt.Errorf("pack %s is shorter than its index says", r.pack)
	}
	return buf, nil
}

// openPack is a pack opened by a segIndex, and its size.
type openPack struct {
	fd   int
	size int64
}

// pack opens the pack name once; it returns its fd and size.
func (x *segIndex) pack(name string) (int, int64, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if p, ok := x.packs[name]; ok {
		return p.fd, p.size, nil
	}
	fd, err := openBeneath(x.sfd, name, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return -1, 0, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return -1, 0, fmt.Errorf("pack %s is not a regular file", name)
	}
	if x.packs == nil {
		x.packs = map[string]openPack{}
	}
	x.packs[name] = openPack{fd, st.Size}
	return fd, st.Size, nil
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

// keptSegment is a directory whose segment a run keeps without reading it
// (engine.resolveBase): where the segment is and the directory's signature.
type keptSegment struct {
	ref segRef
	sig string
}

// maxPacks bounds the packs an index refers to. A run moves into its own pack the live
// segments of every pack less than half of which is live, and of the smallest packs while
// there would be more than maxPacks: the packs take at most about twice the space of what
// the manifest holds, and a reader opens a handful of files.
const maxPacks = 16

// writeSegmented writes entries as a segmented manifest below destFd: the segments that do
// not exist yet, in one new pack, then the index, then its sidecar (dirsFile). The
// directories in kept keep their segment as it is, unless its pack is compacted. It syncs
// nothing (runEngine syncs the filesystem before the journal goes). It returns the files of
// the segment directory no longer referenced, to remove once the index is durable.
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
	// The segments of the index in place (the previous run's): a directory whose lines come
	// out the same, although the scan did not vouch for it, keeps its segment too.
	known := map[string]segRef{}
	if data, err := readFileAt(mfd, "manifest", 1<<30); err == nil {
		for _, r := range indexRefs(data) {
			if have[r.file()] {
				known[r.name] = r
			}
		}
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
	pw := &packWriter{sfd: sfd, fd: -1}
	defer pw.abort()
	refs := make([]segRef, len(dirs))
	side := make([]byte, 0, len(dirs)*(2*dirSigLen+1))
	var data []byte
	buf := make([]byte, 0, 512)
	for i, d := range dirs {
		k, ok := kept[d]
		if ok && !have[k.ref.file()] {
			return nil, fmt.Errorf("cannot write the manifest: segment %s of %q is gone", k.ref.name, d)
		}
		if !ok {
			data = data[:0]
			for _, en := range groups[d] {
				data = appendEntry(data, en)
			}
			sum := sha256.Sum256(data)
			name := hex.EncodeToString(sum[:])
			if k.sig, ok = dirSig(groups[d], buf); !ok {
				k.sig = "-"
			}
			if k.ref, ok = known[name]; !ok {
				if k.ref, err = pw.add(name, data); err != nil {
					return nil, fmt.Errorf("cannot write the manifest: %w", err)
				}
			}
		}
		refs[i] = k.ref
		side = append(side, k.sig+"\n"...)
	}
	if err := compactPacks(sfd, refs, pw); err != nil {
		return nil, fmt.Errorf("cannot write the manifest: %w", err)
	}
	pack, err := pw.finish()
	if err != nil {
		return nil, fmt.Errorf("cannot write the manifest: %w", err)
	}
	index := make([]byte, 0, len(manifestHeaderV3)+1+len(refs)*(4*sha256.Size+24))
	index = append(index, manifestHeaderV3+"\n"...)
	used := map[string]bool{}
	for i := range refs {
		r := &refs[i]
		if r.pack == pendingPack {
			r.pack = pack
		}
		index = append(index, r.name...)
		if r.pack != "" {
			index = fmt.Appendf(index, " %s %d %d", r.pack, r.off, r.n)
		}
		index = append(index, '\n')
		used[r.file()] = true
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

// indexRefs is the segments of a segmented index (whole file), nil for anything else.
func indexRefs(data []byte) []segRef {
	body, ok := indexBody(data)
	if !ok {
		return nil
	}
	refs, _ := parseIndex(body)
	return refs
}

// indexBody is a segmented index (format 3 or 2) without its header line.
func indexBody(data []byte) ([]byte, bool) {
	if body, ok := bytes.CutPrefix(data, []byte(manifestHeaderV3+"\n")); ok {
		return body, true
	}
	return bytes.CutPrefix(data, []byte(manifestHeaderV2+"\n"))
}

// compactPacks moves into the new pack (pw) the segments of refs that are in packs to
// compact (see maxPacks). A segment that cannot be read or is damaged stays where it is (its
// pack with it): compaction saves space, it does not repair.
func compactPacks(sfd int, refs []segRef, pw *packWriter) error {
	live := map[string]int64{}
	for _, r := range refs {
		if r.pack != "" && r.pack != pendingPack {
			live[r.pack] += r.n
		}
	}
	type pack struct {
		name       string
		size, live int64
	}
	var keep []pack
	move := map[string]bool{}
	for name, l := range live {
		st, err := lstatAt(sfd, name)
		if err != nil {
			continue // gone: the caller's check of kept segments says so
		}
		if l*2 < st.Size {
			move[name] = true
		} else {
			keep = append(keep, pack{name, st.Size, l})
		}
	}
	sort.Slice(keep, func(i, j int) bool {
		return keep[i].size < keep[j].size || keep[i].size == keep[j].size && keep[i].name < keep[j].name
	})
	for i := 0; len(keep)-i >= maxPacks; i++ {
		move[keep[i].name] = true
	}
	if len(move) == 0 {
		return nil
	}
	x := &segIndex{sfd: sfd}
	defer x.closePacks()
	for i, r := range refs {
		if !move[r.pack] {
			continue
		}
		data, err := x.bytes(r)
		if err != nil {
			continue
		}
		if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != r.name {
			continue
		}
		nr, err := pw.add(r.name, data)
		if err != nil {
			return err
		}
		refs[i] = nr
	}
	return nil
}

// pendingPack stands for the pack a run is writing until it has its name.
const pendingPack = "*"

// packWriter writes a run's new segments into one pack: a temporary file, renamed to
// p-<its SHA-256> when complete.
type packWriter struct {
	sfd, fd int // fd -1 until the first segment
	h       hash.Hash
	off     int64 // bytes written to fd
	buf     []byte
}

const packTemp = ".tmp-pack"

// add appends a segment and says where it will be.
func (p *packWriter) add(name string, data []byte) (segRef, error) {
	if p.fd < 0 {
		fd, err := unix.Openat(p.sfd, packTemp, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return segRef{}, err
		}
		p.fd, p.h = fd, sha256.New()
	}
	r := segRef{name: name, pack: pendingPack, off: p.off + int64(len(p.buf)), n: int64(len(data))}
	p.buf = append(p.buf, data...)
	if len(p.buf) >= 1<<20 {
		return r, p.flush()
	}
	return r, nil
}

func (p *packWriter) flush() error {
	if err := pwriteFull(p.fd, p.buf, p.off); err != nil {
		return err
	}
	p.h.Write(p.buf)
	p.off += int64(len(p.buf))
	p.buf = p.buf[:0]
	return nil
}

// finish names the pack, "" when no segment was added.
func (p *packWriter) finish() (string, error) {
	if p.fd < 0 {
		return "", nil
	}
	if err := p.flush(); err != nil {
		return "", err
	}
	unix.Close(p.fd)
	p.fd = -1
	name := packPrefix + hex.EncodeToString(p.h.Sum(nil))
	if err := unix.Renameat(p.sfd, packTemp, p.sfd, name); err != nil {
		_ = unix.Unlinkat(p.sfd, packTemp, 0)
		return "", err
	}
	return name, nil
}

// abort removes an unfinished pack.
func (p *packWriter) abort() {
	if p.fd >= 0 {
		unix.Close(p.fd)
		p.fd = -1
		_ = unix.Unlinkat(p.sfd, packTemp, 0)
	}
}

// removeSegments removes the named files (segments, packs, stray temporary files) of the
// segment directory below destFd.
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
