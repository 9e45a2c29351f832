package backup

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

const manifestHeader = "plugvault-manifest 1"

// blocksField starts the optional last field of a regular file's line: its block hashes in
// hex. Readers that predate it ignore what follows the path, so the header stays at 1.
const blocksField = "blocks="

// Manifest flags.
const (
	flagOwner    = 'o' // owner could not be preserved
	flagXattr    = 'x' // some xattrs could not be preserved
	flagChanging = 'c' // content kept changing while read: copy again next time
	flagAncestor = 'a' // a directory above a source: not backed up itself, its times are not tracked
)

// Entry is one manifest line: a source entry as it was stored in a snapshot.
type Entry struct {
	Path  string // relative to the snapshot root, "/"-separated
	Type  byte   // f d l c b p s
	Mode  uint32 // permission bits (07777)
	UID   uint32
	GID   uint32
	Size  int64
	Mtime int64 // ns
	Ctime int64 // ns, of the source
	Ino   uint64
	Dev   uint64
	Nlink uint32
	Rdev  uint64
	Flags string // "" or flag letters
	Hash  string // hex SHA-256 or ""
	Link  string // symlink target
	// Blocks are the content's block hashes (regular files of at least blockMin bytes): the
	// first blockSumLen bytes of the SHA-256 of each blockSize block, concatenated.
	Blocks string
}

// entryFromStat fills an Entry from a stat result.
func entryFromStat(p string, st *unix.Stat_t) Entry {
	return Entry{
		Path: p, Type: fileType(st.Mode), Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid,
		Size: st.Size, Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano(), Ino: st.Ino, Dev: st.Dev,
		Nlink: uint32(st.Nlink), Rdev: st.Rdev,
	}
}

// hasFlag reports whether e carries flag f.
func (e *Entry) hasFlag(f byte) bool { return strings.IndexByte(e.Flags, f) >= 0 }

func (e *Entry) addFlag(f byte) {
	if !e.hasFlag(f) {
		e.Flags += string(f)
	}
}

// sameSource reports whether a stored entry k still describes source entry s, so nothing has
// to be written for it.
func sameSource(k, s *Entry) bool {
	if k.Type != s.Type || k.Mode != s.Mode || k.UID != s.UID || k.GID != s.GID {
		return false
	}
	if k.hasFlag(flagChanging) {
		return false
	}
	if s.hasFlag(flagAncestor) {
		return k.Type == 'd'
	}
	switch s.Type {
	case 'd':
		return k.Mtime == s.Mtime && k.Ctime == s.Ctime
	case 'l':
		return k.Link == s.Link && k.Mtime == s.Mtime
	case 'c', 'b':
		return k.Rdev == s.Rdev && k.Mtime == s.Mtime
	case 'p', 's':
		return k.Mtime == s.Mtime
	}
	return k.Size == s.Size && k.Mtime == s.Mtime && k.Ctime == s.Ctime && k.Ino == s.Ino
}

// sameStored reports whether two entries would be stored the same (the times of ancestors
// are not tracked).
func sameStored(a, b *Entry) bool {
	if a.hasFlag(flagAncestor) && b.hasFlag(flagAncestor) {
		x, y := *a, *b
		x.Mtime, x.Ctime, y.Mtime, y.Ctime = 0, 0, 0, 0
		return x == y
	}
	return *a == *b
}

// sameContent reports whether k can serve as s's content (a hard link on ext4): data and
// symlink target equal, metadata too (a linked inode must never be changed).
func sameContent(k, s *Entry) bool {
	return sameSource(k, s)
}

func appendEntry(b []byte, e *Entry) []byte {
	b = append(b, e.Type, ' ')
	b = strconv.AppendUint(b, uint64(e.Mode), 8)
	for _, v := range []uint64{uint64(e.UID), uint64(e.GID)} {
		b = append(b, ' ')
		b = strconv.AppendUint(b, v, 10)
	}
	for _, v := range []int64{e.Size, e.Mtime, e.Ctime} {
		b = append(b, ' ')
		b = strconv.AppendInt(b, v, 10)
	}
	for _, v := range []uint64{e.Ino, e.Dev, uint64(e.Nlink), e.Rdev} {
		b = append(b, ' ')
		b = strconv.AppendUint(b, v, 10)
	}
	b = append(b, ' ')
	if e.Flags == "" {
		b = append(b, '-')
	} else {
		b = append(b, e.Flags...)
	}
	b = append(b, ' ')
	if e.Hash == "" {
		b = append(b, '-')
	} else {
		b = append(b, e.Hash...)
	}
	b = append(b, ' ')
	b = strconv.AppendQuote(b, e.Path)
	if e.Type == 'l' {
		b = append(b, ' ')
		b = strconv.AppendQuote(b, e.Link)
	}
	if e.Blocks != "" {
		b = append(b, " "+blocksField...)
		b = hex.AppendEncode(b, []byte(e.Blocks))
	}
	return append(b, '\n')
}

// nextQuoted splits a Go-quoted string off the front of s.
func nextQuoted(s string) (string, string, error) {
	q, err := strconv.QuotedPrefix(s)
	if err != nil {
		return "", "", err
	}
	v, err := strconv.Unquote(q)
	if err != nil {
		return "", "", err
	}
	return v, strings.TrimPrefix(s[len(q):], " "), nil
}

