package backup

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// pe builds a scan or manifest entry: "f a/b" is a regular file, "d a" a directory; the
// options after the path change one field ("mtime=2", "ino=7", "nlink=2", "flags=c").
func pe(spec string) *Entry {
	f := strings.Fields(spec)
	en := &Entry{Type: f[0][0], Path: f[1], Mode: 0o644, Size: 10, Mtime: 1, Ctime: 1, Ino: 100, Dev: 1, Nlink: 1}
	if en.Type == 'd' {
		en.Mode = 0o755
	}
	if en.Type == 'l' {
		en.Link = "target"
	}
	for _, o := range f[2:] {
		k, v, _ := strings.Cut(o, "=")
		var n int64
		fmt.Sscan(v, &n)
		switch k {
		case "mtime":
			en.Mtime = n
		case "ino":
			en.Ino = uint64(n)
		case "nlink":
			en.Nlink = uint32(n)
		case "size":
			en.Size = n
		case "flags":
			en.Flags = v
		case "link":
			en.Link = v
		}
	}
	return en
}

func entries(specs ...string) []*Entry {
	var out []*Entry
	for _, s := range specs {
		out = append(out, pe(s))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

func byPath(specs ...string) map[string]*Entry {
	m := map[string]*Entry{}
	for _, e := range entries(specs...) {
		m[e.Path] = e
	}
	return m
}

// planSummary renders a plan as sorted strings, one per decision.
func planSummary(p *plan) []string {
	var out []string
	for _, d := range p.deletes {
		out = append(out, "delete "+d)
	}
	for _, d := range p.dirs {
		out = append(out, "mkdir "+d.Path)
	}
	for _, acts := range p.writes {
		for _, a := range acts {
			out = append(out, a.op.String()+" "+a.s.Path)
		}
	}
	for _, a := range p.follows {
		out = append(out, "follow "+a.s.Path+" -> "+a.leader)
	}
	for _, k := range p.kept {
		out = append(out, "keep "+k.Path)
	}
	for _, d := range p.dirty {
		out = append(out, "meta "+d.Path)
	}
	sort.Strings(out)
	return out
}

func TestMakePlan(t *testing.T) {
	scan := []string{"d a", "f a/x", "f a/y ino=101", "l a/l"}
	cases := []struct {
		name         string
		known, prev  []string
		scan         []string
		resumed      bool
		want         []string
		bytes, files uint64
	}{{
		name:  "first run copies everything",
		scan:  scan,
		want:  []string{"copy a/l", "copy a/x", "copy a/y", "meta a", "mkdir a"},
		bytes: 20, files: 4,
	}, {
		name:  "nothing changed: nothing to do",
		known: scan, scan: scan,
		want:  []string{"keep a", "keep a/l", "keep a/x", "keep a/y"},
		files: 4,
	}, {
		name:  "a changed file is copied, its directory's metadata set again",
		known: scan, scan: []string{"d a", "f a/x mtime=2", "f a/y ino=101", "l a/l"},
		want:  []string{"copy a/x", "keep a", "keep a/l", "keep a/y", "meta a"},
		bytes: 10, files: 4,
	}, {
		name:  "a removed subtree is deleted at its top only",
		known: append([]string{"d a/s", "d a/s/t", "f a/s/t/z"}, scan...), scan: scan,
		want:  []string{"delete a/s", "keep a", "keep a/l", "keep a/x", "keep a/y", "meta a"},
		files: 4,
	}, {
		name:  "a file that became a directory is deleted and created",
		known: scan, scan: []string{"d a", "d a/x", "f a/y ino=101", "l a/l"},
		want:  []string{"delete a/x", "keep a", "keep a/l", "keep a/y", "meta a", "meta a/x", "mkdir a/x"},
		files: 4,
	}, {
		name: "ext4: unchanged entries are linked from the previous snapshot",
		prev: scan, scan: []string{"d a", "f a/x", "f a/y ino=101 size=5 mtime=3", "l a/l link=other"},
		want:  []string{"copy a/l", "copy a/y", "link a/x", "meta a", "mkdir a"},
		bytes: 5, files: 4,
	}, {
		name:  "a file that kept changing is copied again",
		known: []string{"d a", "f a/x flags=c"}, scan: []string{"d a", "f a/x"},
		want:  []string{"copy a/x", "keep a", "meta a"},
		bytes: 10, files: 2,
	}, {
		name:  "a hard link group whose leader changed is linked again as a whole",
		known: []string{"d a", "f a/h1 nlink=2", "f a/h2 nlink=2"},
		scan:  []string{"d a", "f a/h1 nlink=2 mtime=5", "f a/h2 nlink=2 mtime=5"},
		want:  []string{"copy a/h1", "follow a/h2 -> a/h1", "keep a", "meta a"},
		bytes: 10, files: 3,
	}, {
		name:  "an unchanged hard link group is kept",
		known: []string{"d a", "f a/h1 nlink=2", "f a/h2 nlink=2"},
		scan:  []string{"d a", "f a/h1 nlink=2", "f a/h2 nlink=2"},
		want:  []string{"keep a", "keep a/h1", "keep a/h2"},
		files: 3,
	}, {
		name:  "resuming cleans the unchanged directories too",
		known: scan, scan: scan, resumed: true,
		want:  []string{"keep a", "keep a/l", "keep a/x", "keep a/y", "mkdir a"},
		files: 4,
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var prev map[string]*Entry
			if c.prev != nil {
				prev = byPath(c.prev...)
			}
			p := makePlan(byPath(c.known...), prev, entries(c.scan...), c.resumed)
			if got := planSummary(p); !reflect.DeepEqual(got, c.want) {
				t.Errorf("plan:\n got  %q\n want %q", got, c.want)
			}
			if p.bytes != c.bytes || p.files != c.files {
				t.Errorf("bytes, files = %d, %d; want %d, %d", p.bytes, p.files, c.bytes, c.files)
			}
			if c.resumed {
				want := map[string]map[string]bool{"": {"a": true}, "a": {"l": true, "x": true, "y": true}}
				if !reflect.DeepEqual(p.want, want) {
					t.Errorf("names to keep = %v, want %v", p.want, want)
				}
			} else if p.want != nil {
				t.Errorf("names to keep = %v without a resume", p.want)
			}
		})
	}
}

func TestMakePlanOrders(t *testing.T) {
	scan := entries("d a", "d a/b", "d a/b/c", "f a/b/c/f", "d z")
	p := makePlan(nil, nil, scan, false)
	var dirs, dirty []string
	for _, d := range p.dirs {
		dirs = append(dirs, d.Path)
	}
	for _, d := range p.dirty {
		dirty = append(dirty, d.Path)
	}
	if want := []string{"a", "a/b", "a/b/c", "z"}; !reflect.DeepEqual(dirs, want) {
		t.Errorf("directories created in order %q, want parents first %q", dirs, want)
	}
	if want := []string{"z", "a/b/c", "a/b", "a"}; !reflect.DeepEqual(dirty, want) {
		t.Errorf("directory metadata set in order %q, want deepest first %q", dirty, want)
	}
}

// TestMakePlanCountsChanges: the files (not directories) added, changed or removed since the
// previous snapshot, on btrfs (the tree is the previous snapshot) and on ext4 (the tree starts
// empty; the previous snapshot is prev).
func TestMakePlanCountsChanges(t *testing.T) {
	base := []string{"d a", "f a/x", "f a/y ino=101", "l a/l", "f a/h1 ino=7 nlink=2", "f a/h2 ino=7 nlink=2"}
	edited := []string{"d a", "f a/x mtime=2", "f a/n ino=102", "l a/l", "f a/h1 ino=7 nlink=2", "f a/h2 ino=7 nlink=2", "d a/y"}
	for _, c := range []struct {
		name        string
		known, prev []string
		scan        []string
		want        uint64
	}{
		{name: "btrfs: nothing changed", known: base, scan: base, want: 0},
		{name: "ext4: nothing changed", prev: base, scan: base, want: 0},
		// a/x changed, a/n added, a/y (a file) replaced by a directory: removed.
		{name: "btrfs: changed, added, removed", known: base, scan: edited, want: 3},
		{name: "ext4: changed, added, removed", prev: base, scan: edited, want: 3},
		{name: "first snapshot: every file", scan: base, want: 5},
		{name: "btrfs: a changed hard link group counts each name", known: base,
			scan: []string{"d a", "f a/x", "f a/y ino=101", "l a/l", "f a/h1 ino=7 nlink=2 mtime=3", "f a/h2 ino=7 nlink=2 mtime=3"}, want: 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			var prev map[string]*Entry
			if c.prev != nil {
				prev = byPath(c.prev...)
			}
			if p := makePlan(byPath(c.known...), prev, entries(c.scan...), false); p.changed != c.want {
				t.Errorf("changed = %d, want %d (plan %q)", p.changed, c.want, planSummary(p))
			}
		})
	}
}
