package backup

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// linkPrevious fills a fresh ext4/xfs partial tree (destRoot) with the previous snapshot
// (prevRoot, whose manifest is prev) before the plan is made: every directory is created with
// the previous snapshot's owner, xattrs, mode and mtime, and every file and symlink is
// hard-linked. It runs while the source is walked (the drive and the source are different
// devices, and on ext4 a hard link per file costs about as much as the walk's lstat), and
// what it returns becomes what the tree is known to hold: the plan then keeps an unchanged
// entry as it is, replaces a changed one by an atomic rename (never writing into the linked
// inode) and deletes a removed one, as it does on a btrfs working tree.
//
// Only the paths wanted reports are placed (the sources and their ancestors), and only
// directories, files and symlinks (special files are created by the plan). The mount guard
// is called as for the plan's writes (guard.go). A link that cannot be made leaves nothing
// behind: the plan links or copies the file itself. strays reports that the tree may hold a
// directory the result does not list (one it could not finish, or a stop: cancelled, full,
// failing drive, guard): the plan must then clean every directory of names the source does
// not have, as after an interrupted run. A failure here is never the run's error: the plan's
// own steps meet it again and report it.
func linkPrevious(ctx context.Context, guard *guardGate, destRoot, prevRoot int, prev map[string]*Entry, wanted func(string) bool, workers int) (placed []*Entry, strays bool) {
	f := &linkFarm{ctx: ctx, guard: guard, destRoot: destRoot, prevRoot: prevRoot, children: map[string][]*Entry{},
		sem: make(chan struct{}, max(workers, 1))}
	for p, en := range prev {
		if (en.Type == 'd' || en.Type == 'f' || en.Type == 'l') && wanted(p) {
			d := parentOf(p)
			f.children[d] = append(f.children[d], en)
		}
	}
	f.dir("", nil)
	return f.placed, f.strays.Load()
}

// farmMetaFails, set only by tests, makes setMeta fail for a path, as a directory whose
// metadata cannot be set would.
var farmMetaFails func(path string) bool

// linkFarm is one linkPrevious.
type linkFarm struct {
	ctx                context.Context
	guard              *guardGate
	destRoot, prevRoot int
	children           map[string][]*Entry // the wanted entries of each directory of prev
	sem                chan struct{}       // bounds the workers doing system calls
	mu                 sync.Mutex
	placed             []*Entry
	strays             atomic.Bool
	halted             atomic.Bool // the drive is full, read-only or failing: stop
}

// stopped reports whether the farm must stop (the run was cancelled or a write failed for a
// reason every further write shares); what it created and has not listed is then a stray.
func (f *linkFarm) stopped() bool {
	if f.halted.Load() || f.ctx.Err() != nil {
		f.strays.Store(true)
		return true
	}
	return false
}

// check halts the farm on an error that every further write would meet too.
func (f *linkFarm) check(err error) {
	if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) || errors.Is(err, unix.EIO) || errors.Is(err, unix.EROFS) {
		f.halted.Store(true)
	}
}

// dir fills the directory d of the tree (en: its entry in prev, nil for the root, which
// exists): it links d's files and symlinks and creates its subdirectories, fills those in
// parallel, and once they are done gives d its metadata (setting a read-only mode or the
// times earlier would stop or undo the writes below it). A directory it leaves unfinished
// is a stray (stopped marks it so).
func (f *linkFarm) dir(d string, en *Entry) {
	if f.stopped() {
		return
	}
	f.sem <- struct{}{}
	subdirs, ok := f.fill(d)
	<-f.sem
	if !ok {
		f.removeEmpty(d)
		return
	}
	var wg sync.WaitGroup
	for _, s := range subdirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.dir(s.Path, s)
		}()
	}
	wg.Wait()
	if en == nil || f.stopped() {
		return
	}
	f.sem <- struct{}{}
	ok = f.setMeta(en)
	<-f.sem
	if !ok {
		f.strays.Store(true)
		return
	}
	f.add([]*Entry{en})
}

