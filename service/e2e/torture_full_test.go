package e2e

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plugvault/plugvault/service/api"
)

// fullStickSize is the size of the sticks that fill up (t-full, t-prune): a few runs of a
// churned source fill them.
const fullStickSize = 256 << 20

// TestTortureFullStick is R3 (a full stick): on a small stick holding two snapshots, a source
// that fits only once the oldest is gone is backed up (the oldest is thinned, the other stays
// as it was), then one that cannot fit at all fails with a "drive full" reason, leaving the
// newest snapshot as it was, verify agreeing and nothing unfinished on the stick.
func TestTortureFullStick(t *testing.T) {
	env, tl, ctx := tortureEnv(t)
	c := tortureCase(t, "full stick (R3)")
	v := newVault(t, env, "t-full", false)
	v.wait = 15 * time.Minute
	s := v.s
	pid := mainPID(t, ctx, env)
	// The other cases back up the same source: it is small again afterwards.
	t.Cleanup(func() { v.churn(context.Background(), 256<<10) })
	complete := func() (names []string, partial int) {
		for _, sn := range listSnapshots(t, ctx, env, s) {
			if sn.Status == api.SnapshotComplete {
				names = append(names, sn.Name)
			} else {
				partial++
			}
		}
		return names, partial
	}
	// onDrive lists plugvault/<host> on the stick but the complete snapshots and "latest".
	unfinished := func(keep []string) []string {
		var out []string
		onStick(t, ctx, env, s, func(dir string) {
			ls, err := env.VM.Shell(ctx, "ls -A "+dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range strings.Fields(ls) {
				if n != "latest" && !slices.Contains(keep, n) {
					out = append(out, n)
				}
			}
		})
		return out
	}
	// btrfs leaves about 143 MiB of the stick's 224 MiB filesystem to data; the home is 14 MiB.
	for _, mib := range []int{30, 30} {
		v.churn(ctx, mib<<20)
		if err := v.waitEnd(ctx, plug(t, ctx, env, tl, s)); err != nil {
			t.Fatalf("a run that fits: %v", err)
		}
		v.check(ctx)
		pullNow(t, ctx, env, s)
	}
	before, _ := complete()
	if len(before) != 2 {
		t.Fatalf("the stick holds %v, want two snapshots", before)
	}

	// Fits once the oldest snapshot is gone.
	v.churn(ctx, 80<<20)
	err := v.waitEnd(ctx, plug(t, ctx, env, tl, s))
	if err != nil {
		t.Errorf("a run that fits after thinning: %v", err)
	} else if st := status(t, ctx, env, s); !strings.Contains(st.StateReason, "1 old snapshot deleted to make room") {
		t.Errorf("the run that made room says %q; want it to tell that 1 old snapshot was deleted", st.StateReason)
	}
	after, partial := complete()
	if len(after) != 2 || after[0] != before[1] || partial > 0 {
		t.Errorf("after thinning the stick holds %v (%d partial), want %s and a new one", after, partial, before[1])
	}
	delete(v.known, before[0]) // thinned, as the case wants
	lost, corrupted, note := v.check(ctx)
	left := leftovers(t, ctx, env)
	c.Count++
	c.Points++
	c.Lost += lost
	c.Corrupted += corrupted
	c.Leftovers += len(left)
	result := "complete"
	if err != nil {
		result = "FAILED: " + err.Error()
	}
	c.Line("fits after thinning: %s; left %v of %v; leftovers %d; %s", result, after, before, len(left), note)
	pullNow(t, ctx, env, s)

	// Never fits: larger than the stick.
	v.churn(ctx, fullStickSize+(32<<20))
	mark := plug(t, ctx, env, tl, s)
	if err := v.waitEnd(ctx, mark); err == nil {
		t.Error("a backup larger than the stick succeeded")
	}
	st := status(t, ctx, env, s)
	for _, want := range []string{s.Name + " is full: this backup needs about ", "even after deleting old snapshots"} {
		if !strings.Contains(st.StateReason, want) {
			t.Errorf("reason %q lacks %q", st.StateReason, want)
		}
	}
	if st.State != api.StateFailed || st.LastResult != api.ResultFailed || st.FailedIn != api.StateBackingUp {
		t.Errorf("the run that cannot fit ended in %s with %q (failed in %q), want failed in backing-up", st.State, st.LastResult, st.FailedIn)
	}
	final, partial := complete()
	if len(final) != 1 || final[0] != after[len(after)-1] || partial > 0 {
		t.Errorf("after the failed run the stick holds %v (%d partial), want only %s", final, partial, after[len(after)-1])
	}
	for _, n := range after[:len(after)-1] {
		delete(v.known, n) // thinned before the run gave up
	}
	extra := unfinished(final)
	for _, n := range extra {
		t.Errorf("left on the stick after the failed run: %s", n)
	}
	lost, corrupted, note = v.check(ctx)
	left = leftovers(t, ctx, env)
	for _, l := range left {
		t.Errorf("left behind: %s", l)
	}
	if now := mainPID(t, ctx, env); now != pid {
		t.Errorf("plugvaultd's PID changed from %s to %s", pid, now)
	}
	daemonHealthy(t, ctx, env, "")
	c.Count++
	c.Points++
	c.Lost += lost
	c.Corrupted += corrupted
	c.Leftovers += len(left) + len(extra)
	c.Line("never fits: state %s: %q; left %v; unfinished on the stick %v; leftovers %d; %s", st.State, st.StateReason, final, extra, len(left), note)
	tl.Note("full stick: %q", st.StateReason)
	pullNow(t, ctx, env, s)
}
