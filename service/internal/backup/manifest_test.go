package backup

import (
	"strconv"
	"testing"
)

func TestApplyJournal(t *testing.T) {
	m := map[string]*Entry{}
	for _, p := range []string{"a", "a/b", "a/b/c", "ab", "x", "x/y"} {
		m[p] = &Entry{Path: p, Type: 'd'}
	}
	var j []byte
	j = append(j, "del "+strconv.Quote("a")+"\n"...)
	j = appendEntry(j, &Entry{Path: "a", Type: 'f', Size: 3})
	j = append(j, "del "+strconv.Quote("x/y")+"\n"...)
	j = appendEntry(j, &Entry{Path: "n", Type: 'f'})
	j = append(j, "f 644 0 0 1 2 3 4 5 1 0 - - \"torn"...) // a crash while appending
	applyJournal(m, j)
	want := map[string]byte{"a": 'f', "ab": 'd', "x": 'd', "n": 'f'}
	if len(m) != len(want) {
		t.Errorf("got %d entries, want %d: %v", len(m), len(want), keys(m))
	}
	for p, typ := range want {
		if e := m[p]; e == nil || e.Type != typ {
			t.Errorf("%s: got %+v, want type %c", p, e, typ)
		}
	}
}

func keys(m map[string]*Entry) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
