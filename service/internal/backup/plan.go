package backup

import (
	"sort"
	"strings"
)

// op is how one source entry gets into the new snapshot.
type op uint8

const (
	// opCopy writes the entry from the source (file data, symlink target, special file).
	opCopy op = iota
	// opLink hard-links the entry from the previous snapshot (ext4/xfs); it is copied when the
	// link cannot be made.
	opLink
	// opFollow hard-links a member of a hard link group to the group's first member (leader)
	// in the new snapshot, once every copy is done.
	opFollow
)

func (o op) String() string {
	return [...]string{"copy", "link", "follow"}[o]
}

// action is what has to be done for one non-directory source entry.
type action struct {
	s      *Entry
	op     op
	leader string  // opFollow: snapshot path of the group's leader
	src    *source // the source the entry is read from (set by the executor)
}

// plan is what a run has to do to turn the tree it writes into a copy of the scan. It is
// computed from data alone (makePlan) and carried out by engine.apply.
type plan struct {
	// deletes are the topmost paths the tree holds and the source no longer has (or has with
	// another type), sorted; what is below them goes with them.
	deletes []string
	// dirs are the directories to create, parents first; when resuming, also the unchanged
	// ones (their stray names are removed).
	dirs []*Entry
	// writes are the non-directory entries to write, by parent directory (opCopy, opLink).
	writes map[string][]action
	// follows are the hard link followers to link once writes are done (opFollow).
	follows []action
	// kept are the entries the tree already holds as they are, as they will be stored.
	kept []*Entry
	// dirty are the source directories whose contents or metadata change, deepest first:
	// their metadata is set again after everything below them is written.
	dirty []*Entry
	// want is, when resuming, the names each directory of the snapshot must hold ("" is the
	// snapshot root); names not in it are removed.
	want map[string]map[string]bool

	files, keptFiles, bytes uint64 // entries in the scan, entries kept, bytes to write
	// changed counts the entries other than directories that the run adds, changes or
	// removes against its base: the previous snapshot (prev) or else the tree (known). It
	// means "since the previous snapshot" only when the run does not resume an interrupted one.
	changed uint64
}

// makePlan compares the scan (sorted, parents first) with what the tree is known to hold
// (known) and what the previous snapshot holds (prev: ext4/xfs, nil on btrfs). resumed: the
// tree may hold names no one recorded (an interrupted run, or a previous snapshot only
// partly linked), so directories are cleaned.
// It keeps (and sets the stored hash and flags on) the scan entries it reuses.
func makePlan(known, prev map[string]*Entry, scan []*Entry, resumed bool) *plan {
	p := &plan{writes: map[string][]action{}}
	inSource := make(map[string]*Entry, len(scan))
	if resumed {
		p.want = map[string]map[string]bool{}
	}
	for _, s := range scan {
		inSource[s.Path] = s
		if resumed {
			d, n := splitRel(s.Path)
			if p.want[d] == nil {
				p.want[d] = map[string]bool{}
			}
			p.want[d][n] = true
		}
	}

	// Deletions. Only the topmost of a removed subtree is listed.
	// Deletions; and, when known is the base (no prev), the removals counted as changes.
	var dels []string
	for path, k := range known {
		s, ok := inSource[path]
		if !ok || s.Type != k.Type {
			dels = append(dels, path)
		}
		if prev == nil && k.Type != 'd' && (!ok || s.Type == 'd') {
			p.changed++
		}
	}
	sort.Strings(dels)
	dirty := map[string]bool{}
	for _, d := range dels {
		if n := len(p.deletes); n > 0 && strings.HasPrefix(d, p.deletes[n-1]+"/") {
			continue
		}
		p.deletes = append(p.deletes, d)
		dirty[parentOf(d)] = true
	}
	stored := func(path string, s *Entry) *Entry {
		// What the tree holds for path once the deletions are done.
		k := known[path]
		if k == nil || k.Type != s.Type {
			return nil
		}
		return k
	}

	// A hard link group whose leader (first member) is written again is re-linked as a whole,
	// so the snapshot keeps the source's link structure.
	leaders := map[[2]uint64]string{}
	relink := map[[2]uint64]bool{}
	for _, s := range scan {
		if s.Type == 'f' && s.Nlink > 1 {
			id := [2]uint64{s.Dev, s.Ino}
			if _, ok := leaders[id]; !ok {
				leaders[id] = s.Path
				k := stored(s.Path, s)
				relink[id] = k == nil || !sameSource(k, s)
			}
		}
	}
	clear(leaders)
	for _, s := range scan {
		p.files++
		k := stored(s.Path, s)
		keep := k != nil && sameSource(k, s)
		if s.Type == 'f' && s.Nlink > 1 {
			id := [2]uint64{s.Dev, s.Ino}
			if relink[id] {
				keep = false
			}
			if l, ok := leaders[id]; ok {
				if keep {
					p.kept = append(p.kept, keepEntry(k, s))
					p.keptFiles++
				} else {
					p.follows = append(p.follows, action{s: s, op: opFollow, leader: l})
					dirty[parentOf(s.Path)] = true
					p.countChange(prev, s)
				}
				continue
			}
			leaders[id] = s.Path
		}
		if keep {
			p.kept = append(p.kept, keepEntry(k, s))
			p.keptFiles++
			if s.Type == 'd' && resumed {
				p.dirs = append(p.dirs, s) // still cleaned of stray names below
			}
			continue
		}
		if s.Type == 'd' {
			p.dirs = append(p.dirs, s)
			dirty[s.Path] = true
		} else {
			a := action{s: s, op: opCopy}
			if (s.Type == 'f' || s.Type == 'l') && prev != nil {
				if pv := prev[s.Path]; pv != nil && sameContent(pv, s) {
					a.op = opLink
				}
			}
			if s.Type == 'f' && a.op == opCopy {
				p.bytes += uint64(s.Size)
			}
			p.countChange(prev, s)
			d := parentOf(s.Path)
			p.writes[d] = append(p.writes[d], a)
		}
		dirty[parentOf(s.Path)] = true
	}
	for path, b := range prev {
		if s := inSource[path]; b.Type != 'd' && (s == nil || s.Type == 'd') {
			p.changed++
		}
	}
	for d := range dirty {
		if s, ok := inSource[d]; ok {
			p.dirty = append(p.dirty, s)
		}
	}
	sort.Slice(p.dirty, func(i, j int) bool { return p.dirty[i].Path > p.dirty[j].Path })
	return p
}

// countChange counts s, a non-directory the run writes, unless the previous snapshot (prev,
// ext4/xfs: the tree starts empty there) holds it as it is.
func (p *plan) countChange(prev map[string]*Entry, s *Entry) {
	if pv := prev[s.Path]; pv == nil || !sameContent(pv, s) {
		p.changed++
	}
}

func parentOf(p string) string {
	d, _ := splitRel(p)
	return d
}

// keepEntry is s as stored: the source's stat with the stored hash and flags.
// It reuses s (the scan's entry, owned by the run) to spare an allocation per entry.
func keepEntry(k, s *Entry) *Entry {
	if s.hasFlag(flagAncestor) {
		en := *k
		return &en
	}
	s.Hash, s.Flags, s.Blocks = k.Hash, k.Flags, k.Blocks
	if strings.IndexByte(s.Flags, flagChanging) >= 0 {
		s.Flags = strings.ReplaceAll(s.Flags, string(flagChanging), "")
	}
	return s
}
