package backup

import (
	"runtime/debug"
	"testing"
)

func TestMemBudget(t *testing.T) {
	orig := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(orig)
	limit := func() int64 { return debug.SetMemoryLimit(-1) }

	b := newMemBudget(1000)
	first := limit()
	if first <= memBase || first == orig {
		t.Fatalf("limit for 1000 entries: %d (base %d, before %d)", first, memBase, orig)
	}
	b.grow(1000 + memStep - 1)
	if got := limit(); got != first {
		t.Errorf("a few more entries moved the limit from %d to %d", first, got)
	}
	b.grow(1000 + 10*memStep)
	bigger := limit()
	if bigger <= first {
		t.Errorf("ten steps more entries: limit %d, was %d", bigger, first)
	}
	b.grow(10)
	if got := limit(); got != bigger {
		t.Errorf("fewer entries lowered the limit from %d to %d", bigger, got)
	}
	var none *memBudget
	none.grow(1 << 30) // a run in process: no limit
	if got := limit(); got != bigger {
		t.Errorf("a nil budget changed the limit to %d", got)
	}
}
