package backup

import (
	"testing"
	"time"
)

// fakeClock is a settable clock for the progress reporter.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestProgressThrottleAndETA(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	var got []Progress
	r := newProgressReporter(func(p Progress) { got = append(got, p) })
	r.clock = clk.now
	r.start(1000, 0, 100<<20)
	if len(got) != 1 || got[0].Phase != PhaseCopying || got[0].ETA >= 0 {
		t.Fatalf("start: %+v (a first run has no ETA yet)", got)
	}
	// 100 updates within 50 ms of fake time: none is reported.
	for i := 0; i < 100; i++ {
		clk.advance(500 * time.Microsecond)
		r.add(1, 10<<10)
	}
	if len(got) != 1 {
		t.Errorf("%d reports within one interval", len(got)-1)
	}
	// Then steady progress for 4 s of fake time: about 4 reports per second.
	for i := 0; i < 400; i++ {
		clk.advance(10 * time.Millisecond)
		r.add(2, 200<<10)
	}
	n := len(got) - 1
	if n < 12 || n > 17 {
		t.Errorf("%d reports in 4 s, want about 16", n)
	}
	last := got[len(got)-1]
	if last.Rate <= 0 || last.ETA < 0 {
		t.Errorf("no rate or ETA after 4 s: %+v", last)
	}
	for i := 1; i < len(got); i++ {
		if got[i].FilesDone < got[i-1].FilesDone || got[i].BytesDone < got[i-1].BytesDone {
			t.Errorf("progress went backwards: %+v then %+v", got[i-1], got[i])
		}
	}
	// The remaining work at the measured rate: compare with what the reporter computed
	// from its own counters, not a hard-coded number.
	wantETA := r.eta(float64(last.BytesDone+(last.FilesDone)*fileCost) / clk.t.Sub(r.began).Seconds())
	if d := last.ETA - wantETA; d > time.Second || d < -time.Second {
		t.Errorf("ETA %v, the rate says %v", last.ETA, wantETA)
	}
	r.done()
	if f := got[len(got)-1]; f.FilesDone != f.FilesTotal || f.ETA != 0 {
		t.Errorf("final report %+v", f)
	}
}

func TestProgressETAFromPreviousRun(t *testing.T) {
	clk := &fakeClock{t: time.Unix(0, 0)}
	var got []Progress
	r := newProgressReporter(func(p Progress) { got = append(got, p) })
	r.clock = clk.now
	r.prev = &Stats{CopySeconds: 10, BytesWritten: 1000 << 20, Written: 0}
	r.start(0, 0, 500<<20)
	if len(got) != 1 || got[0].ETA < 4*time.Second || got[0].ETA > 6*time.Second {
		t.Errorf("ETA from the previous run (100 MiB/s, 500 MiB left) = %v, want ~5s", got[0].ETA)
	}
}

func TestByteReporterThrottles(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	type report struct{ done, total uint64 }
	var got []report
	r := newByteReporter(func(done, total uint64) { got = append(got, report{done, total}) }, 1000)
	r.clock = clk.now
	r.add(0)
	if len(got) != 1 || got[0] != (report{0, 1000}) {
		t.Fatalf("first report: %+v", got)
	}
	// Within one interval nothing more is reported.
	for i := 0; i < 10; i++ {
		clk.advance(progressInterval / 20)
		r.add(10)
	}
	if len(got) != 1 {
		t.Errorf("%d reports within one interval", len(got)-1)
	}
	clk.advance(progressInterval)
	r.add(10)
	if len(got) != 2 || got[1] != (report{110, 1000}) {
		t.Errorf("after an interval: %+v", got)
	}
	// More than the manifest said: the total grows with it.
	clk.advance(progressInterval)
	r.add(2000)
	if last := got[len(got)-1]; last.done != last.total || last.done != 2110 {
		t.Errorf("past the total: %+v", last)
	}
	r.finish()
	if last := got[len(got)-1]; last != (report{2110, 2110}) {
		t.Errorf("finish: %+v", last)
	}
}
