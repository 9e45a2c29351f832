package backup

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tree is a test helper that builds source trees.
type tree struct {
	t    *testing.T
	root string
}

func (tr tree) file(rel string, data string, mode os.FileMode) {
	tr.t.Helper()
	p := filepath.Join(tr.root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		tr.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), mode); err != nil {
		tr.t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		tr.t.Fatal(err)
	}
}

func (tr tree) mkdir(rel string) {
	tr.t.Helper()
	if err := os.MkdirAll(filepath.Join(tr.root, rel), 0o755); err != nil {
		tr.t.Fatal(err)
	}
}

func (tr tree) symlink(target, rel string) {
	tr.t.Helper()
	p := filepath.Join(tr.root, rel)
	_ = os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.Symlink(target, p); err != nil {
		tr.t.Fatal(err)
	}
}

func (tr tree) link(old, rel string) {
	tr.t.Helper()
	if err := os.Link(filepath.Join(tr.root, old), filepath.Join(tr.root, rel)); err != nil {
		tr.t.Fatal(err)
	}
}

// newTarget makes a temp target directory and a job backing up src into it.
func newJob(t *testing.T, src string, fstype string) Job {
	t.Helper()
	j := Job{Sources: []string{src}, Target: t.TempDir(), Host: "testhost", FSType: fstype, NoDefaultExcludes: true, Workers: 3}
	// Tests that keep several snapshots on the test disk must not depend on its free space
	// (Prune thins below the floor, 10% by default).
	j.Retention.MinFreePercent = 1
	return j
}

// stepClock is the tests' clock: each reading is a second after the one before, so every run
// gets a new snapshot name without waiting for the wall clock.
type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stepClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

var testClock = &stepClock{t: time.Now()}

func mustRun(t *testing.T, job Job) Result {
	t.Helper()
	res, err := run(context.Background(), job, nil, nil, testClock.now)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return res
}

// snapPath is where a source directory lands in a snapshot.
func snapPath(job Job, snap, src string) string {
	return filepath.Join(job.Target, rootDir, job.Host, snap, strings.TrimPrefix(src, "/"))
}

type node struct {
	typ      uint32
	mode     uint32
	uid, gid uint32
	size     int64
	mtime    int64
	data     []byte
	link     string
	xattrs   string
	linkID   int // hard link group within the tree (0: none)
	rdev     uint64
}

// scanTree records everything a backup must preserve, keyed by relative path.
func scanTree(t *testing.T, root string, skipMeta bool) map[string]node {
	t.Helper()
	out := map[string]node{}
	groups := map[[2]uint64]int{}
	var paths []string
	err := filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if skipMeta && rel == metaDir {
			return filepath.SkipDir
		}
		paths = append(paths, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(paths)
	count := map[[2]uint64]int{}
	for _, rel := range paths {
		var st unix.Stat_t
		if unix.Lstat(filepath.Join(root, rel), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
			count[[2]uint64{st.Dev, st.Ino}]++
		}
	}
	for _, rel := range paths {
		p := filepath.Join(root, rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		n := node{typ: st.Mode & unix.S_IFMT, mode: st.Mode & 0o7777, uid: st.Uid, gid: st.Gid, rdev: st.Rdev}
		switch n.typ {
		case unix.S_IFREG:
			n.size, n.mtime = st.Size, st.Mtim.Nano()
			n.data, _ = os.ReadFile(p)
			// Hard links within this tree (links into another snapshot do not count).
			if id := [2]uint64{st.Dev, st.Ino}; count[id] > 1 {
				if groups[id] == 0 {
					groups[id] = len(groups) + 1
				}
				n.linkID = groups[id]
			}
		case unix.S_IFLNK:
			n.link, _ = os.Readlink(p)
			n.mtime = st.Mtim.Nano()
			n.mode = 0
		case unix.S_IFDIR:
			if rel != "." {
				n.mtime = st.Mtim.Nano()
			}
		default:
			n.mtime = st.Mtim.Nano()
		}
		if n.typ == unix.S_IFREG || n.typ == unix.S_IFDIR {
			n.xattrs = xattrString(p)
		}
		out[rel] = n
	}
	return out
}

func xattrString(p string) string {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		return ""
	}
	names := strings.Split(strings.Trim(string(buf[:n]), "\x00"), "\x00")
	sort.Strings(names)
	var b strings.Builder
	for _, nm := range names {
		if nm == "" || strings.HasPrefix(nm, "security.") {
			continue
		}
		v := make([]byte, 4096)
		k, _ := unix.Lgetxattr(p, nm, v)
		fmt.Fprintf(&b, "%s=%x;", nm, v[:max(k, 0)])
	}
	return b.String()
}

// compareTrees fails t for every difference between a source tree and its copy.
func compareTrees(t *testing.T, src, dst string) {
	t.Helper()
	a, b := scanTree(t, src, false), scanTree(t, dst, true)
	var diffs []string
	for p, x := range a {
		y, ok := b[p]
		if !ok {
			diffs = append(diffs, p+": missing in the copy")
			continue
		}
		if p == "." {
			continue
		}
		if x.typ != y.typ || x.mode != y.mode || x.uid != y.uid || x.gid != y.gid || x.size != y.size ||
			x.mtime != y.mtime || !bytes.Equal(x.data, y.data) || x.link != y.link || x.xattrs != y.xattrs ||
			(x.linkID != 0) != (y.linkID != 0) || x.rdev != y.rdev {
			diffs = append(diffs, fmt.Sprintf("%s: source %+v, copy %+v", p, brief(x), brief(y)))
		}
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			diffs = append(diffs, p+": extra in the copy")
		}
	}
	// Hard link groups must map one to one.
	m := map[int]int{}
	for p, x := range a {
		if y, ok := b[p]; ok && x.linkID != 0 {
			if g, seen := m[x.linkID]; seen && g != y.linkID {
				diffs = append(diffs, p+": hard link group not preserved")
			}
			m[x.linkID] = y.linkID
		}
	}
	sort.Strings(diffs)
	for i, d := range diffs {
		if i > 20 {
			t.Errorf("... and %d more", len(diffs)-i)
			break
		}
		t.Error(d)
	}
}

func brief(n node) string {
	d := n.data
	if len(d) > 16 {
		d = d[:16]
	}
	return fmt.Sprintf("type=%o mode=%o own=%d:%d size=%d mtime=%d data=%q link=%q xattrs=%q linked=%v rdev=%d",
		n.typ, n.mode, n.uid, n.gid, n.size, n.mtime, d, n.link, n.xattrs, n.linkID != 0, n.rdev)
}
