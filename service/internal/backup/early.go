package backup

import (
	"sync"

	"golang.org/x/sys/unix"
)

// earlyLinker builds the hard-link farm of an ext4/xfs run while the source is still being
// walked: each directory's entries are handled as soon as the walk has read them, so linking
// (target device) overlaps stat-ing (source device). It only creates directories and links
// single-link files and symlinks that match the previous snapshot; everything else is left to
// the normal plan, which treats what was done here as already in place.
type earlyLinker struct {
	e      *engine
	loaded <-chan struct{} // closed when e.prev is read

	mu      sync.Mutex
	cond    *sync.Cond
	queue   []earlyBatch
	closed  bool
	created map[string]chan struct{} // directory -> closed once it exists in the destination
	dirsOK  map[string]bool
	done    map[string]*Entry // linked entries, as stored
	wg      sync.WaitGroup
}

type earlyBatch struct {
	dir     string
	entries []*Entry
}

func newEarlyLinker(e *engine, loaded <-chan struct{}, workers int) *earlyLinker {
	l := &earlyLinker{e: e, loaded: loaded, created: map[string]chan struct{}{}, dirsOK: map[string]bool{},
		done: map[string]*Entry{}}
	l.cond = sync.NewCond(&l.mu)
	root := make(chan struct{})
	close(root)
	l.created[""] = root
	for i := 0; i < workers; i++ {
		l.wg.Add(1)
		go l.work()
	}
	return l
}

// add queues one directory's entries (called by the walk; never blocks).
func (l *earlyLinker) add(dir string, entries []*Entry) {
	l.mu.Lock()
	l.queue = append(l.queue, earlyBatch{dir, entries})
	l.mu.Unlock()
	l.cond.Signal()
}

// finish waits for the queued work and returns the directories created and entries linked.
func (l *earlyLinker) finish() (dirs map[string]bool, done map[string]*Entry) {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.cond.Broadcast()
	l.wg.Wait()
	return l.dirsOK, l.done
}

func (l *earlyLinker) createdChan(dir string) chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.created[dir]
	if c == nil {
		c = make(chan struct{})
		l.created[dir] = c
	}
	return c
}

func (l *earlyLinker) work() {
	defer l.wg.Done()
	<-l.loaded
	for {
		l.mu.Lock()
		for len(l.queue) == 0 && !l.closed {
			l.cond.Wait()
		}
		if len(l.queue) == 0 {
			l.mu.Unlock()
			return
		}
		b := l.queue[0]
		l.queue = l.queue[1:]
		l.mu.Unlock()
		l.do(b)
	}
}

// do handles one directory: its subdirectories first (their batches may be waiting), then
// its links. A directory whose creation failed leaves its whole subtree to the normal plan.
func (l *earlyLinker) do(b earlyBatch) {
	e := l.e
	// The parent batch closes the channel once the directory exists; a batch is queued only
	// after its parent's, so this wait always ends (or the parent gave up, closing it too).
	<-l.createdChan(b.dir)
	l.mu.Lock()
	ok := b.dir == "" || l.dirsOK[b.dir]
	l.mu.Unlock()
	var subdirs []*Entry
	for _, s := range b.entries {
		if s.Type == 'd' {
			subdirs = append(subdirs, s)
		}
	}
	for _, s := range subdirs {
		made := ok && e.err() == nil && e.guard.tick(0) == nil && e.ensureDir(s.Path) == nil
		l.mu.Lock()
		if made {
			l.dirsOK[s.Path] = true
		}
		l.mu.Unlock()
		close(l.createdChan(s.Path))
	}
	if !ok || e.prevFd < 0 || e.prev == nil || e.err() != nil {
		return
	}
	dfd, err := openDirBeneath(e.destFd, b.dir)
	if err != nil {
		return
	}
	defer unix.Close(dfd)
	pfd, err := openDirBeneath(e.prevFd, b.dir)
	if err != nil {
		return
	}
	defer unix.Close(pfd)
	for _, s := range b.entries {
		if (s.Type != 'f' && s.Type != 'l') || (s.Type == 'f' && s.Nlink > 1) {
			continue
		}
		p := e.prev[s.Path]
		if p == nil || !sameContent(p, s) {
			continue
		}
		if e.guard.tick(0) != nil {
			return
		}
		_, name := splitRel(s.Path)
		if linkReplace(pfd, name, dfd, name) != nil {
			continue // the normal plan copies it
		}
		en := *s
		en.Hash, en.Flags = p.Hash, p.Flags
		l.mu.Lock()
		l.done[s.Path] = &en
		l.mu.Unlock()
		e.written.Add(1)
	}
}