// fill links the files and symlinks of directory d and creates its subdirectories (mode
// 0700 until their metadata is set). ok is false when d could not be opened in the tree or
// in the previous snapshot: nothing was placed in it.
func (f *linkFarm) fill(d string) (subdirs []*Entry, ok bool) {
	dfd, err := openDirBeneath(f.destRoot, d)
	if err != nil {
		f.check(err)
		return nil, false
	}
	defer unix.Close(dfd)
	pfd, err := openDirBeneath(f.prevRoot, d)
	if err != nil {
		return nil, false
	}
	defer unix.Close(pfd)
	var linked []*Entry
	for i, c := range f.children[d] {
		if i%256 == 0 && f.stopped() {
			break
		}
		if err := f.guard.tick(0); err != nil {
			f.halted.Store(true)
			break
		}
		_, name := splitRel(c.Path)
		if c.Type == 'd' {
			if err := unix.Mkdirat(dfd, name, 0o700); err != nil {
				// Nothing is there in a fresh tree but what this farm made; a second entry
				// of the same name would be a damaged manifest.
				f.check(err)
				f.strays.Store(true)
				continue
			}
			subdirs = append(subdirs, c)
			continue
		}
		// A hard link of the previous snapshot's inode: that inode is never written (the
		// plan replaces a changed file by a new one), so both snapshots stay as they are.
		if err := unix.Linkat(pfd, name, dfd, name, 0); err != nil {
			f.check(err)
			continue
		}
		linked = append(linked, c)
	}
	f.add(linked)
	return subdirs, true
}

// removeEmpty removes directory d, which fill could not fill: it holds nothing, and the plan
// creates it again if the source has it. When it cannot be removed it is a stray.
func (f *linkFarm) removeEmpty(d string) {
	if d == "" {
		f.strays.Store(true)
		return
	}
	parent, name := splitRel(d)
	pfd, err := openDirBeneath(f.destRoot, parent)
	if err == nil {
		err = unix.Unlinkat(pfd, name, unix.AT_REMOVEDIR)
		unix.Close(pfd)
	}
	if err != nil {
		f.strays.Store(true)
	}
}

// setMeta gives the tree's directory en.Path the owner, xattrs, mode and mtime the previous
// snapshot has for it (setDirAttrs). It reports whether the directory now is as en says: a
// failure the previous snapshot did not have (an owner or xattr it kept) leaves the directory
// to the plan, which sets its metadata from the source.
func (f *linkFarm) setMeta(en *Entry) bool {
	if farmMetaFails != nil && farmMetaFails(en.Path) {
		return false
	}
	fd, err := openDirBeneath(f.destRoot, en.Path)
	if err != nil {
		f.check(err)
		return false
	}
	defer unix.Close(fd)
	xsrc, err := openDirBeneath(f.prevRoot, en.Path)
	if err != nil {
		return false
	}
	defer unix.Close(xsrc)
	got := *en
	got.Flags = ""
	if err := setDirAttrs(fd, xsrc, &got); err != nil {
		f.check(err)
		return false
	}
	for _, fl := range []byte{flagOwner, flagXattr} {
		if got.hasFlag(fl) && !en.hasFlag(fl) {
			return false
		}
	}
	return true
}

func (f *linkFarm) add(ens []*Entry) {
	if len(ens) == 0 {
		return
	}
	f.mu.Lock()
	f.placed = append(f.placed, ens...)
	f.mu.Unlock()
}

// underSources returns whether a snapshot path belongs to one of the sources (prefixes, ""
// for "/"): inside one, or one of their ancestors.
func underSources(sources []*source) func(p string) bool {
	return func(p string) bool {
		for _, s := range sources {
			if s.holds(p) || strings.HasPrefix(s.prefix, p+"/") {
				return true
			}
		}
		return false
	}
}
