package backup

// loadBase reads what the destination is known to hold (and what may be linked from),
// overlaid with the journal of an interrupted run. The segments of a btrfs tree's manifest
// are read later, by resolveBase, once the scan says which directories changed; an
// interrupted run reads them all here.
func (e *engine) loadBase(prevName string) {
	e.known = map[string]*Entry{}
	e.dest.load(e, prevName)
	if data, err := readFileAt(e.destFd, metaDir+"/journal", 1<<30); err == nil && len(data) > 0 {
		e.resolveBase(nil)
		applyJournal(e.known, data)
		e.resumed = true
		e.baseIsManifest = false
	}
}

// resolveBase reads the segments of the tree's manifest (e.base, opened by the destination)
// that the scan does not vouch for. A directory whose scan has the signature its segment was
// written with (dirSig) keeps that segment without reading it (e.kept), and its scanned
// entries stand for what the tree holds: a no-change run reads one index instead of a file per
// directory. scan nil: read every segment. A segment that cannot be read makes the tree
// untrusted, as a damaged manifest does.
func (e *engine) resolveBase(scan *scanResult) {
	x := e.base
	if x == nil || x.resolved {
		return
	}
	x.resolved = true
	used := make([]bool, len(x.refs))
	var kept map[string]keptSegment
	if scan != nil && x.sigs != nil {
		kept = map[string]keptSegment{}
		for dir, sig := range scan.dirSigs {
			if i, ok := x.sigs[sig]; ok && !used[i] {
				used[i] = true
				kept[dir] = keptSegment{ref: x.refs[i], sig: sig}
			}
		}
	}
	var rest []int
	for i, u := range used {
		if !u {
			rest = append(rest, i)
		}
	}
	if err := x.readInto(e.known, rest); err != nil {
		e.warn("the working tree's manifest is damaged (%v): copying everything", err)
		e.known = map[string]*Entry{}
		e.resumed = true
		e.baseIsManifest = false
		return
	}
	if len(kept) > 0 {
		for _, s := range scan.entries {
			if _, ok := kept[parentOf(s.Path)]; ok {
				e.known[s.Path] = s
			}
		}
	}
	e.kept = kept
}

// fillKept readies the kept directories for the manifest. One in which the run wrote, removed
// or re-flagged something after all (a directory's entry gets a flag when setting its
// metadata again partly fails) has its segment read, so that the entries it kept get their
// hashes back, and is written again.
func (e *engine) fillKept(p *plan, scan *scanResult) error {
	if len(e.kept) == 0 {
		return nil
	}
	touched := map[string]bool{}
	mark := func(d string) {
		if _, ok := e.kept[d]; ok {
			touched[d] = true
		}
	}
	for d := range p.writes {
		mark(d)
	}
	for _, a := range p.follows {
		mark(parentOf(a.s.Path))
	}
	for _, d := range p.deletes {
		mark(parentOf(d))
	}
	for _, d := range p.dirs {
		mark(parentOf(d.Path))
	}
	for _, d := range p.dirty {
		if d.Flags != "" {
			mark(parentOf(d.Path))
		}
	}
	if len(touched) == 0 {
		return nil
	}
	stored := map[string]*Entry{}
	for d := range touched {
		seg, err := e.base.read(e.kept[d].ref)
		if err != nil {
			return err
		}
		for i := range seg {
			stored[seg[i].Path] = &seg[i]
		}
		delete(e.kept, d)
	}
	for _, s := range scan.entries {
		if !touched[parentOf(s.Path)] {
			continue
		}
		// A kept entry is the scan's own (it stood for the stored one).
		if en, k := e.out[s.Path], stored[s.Path]; en == s && k != nil {
			en.Hash, en.Blocks = k.Hash, k.Blocks
		}
	}
	return nil
}

// closeBase closes the tree's manifest index, if the destination opened one.
func (e *engine) closeBase() {
	if e.base != nil {
		e.base.close()
	}
}
