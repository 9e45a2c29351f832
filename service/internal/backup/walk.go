package backup

import (
	"bytes"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// source is one configured source directory.
type source struct {
	abs    string // absolute, clean
	prefix string // abs without the leading "/" ("" for "/"): its path in a snapshot
	fd     int
}

// holds reports whether snapshot path p is the source or below it.
func (s *source) holds(p string) bool {
	return s.prefix == "" || p == s.prefix || strings.HasPrefix(p, s.prefix+"/")
}

// rel returns the path of snapshot path p relative to the source root ("" for the root).
func (s *source) rel(p string) string {
	if s.prefix == "" {
		return p
	}
	if p == s.prefix {
		return ""
	}
	return p[len(s.prefix)+1:]
}

// openSources opens the job's sources, dropping any nested inside another.
func openSources(paths []string) ([]*source, error) {
	var clean []string
	for _, p := range paths {
		if !strings.HasPrefix(p, "/") {
			return nil, fmt.Errorf("cannot use source %q: not an absolute path", p)
		}
		clean = append(clean, path.Clean(p))
	}
	sort.Strings(clean)
	var out []*source
	for _, p := range clean {
		nested := false
		for _, s := range out {
			if s.abs == "/" || p == s.abs || strings.HasPrefix(p, s.abs+"/") {
				nested = true
			}
		}
		if nested {
			continue
		}
		fd, err := openDirPath(p)
		if err != nil {
			closeSources(out)
			return nil, fmt.Errorf("cannot open source %q: %w", p, err)
		}
		out = append(out, &source{abs: p, prefix: strings.TrimPrefix(p, "/"), fd: fd})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("cannot back up: no sources")
	}
	return out, nil
}

func closeSources(ss []*source) {
	for _, s := range ss {
		unix.Close(s.fd)
	}
}

// scanResult is the outcome of a walk.
type scanResult struct {
	entries  []*Entry // depth first in name order (parents before children)
	files    uint64
	bytes    uint64
	warnings []string
	// sparse is the allocated size of each sparse regular file (fewer bytes allocated than
	// its size).
	sparse map[string]int64
	// dirSigs are the signatures (dirSig) of the directories read, when asked (walker.sigs).
	dirSigs map[string]string
}

// walker is a parallel stat walk of the sources.
type walker struct {
	sources   []*source
	excl      *excluder
	skipDev   uint64    // the drive's device: never descend into it
	skipDir   [2]uint64 // st_dev and st_ino of the target directory: never descend into it
	skipPath  string    // the target mount point
	workers   int
	sigs      bool // sign each directory's entries (scanResult.dirSigs)
	mu        sync.Mutex
	res       scanResult
	byDir     map[string][]*Entry // directory -> its entries in name order
	nEntries  atomic.Uint64
	onEntries func(n uint64) // progress during the scan
}

func (w *walker) warn(format string, args ...any) {
	w.mu.Lock()
	w.res.warnings = append(w.res.warnings, fmt.Sprintf(format, args...))
	w.mu.Unlock()
}

// walk stats every entry below the sources.
func (w *walker) walk() (*scanResult, error) {
	seen := map[string]bool{}
	w.byDir = map[string][]*Entry{}
	for _, s := range w.sources {
		// The source's ancestors become directories of the snapshot, with their metadata.
		parts := strings.Split(s.prefix, "/")
		for j := 1; j < len(parts); j++ {
			p := strings.Join(parts[:j], "/")
			if seen[p] {
				continue
			}
			seen[p] = true
			// Stat, not Lstat: opening the source followed a symlinked ancestor (/home ->
			// /data/home) already, and it is stored as a directory with the metadata of the
			// directory it leads to (a symlink's mode is 0777).
			var st unix.Stat_t
			if err := unix.Stat("/"+p, &st); err != nil {
				return nil, fmt.Errorf("cannot stat %q: %w", "/"+p, err)
			}
			e := entryFromStat(p, &st)
			e.Type, e.Nlink = 'd', 1
			e.Ino, e.Size = 0, 0
			e.addFlag(flagAncestor)
			w.addChild(&e)
		}
		if s.prefix != "" {
			var st unix.Stat_t
			if err := unix.Fstat(s.fd, &st); err != nil {
				return nil, fmt.Errorf("cannot stat %q: %w", s.abs, err)
			}
			e := entryFromStat(s.prefix, &st)
			w.addChild(&e)
		}
	}
	sem := make(chan struct{}, w.workers)
	var wg sync.WaitGroup
	var visit func(si int, rel string, x *scopedExcluder)
	visit = func(si int, rel string, x *scopedExcluder) {
		defer wg.Done()
		sem <- struct{}{}
		subdirs, sx := w.readDir(si, rel, x)
		<-sem
		for _, d := range subdirs {
			wg.Add(1)
			go visit(si, d, sx)
		}
	}
	for i := range w.sources {
		wg.Add(1)
		go visit(i, "", &scopedExcluder{base: w.excl})
	}
	wg.Wait()
	// Depth-first in name order: parents before children, the same order every run, and no
	// global sort of every path.
	var emit func(dir string)
	emit = func(dir string) {
		for _, e := range w.byDir[dir] {
			w.res.entries = append(w.res.entries, e)
			if e.Type == 'd' {
				emit(e.Path)
			}
		}
	}
	for _, l := range w.byDir {
		if !sort.SliceIsSorted(l, func(i, j int) bool { return l[i].Path < l[j].Path }) {
			sort.Slice(l, func(i, j int) bool { return l[i].Path < l[j].Path })
		}
	}
	emit("")
	w.byDir = nil
	return &w.res, nil
}

// addChild files an entry under its parent directory (before the workers start).
func (w *walker) addChild(e *Entry) {
	d := parentOf(e.Path)
	w.byDir[d] = append(w.byDir[d], e)
}

// readDir stats the entries of one source directory and returns its subdirectories to visit.
func (w *walker) readDir(si int, rel string, x *scopedExcluder) ([]string, *scopedExcluder) {
	s := w.sources[si]
	dirAbs := path.Join(s.abs, rel)
	fd, err := openDirBeneath(s.fd, rel)
	if err != nil {
		if err == unix.ENOENT {
			w.warn("%s: vanished during the backup", dirAbs)
		} else {
			w.warn("%s: cannot open: %v", dirAbs, err)
		}
		return nil, x
	}
	defer unix.Close(fd)
	names, err := readDirNames(fd)
	if err != nil {
		w.warn("%s: cannot read: %v", dirAbs, err)
		return nil, x
	}
	sort.Strings(names)
	cache := false
	for _, n := range names {
		switch n {
		case "CACHEDIR.TAG":
			cache = isCacheTag(fd)
		case IgnoreFile:
			if data, err := readSmall(fd, n, 64<<10); err == nil {
				x = x.with(parseIgnore(dirAbs, data))
			}
		}
	}
	// The directory's entries share one allocation; the pointers stay valid as the slab
	// never grows past its capacity.
	slab := make([]Entry, 0, len(names))
	local := make([]*Entry, 0, len(names))
	dirRel := joinRel(s.prefix, rel)
	var subdirs []string
	var files, bytes uint64
	var sparse map[string]int64
	for _, n := range names {
		abs := path.Join(dirAbs, n)
		if cache && n != "CACHEDIR.TAG" {
			continue
		}
		if x.excluded(abs, n) || abs == w.skipPath || (dirAbs == "/" && n == metaDir) {
			continue
		}
		st, err := lstatAt(fd, n)
		if err != nil {
			if err != unix.ENOENT {
				w.warn("%s: cannot stat: %v", abs, err)
			}
			continue
		}
		e := entryFromStat(joinRel(dirRel, n), &st)
		switch e.Type {
		case 'l':
			if e.Link, err = readlinkAt(fd, n); err != nil {
				if err != unix.ENOENT {
					w.warn("%s: cannot read link: %v", abs, err)
				}
				continue
			}
		case 'd':
			if (w.skipDev != 0 && st.Dev == w.skipDev) || [2]uint64{st.Dev, st.Ino} == w.skipDir {
				continue
			}
			subdirs = append(subdirs, joinRel(rel, n))
		case 'f':
			bytes += uint64(st.Size)
			if alloc := st.Blocks * 512; alloc < st.Size {
				if sparse == nil {
					sparse = map[string]int64{}
				}
				sparse[e.Path] = alloc
			}
		case '?':
			continue
		}
		files++
		slab = append(slab, e)
		local = append(local, &slab[len(slab)-1])
	}
	var sig string
	signed := false
	if w.sigs {
		sig, signed = dirSig(local, make([]byte, 0, 512))
	}
	w.mu.Lock()
	if len(local) > 0 {
		w.byDir[dirRel] = local
	}
	if signed {
		if w.res.dirSigs == nil {
			w.res.dirSigs = map[string]string{}
		}
		w.res.dirSigs[dirRel] = sig
	}
	w.res.files += files
	w.res.bytes += bytes
	for p, n := range sparse {
		if w.res.sparse == nil {
			w.res.sparse = map[string]int64{}
		}
		w.res.sparse[p] = n
	}
	w.mu.Unlock()
	if w.onEntries != nil {
		w.onEntries(w.nEntries.Add(uint64(len(local))))
	}
	return subdirs, x
}

// isCacheTag reports whether CACHEDIR.TAG in dir carries the cache directory signature.
func isCacheTag(dir int) bool {
	data, err := readSmall(dir, "CACHEDIR.TAG", len(cacheDirSignature))
	return err == nil && bytes.HasPrefix(data, []byte(cacheDirSignature))
}

// readSmall reads up to max bytes of the regular file name in dir, never following a symlink
// and never blocking on a fifo.
func readSmall(dir int, name string, max int) ([]byte, error) {
	fd, err := unix.Openat(dir, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("not a regular file")
	}
	buf := make([]byte, max)
	n, _ := f.Read(buf)
	return buf[:n], nil
}