func parseEntry(line string) (Entry, error) {
	var e Entry
	f := strings.SplitN(line, " ", 14)
	if len(f) != 14 || len(f[0]) != 1 {
		return e, fmt.Errorf("malformed entry")
	}
	e.Type = f[0][0]
	nums := make([]uint64, 10)
	for i := 1; i <= 10; i++ {
		base := 10
		if i == 1 {
			base = 8
		}
		if i >= 4 && i <= 6 {
			v, err := strconv.ParseInt(f[i], 10, 64)
			if err != nil {
				return e, err
			}
			nums[i-1] = uint64(v)
			continue
		}
		v, err := strconv.ParseUint(f[i], base, 64)
		if err != nil {
			return e, err
		}
		nums[i-1] = v
	}
	e.Mode, e.UID, e.GID = uint32(nums[0]), uint32(nums[1]), uint32(nums[2])
	e.Size, e.Mtime, e.Ctime = int64(nums[3]), int64(nums[4]), int64(nums[5])
	e.Ino, e.Dev, e.Nlink, e.Rdev = nums[6], nums[7], uint32(nums[8]), nums[9]
	if f[11] != "-" {
		e.Flags = strings.Clone(f[11])
	}
	var hash string
	if f[12] != "-" {
		hash = f[12]
	}
	p, rest, err := nextQuoted(f[13])
	if err != nil {
		return e, err
	}
	var link string
	if e.Type == 'l' {
		if link, rest, err = nextQuoted(rest); err != nil {
			return e, err
		}
	}
	e.Path, e.Hash, e.Link = ownStrings(p, hash, link)
	if h, ok := strings.CutPrefix(rest, blocksField); ok && e.Type == 'f' {
		b, err := hex.DecodeString(h)
		if err != nil || len(b)%blockSumLen != 0 {
			return e, fmt.Errorf("bad block hashes")
		}
		e.Blocks = string(b)
	}
	if !validRel(e.Path) || e.Path == "" {
		return e, fmt.Errorf("bad path %q", e.Path)
	}
	return e, nil
}

// ownStrings returns copies of a, b and c that share one allocation of their own. Strings
// cut from a manifest line would keep the whole line alive as long as the entry: a manifest
// is held for a whole run, so its entries keep only their own bytes.
func ownStrings(a, b, c string) (string, string, string) {
	var sb strings.Builder
	sb.Grow(len(a) + len(b) + len(c))
	sb.WriteString(a)
	sb.WriteString(b)
	sb.WriteString(c)
	s := sb.String()
	return s[:len(a)], s[len(a) : len(a)+len(b)], s[len(a)+len(b):]
}

// writeManifest writes entries (parents before children) in the manifest format.
func writeManifest(w io.Writer, entries []*Entry) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	bw.WriteString(manifestHeader + "\n")
	buf := make([]byte, 0, 512)
	for _, e := range entries {
		buf = appendEntry(buf[:0], e)
		if _, err := bw.Write(buf); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// readManifest parses a manifest into a map by path.
func readManifest(r io.Reader) (map[string]*Entry, error) {
	m := make(map[string]*Entry)
	var slab []Entry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<16), 1<<24)
	first := true
	line := 0
	for sc.Scan() {
		line++
		t := sc.Text()
		if first {
			first = false
			if t != manifestHeader {
				return nil, fmt.Errorf("not a plugvault manifest")
			}
			continue
		}
		e, err := parseEntry(t)
		if err != nil {
			return nil, fmt.Errorf("manifest line %d: %w", line, err)
		}
		// Entries are allocated a slab at a time: one allocation per 1024 entries, none wasted
		// to size classes.
		if len(slab) == cap(slab) {
			slab = make([]Entry, 0, 1024)
		}
		slab = append(slab, e)
		m[e.Path] = &slab[len(slab)-1]
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if first {
		return nil, fmt.Errorf("empty manifest")
	}
	return m, nil
}

// applyJournal overlays journal lines on m. A torn last line (a crash while appending) is
// ignored. Consecutive removals are applied in one pass over m.
func applyJournal(m map[string]*Entry, data []byte) {
	dels := map[string]bool{}
	flush := func() {
		dropRemoved(m, dels)
		clear(dels)
	}
	for _, ln := range bytes.Split(data, []byte{'\n'}) {
		t := string(ln)
		if t == "" || t == beginLine {
			continue
		}
		if strings.HasPrefix(t, "del ") {
			if p, _, err := nextQuoted(t[4:]); err == nil {
				dels[p] = true
			}
			continue
		}
		flush()
		if e, err := parseEntry(t); err == nil {
			m[e.Path] = &e
		}
	}
	flush()
}

// dropRemoved deletes from m the paths in gone and everything below them.
func dropRemoved(m map[string]*Entry, gone map[string]bool) {
	if len(gone) == 0 {
		return
	}
	for k := range m {
		for p := k; ; {
			if gone[p] {
				delete(m, k)
				break
			}
			i := strings.LastIndexByte(p, '/')
			if i < 0 {
				break
			}
			p = p[:i]
		}
	}
}

// sortedEntries returns m's entries sorted by path.
func sortedEntries(m map[string]*Entry) []*Entry {
	out := make([]*Entry, 0, len(m))
	for _, e := range m {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}
