package e2e

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/e2e/agentproto"
)

// The torture suite (make torture; a short pass runs in make check): faults injected many times
// at points of the backup cycle chosen from the daemon's own events (udev, drive states, the
// engine's progress, and the debug step log plugvaultd writes to the journal), each followed by
// the same checks, counted into e2e-out/torture.txt.

var (
	tortureFull   = flag.Bool("torture", false, "run the whole torture suite (make torture; needs -run-vm-tests)")
	tortureShort  = flag.Bool("torture-short", false, "run the short torture pass (make check; needs -run-vm-tests)")
	torturePoints = flag.String("torture-points", "", "only the yank points whose names match this regular expression (with -torture)")
)

func tortureOn() bool { return *tortureFull || *tortureShort }

// tortureSticks are the sticks the torture suite adds to the one boot.
func tortureSticks() []StickPlan {
	if !tortureOn() {
		return nil
	}
	return []StickPlan{
		{Spec: StickSpec{Name: "t-yank"}, Enrolled: true, Key: true},
		{Spec: StickSpec{Name: "t-pass"}, Enrolled: true},
		{Spec: StickSpec{Name: "t-kill"}, Enrolled: true, Key: true},
		{Spec: StickSpec{Name: "t-power"}, Enrolled: true, Key: true},
		{Spec: StickSpec{Name: "t-cycle"}, Enrolled: true, Key: true},
		{Spec: StickSpec{Name: "t-two-a"}, Enrolled: true, Key: true},
		{Spec: StickSpec{Name: "t-two-b", FS: "ext4"}, Enrolled: true, Key: true},
		{Spec: StickSpec{Name: "t-garbage"}, Enrolled: true, Key: true},
		{Spec: StickSpec{Name: "t-trunc"}, Enrolled: true, Key: true},
		{Spec: StickSpec{Name: "t-badfs"}, Enrolled: true, Key: true},
		{Spec: StickSpec{Name: "t-sleep"}, Enrolled: true, Key: true},
		{Spec: StickSpec{Name: "t-big"}, Enrolled: true, Key: true},
		// A space floor of 1 %: only the run's own need for room thins its snapshots.
		{Spec: StickSpec{Name: "t-full", Size: fullStickSize}, Enrolled: true, Key: true, MinFreePercent: 1},
		// Its space floor is above what its snapshots leave free: every run prunes.
		{Spec: StickSpec{Name: "t-prune", Size: fullStickSize}, Enrolled: true, Key: true, MinFreePercent: 90},
	}
}

// tortureEnv skips unless a torture flag is given, and returns the booted guest.
func tortureEnv(t *testing.T) (*Env, *Timeline, context.Context) {
	t.Helper()
	if !tortureOn() {
		t.Skip("torture: run with -torture or -torture-short (make torture)")
	}
	env := vmEnv(t)
	tl, _ := scenario(t, env)
	// The suite is long: its own bound instead of a scenario's 8 minutes.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Hour)
	t.Cleanup(cancel)
	t.Cleanup(func() {
		if err := tortureReport.Write(); err != nil {
			t.Logf("cannot write the torture report: %v", err)
		}
	})
	needDaemon(t, ctx, env, tl)
	return env, tl, ctx
}

// tortureCase adds a row to the report, marked failed if the test fails.
func tortureCase(t *testing.T, fault string) *TortureCase {
	c := tortureReport.Case(fault)
	t.Cleanup(func() {
		if t.Failed() {
			tortureReport.mu.Lock()
			c.Failed = true
			tortureReport.mu.Unlock()
		}
	})
	return c
}

// churnFile is rewritten with new random content before each run, so that every run copies
// something (enough, when big, to see the copy percentages go by).
const churnFile = SourceDir + "/torture/churn.bin"

// vault follows one stick: every complete snapshot it holds and the source as it was when that
// snapshot was taken.
type vault struct {
	t    *testing.T
	env  *Env
	s    *Stick
	pass bool // passphrase only (no keyfile installed)
	// thins: the drive's retention deletes snapshots; a known snapshot older than the newest
	// one on the stick may be gone (check counts it as thinned, not lost).
	thins   bool
	thinned int
	// wait bounds each wait for the end of a run (cycleTimeout unless the case sets more).
	wait time.Duration

	known map[string]map[string]agentproto.Entry
	lost  map[string]bool
	fresh map[string]agentproto.Entry // the source as the next run will see it
}

func newVault(t *testing.T, env *Env, name string, pass bool) *vault {
	return &vault{t: t, env: env, s: env.Sticks[name], pass: pass, wait: cycleTimeout, known: map[string]map[string]agentproto.Entry{}, lost: map[string]bool{}}
}

// churn changes the source (size bytes of new content), syncs it (a power cut must not take it
// back) and records it as what the next snapshot must hold.
func (v *vault) churn(ctx context.Context, size int) {
	v.t.Helper()
	if _, err := v.env.VM.ExecAs(ctx, AliceUID, nil, "/bin/sh", "-ec",
		fmt.Sprintf("mkdir -p %s/torture && head -c %d /dev/urandom > %s && sync", SourceDir, size, churnFile)); err != nil {
		v.t.Fatal(err)
	}
	v.fresh = manifestOf(v.t, ctx, v.env, SourceDir, false)
}

// waitEnd waits for the run of v's drive started after since to end: it hands the passphrase
// over when asked and returns an error unless the run ends in safe-to-remove with success.
func (v *vault) waitEnd(ctx context.Context, since uint64) error {
	end := api.StateSafeToRemove + "|" + api.StateFailed
	if v.pass {
		ev, err := v.env.VM.Wait(ctx, since, agentproto.KindDrive, drivePath(v.s), map[string]string{"State": string(api.StateAwaitingPassphrase) + "|" + string(end)}, v.wait)
		if err != nil {
			return err
		}
		if ev.State == string(api.StateAwaitingPassphrase) {
			res, err := v.env.VM.Call(ctx, 0, api.MethodUnlock, drivePath(v.s), v.s.Passphrase)
			if err != nil || res.Err != nil {
				return fmt.Errorf("cannot unlock with the passphrase: %v %v", err, res.Err)
			}
		}
	}
	if _, err := v.env.VM.Wait(ctx, since, agentproto.KindDrive, drivePath(v.s), map[string]string{"State": string(end)}, v.wait); err != nil {
		return err
	}
	var st api.DriveStatus
	res, err := v.env.VM.Call(ctx, 0, "DriveStatus", drivePath(v.s), nil)
	if err == nil && res.Err == nil {
		err = json.Unmarshal(res.JSON, &st)
	}
	switch {
	case err != nil:
		return err
	case res.Err != nil:
		return res.Err
	case st.State != api.StateSafeToRemove || st.LastResult != api.ResultSuccess:
		return fmt.Errorf("the run ended in %s (%s), last result %q", st.State, st.StateReason, st.LastResult)
	}
	return nil
}

// check compares every complete snapshot on the stick with the source as it was when it was
// taken (new complete snapshots were taken of v.fresh) and asks the daemon to verify the
// newest. It returns how many known snapshots are gone and how many differ, with a note.
func (v *vault) check(ctx context.Context) (lost, corrupted int, note string) {
	v.t.Helper()
	snaps := listSnapshots(v.t, ctx, v.env, v.s)
	have := map[string]bool{}
	partial := 0
	for _, sn := range snaps {
		if sn.Status != api.SnapshotComplete {
			partial++
			continue
		}
		have[sn.Name] = true
		if v.known[sn.Name] == nil {
			v.known[sn.Name] = v.fresh
		}
	}
	newest := ""
	for name := range have {
		newest = max(newest, name)
	}
	for name := range v.known {
		if v.thins && !have[name] && name < newest {
			delete(v.known, name)
			v.thinned++
			continue
		}
		if !have[name] && !v.lost[name] {
			v.lost[name] = true
			lost++
			v.t.Errorf("stick %s: complete snapshot %s is gone", v.s.Name, name)
		}
	}
	var bad []string
	onStick(v.t, ctx, v.env, v.s, func(snapDir string) {
		for name, src := range v.known {
			if v.lost[name] {
				continue
			}
			got := manifestOf(v.t, ctx, v.env, snapshotSource(v.t, ctx, v.env, snapDir+"/"+name), false)
			if diffs := compareTrees(src, got); len(diffs) > 0 {
				corrupted++
				bad = append(bad, name)
				v.t.Errorf("stick %s: snapshot %s differs from the source as it was: %v", v.s.Name, name, firstN(diffs, 5))
			}
		}
	})
	if v.pass {
		// Verify unlocks with the keyfile, which a passphrase-only drive does not have.
		return lost, corrupted, fmt.Sprintf("%d complete snapshots equal to the source as it was (verify needs a keyfile)", len(v.known)-len(v.lost)-len(bad))
	}
	verified := "verify: ok"
	var vr struct {
		Checked  uint64   `json:"checked"`
		Problems []string `json:"problems"`
	}
	res, err := v.env.VM.Call(ctx, 0, api.MethodVerify, drivePath(v.s), nil)
	if err == nil && res.Err == nil {
		err = json.Unmarshal(res.JSON, &vr)
	}
	if err != nil || res.Err != nil || len(vr.Problems) > 0 || vr.Checked == 0 {
		corrupted++
		verified = fmt.Sprintf("verify: %v %v, %d checked, problems %v", err, res.Err, vr.Checked, firstN(vr.Problems, 3))
		v.t.Errorf("stick %s: %s", v.s.Name, verified)
	} else {
		verified = fmt.Sprintf("verify: %d entries ok", vr.Checked)
	}
	note = fmt.Sprintf("%d complete snapshots equal to the source as it was", len(v.known)-len(v.lost)-len(bad))
	if v.thinned > 0 {
		note += fmt.Sprintf(" (%d thinned by retention so far)", v.thinned)
	}
	if partial > 0 {
		note += fmt.Sprintf(", %d partial", partial)
	}
	return lost, corrupted, note + "; " + verified
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("… %d more", len(s)-n))
	}
	return s
}

// leftovers lists what the daemon left behind in the guest: its mappings, mounts under the
// mount base, engine processes, files open below the mount base, loop devices and
// /run/plugvault-* entries (the agent's own /run/plugvault-e2e share aside).
func leftovers(t *testing.T, ctx context.Context, env *Env) []string {
	t.Helper()
	// dmsetup, not /dev/mapper: a device an open killed half-way left without a table has no node.
	out, err := env.VM.Shell(ctx, `dmsetup ls 2>/dev/null | awk '{print $1}' | grep '^plugvault-' | sed 's/^/mapping /' || true
grep ' `+GuestMntBase+`/' /proc/mounts | sed 's/^/mount /' || true
for p in /proc/[0-9]*; do e=$(readlink "$p/exe" 2>/dev/null) || continue; case $e in */plugvault-engine*) echo "process ${p#/proc/} $e";; esac; done
find /proc/[0-9]*/fd -lname '`+GuestMntBase+`/*' 2>/dev/null | sed 's/^/open file /' || true
losetup -a 2>/dev/null | sed 's/^/loop /' || true
ls -1 /run | grep '^plugvault-' | grep -v '^plugvault-e2e$' | sed 's|^|run entry /run/|' || true`)
	if err != nil {
		t.Fatal(err)
	}
	var l []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line != "" {
			l = append(l, line)
		}
	}
	return l
}

// figures are plugvaultd's runtime figures as it logs them on SIGUSR1.
type figures struct{ goroutines, fds, rssKiB int64 }

func runtimeFigures(t *testing.T, ctx context.Context, env *Env) figures {
	t.Helper()
	mark, err := env.VM.Mark(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.VM.Exec(ctx, "systemctl", "kill", "--kill-whom=main", "--signal=USR1", "plugvaultd.service"); err != nil {
		t.Fatal(err)
	}
	ev, err := env.VM.Wait(ctx, mark, agentproto.KindJournal, "", map[string]string{"MESSAGE": "runtime"}, time.Minute)
	if err != nil {
		t.Fatalf("plugvaultd did not log its runtime figures: %v", err)
	}
	num := func(k string) int64 {
		n, err := strconv.ParseInt(ev.Props[k], 10, 64)
		if err != nil {
			t.Fatalf("runtime figure %s = %q: %v", k, ev.Props[k], err)
		}
		return n
	}
	return figures{goroutines: num("GOROUTINES"), fds: num("FDS"), rssKiB: num("RSS_KIB")}
}

// pullSettled pulls s and waits until the daemon has its drive absent: once udev has handled
// the removal, either the drive is absent already or its change to absent comes after since
// (which must precede anything that may already have removed it, such as an eject's
// power-off). A stick pulled before udev reported it may never have reached the daemon.
func pullSettled(t *testing.T, ctx context.Context, env *Env, s *Stick, since uint64) error {
	t.Helper()
	if _, err := env.VM.Pull(ctx, s); err != nil {
		return err
	}
	if _, err := env.VM.Exec(ctx, "udevadm", "settle", "--timeout=120"); err != nil {
		return err
	}
	if st := status(t, ctx, env, s); !st.Present && st.State == api.StateAbsent {
		return nil
	}
	_, err := env.VM.Wait(ctx, since, agentproto.KindDrive, drivePath(s), map[string]string{"State": string(api.StateAbsent)}, cycleTimeout)
	return err
}

// pullNow pulls s (its drive locked or absent) and waits for the daemon to have it absent.
func pullNow(t *testing.T, ctx context.Context, env *Env, s *Stick) {
	t.Helper()
	mark, err := env.VM.Mark(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := pullSettled(t, ctx, env, s, mark); err != nil {
		t.Fatalf("pull of %s: %v", s.Name, err)
	}
}

// yankPoint is a point of the cycle at which a stick is pulled: the event that opens it and,
// when the window is a step, the event that closes it.
type yankPoint struct {
	name     string
	kind     string            // "": pull right after the plug, before udev reports the stick
	match    map[string]string // opens the window
	endKind  string            // closes it (a journal step's end); "" with kind drive: the next state
	endMatch map[string]string
	big      bool   // change enough data to watch copy percentages
	vault    string // "pass": the passphrase-only stick; "prune": the stick whose every run prunes
	eject    bool   // Eject (with power-off) after safe-to-remove, pull during the power-off
}

func step(name, phase string) map[string]string {
	return map[string]string{"STEP": name, "PHASE": phase}
}

func yankPoints() []yankPoint {
	state := func(s api.State) map[string]string { return map[string]string{"State": string(s)} }
	progress := func(name string, p float64) yankPoint {
		return yankPoint{name: name, kind: agentproto.KindDrive, match: map[string]string{"Progress": fmt.Sprintf(">=%g", p)},
			endKind: agentproto.KindJournal, endMatch: step("engine-finishing", "begin"), big: true}
	}
	j := agentproto.KindJournal
	return []yankPoint{
		{name: "before udev reports the stick"},
		{name: "udev add (settling)", kind: agentproto.KindUdev, match: map[string]string{"ACTION": "add", "DEVTYPE": "disk"}},
		{name: "state unlocking", kind: agentproto.KindDrive, match: state(api.StateUnlocking)},
		{name: "cryptsetup open (keyfile)", kind: j, match: map[string]string{"STEP": "cryptsetup-open", "PHASE": "begin", "WITH": "keyfile"},
			endKind: j, endMatch: step("cryptsetup-open", "end")},
		{name: "cryptsetup open (passphrase)", kind: j, match: map[string]string{"STEP": "cryptsetup-open", "PHASE": "begin", "WITH": "passphrase"},
			endKind: j, endMatch: step("cryptsetup-open", "end"), vault: "pass"},
		{name: "mapping just appeared", kind: j, match: step("cryptsetup-open", "end"), endKind: j, endMatch: step("mount", "begin")},
		{name: "mount", kind: j, match: step("mount", "begin"), endKind: j, endMatch: step("mount", "end")},
		{name: "just mounted", kind: j, match: step("mount", "end"), endKind: j, endMatch: step("engine-scanning", "begin")},
		{name: "scan", kind: j, match: step("engine-scanning", "begin"), endKind: j, endMatch: step("engine-copying", "begin"), big: true},
		{name: "copy start", kind: j, match: step("engine-copying", "begin"), endKind: j, endMatch: step("engine-finishing", "begin"), big: true},
		progress("copy 5%", 0.05),
		progress("copy 10%", 0.10),
		progress("copy 25%", 0.25),
		progress("copy 40%", 0.40),
		progress("copy 50%", 0.50),
		progress("copy 60%", 0.60),
		progress("copy 75%", 0.75),
		progress("copy 90%", 0.90),
		{name: "engine finishing (promote, prune follow)", kind: j, match: step("engine-finishing", "begin"), endKind: j, endMatch: step("engine", "end"), big: true},
		{name: "retention pruning", kind: j, match: step("prune", "begin"), endKind: j, endMatch: step("prune", "end"), big: true, vault: "prune"},
		{name: "state finishing", kind: agentproto.KindDrive, match: state(api.StateFinishing)},
		{name: "unmount", kind: j, match: step("unmount", "begin"), endKind: j, endMatch: step("unmount", "end")},
		{name: "state locking", kind: agentproto.KindDrive, match: state(api.StateLocking)},
		{name: "cryptsetup close", kind: j, match: step("cryptsetup-close", "begin"), endKind: j, endMatch: step("cryptsetup-close", "end")},
		{name: "after safe to remove", kind: agentproto.KindDrive, match: state(api.StateSafeToRemove)},
		{name: "power-off after eject", kind: j, match: step("power-off", "begin"), endKind: j, endMatch: step("power-off", "end"), eject: true},
	}
}

// shortYankPoints are the points of the CI pass.
var shortYankPoints = []string{"udev add (settling)", "cryptsetup open (keyfile)", "mount", "copy 50%", "cryptsetup close", "retention pruning"}

// landed says whether the pull (at pullSeq) fell inside p's window that opened with trig.
func landed(evs []agentproto.Event, p yankPoint, s *Stick, trig *agentproto.Event, pullSeq uint64) (bool, string) {
	stateAt, stepAt := "", ""
	for _, ev := range evs {
		if ev.Seq > pullSeq {
			break
		}
		if ev.Kind == agentproto.KindDrive && ev.Path == drivePath(s) && ev.State != "" {
			stateAt = ev.State
		}
		if ev.Kind == agentproto.KindJournal && ev.Props["STEP"] != "" {
			stepAt = ev.Props["STEP"] + " " + ev.Props["PHASE"]
		}
	}
	where := fmt.Sprintf("state %s, last step %q", stateAt, stepAt)
	if p.kind == "" {
		for _, ev := range evs {
			if ev.Seq <= pullSeq && ev.Kind == agentproto.KindUdev && ev.Props["ID_SERIAL_SHORT"] == s.Serial {
				return false, where
			}
		}
		return true, where
	}
	if trig == nil {
		return false, where
	}
	for _, ev := range evs {
		if ev.Seq <= trig.Seq || ev.Seq > pullSeq {
			continue
		}
		switch {
		case p.endKind != "" && agentproto.Matches(ev, p.endKind, "", p.endMatch):
			return false, where
		case p.endKind == "" && p.kind == agentproto.KindDrive && ev.Kind == agentproto.KindDrive && ev.Path == drivePath(s) &&
			ev.Props["State"] != "" && ev.Props["State"] != trig.State:
			return false, where
		}
	}
	return true, where
}

// TestTortureYank is R1: the stick is pulled at every point of the cycle, each followed by the
// checks: no mapping, mount, process or open file left; the daemon healthy with the same PID;
// a replug completes; every complete snapshot equals the source as it was; Verify agrees.
func TestTortureYank(t *testing.T) {
	env, tl, ctx := tortureEnv(t)
	c := tortureCase(t, "yank (R1)")
	vaults := map[string]*vault{"": newVault(t, env, "t-yank", false), "pass": newVault(t, env, "t-pass", true),
		"prune": newVault(t, env, "t-prune", false)}
	vaults["prune"].thins = true
	pid := mainPID(t, ctx, env)
	points := yankPoints()
	if *torturePoints != "" {
		re, err := regexp.Compile(*torturePoints)
		if err != nil {
			t.Fatalf("-torture-points: %v", err)
		}
		var some []yankPoint
		for _, p := range points {
			if re.MatchString(p.name) {
				some = append(some, p)
			}
		}
		points = some
	} else if !*tortureFull {
		var short []yankPoint
		for _, p := range points {
			for _, n := range shortYankPoints {
				if p.name == n {
					short = append(short, p)
				}
			}
		}
		points = short
	}
	landedAt := map[string]bool{}
	seeded := map[string]bool{}
	for _, p := range points {
		v := vaults[p.vault]
		s := v.s
		if v.thins && !seeded[p.vault] {
			// A first snapshot, so that the run the pull interrupts has one to delete.
			seeded[p.vault] = true
			v.churn(ctx, 16<<20)
			if err := v.waitEnd(ctx, plug(t, ctx, env, tl, s)); err != nil {
				t.Fatalf("%s: the first run: %v", s.Name, err)
			}
			v.check(ctx)
			pullNow(t, ctx, env, s)
		}
		size := 256 << 10
		if p.big {
			size = 16 << 20
		}
		v.churn(ctx, size)
		mark := plug(t, ctx, env, tl, s)
		bg := make(chan error, 1)
		switch {
		case p.vault == "pass":
			go func() {
				if _, err := env.VM.Wait(ctx, mark, agentproto.KindDrive, drivePath(s), map[string]string{"State": string(api.StateAwaitingPassphrase)}, cycleTimeout); err != nil {
					bg <- err
					return
				}
				_, err := env.VM.Call(ctx, 0, api.MethodUnlock, drivePath(s), s.Passphrase)
				bg <- err
			}()
		case p.eject:
			go func() {
				if _, err := env.VM.Wait(ctx, mark, agentproto.KindDrive, drivePath(s), map[string]string{"State": string(api.StateSafeToRemove)}, cycleTimeout); err != nil {
					bg <- err
					return
				}
				_, err := env.VM.Call(ctx, 0, api.MethodEject, drivePath(s), nil)
				bg <- err
			}()
		default:
			bg <- nil
		}
		var trig *agentproto.Event
		if p.kind != "" {
			match := p.match
			if p.kind == agentproto.KindUdev {
				match = map[string]string{"ID_SERIAL_SHORT": s.Serial}
				for k, x := range p.match {
					match[k] = x
				}
			}
			path := ""
			if p.kind == agentproto.KindDrive {
				path = drivePath(s)
			}
			ev, err := env.VM.Wait(ctx, mark, p.kind, path, match, cycleTimeout)
			if err != nil {
				t.Errorf("%s: the point never came: %v", p.name, err)
			} else {
				trig = &ev
			}
		}
		pullSeq, err := env.VM.Mark(ctx)
		if err != nil {
			t.Fatal(err)
		}
		since := mark
		if trig != nil {
			since = trig.Seq
		}
		if err := pullSettled(t, ctx, env, s, since); err != nil {
			t.Errorf("%s: the daemon never reported the drive absent after the pull: %v", p.name, err)
		}
		<-bg // the Unlock or Eject in flight ended (it may fail: the stick went away)
		evs, err := env.VM.Events(ctx, mark)
		if err != nil {
			t.Fatal(err)
		}
		tl.AddEvents(env.VM, evs, s.Serial, drivePath(s))
		hit, where := landed(evs, p, s, trig, pullSeq)
		if hit {
			landedAt[p.name] = true
		}
		left := leftovers(t, ctx, env)
		for _, l := range left {
			t.Errorf("%s: left behind: %s", p.name, l)
		}
		if now := mainPID(t, ctx, env); now != pid {
			t.Errorf("%s: plugvaultd's PID changed from %s to %s", p.name, pid, now)
			left = append(left, "daemon restarted")
			pid = now
		}
		daemonHealthy(t, ctx, env, "")
		replug := "replug: complete"
		m2 := plug(t, ctx, env, tl, s)
		if err := v.waitEnd(ctx, m2); err != nil {
			c.ReplugFailed++
			replug = "replug FAILED: " + err.Error()
			t.Errorf("%s: %s", p.name, replug)
		}
		lost, corrupted, note := v.check(ctx)
		c.Count++
		c.Lost += lost
		c.Corrupted += corrupted
		c.Leftovers += len(left)
		c.Line("%-40s landed %-3s (%s); leftovers %d; %s; %s", p.name, yesNo(hit), where, len(left), replug, note)
		pullNow(t, ctx, env, s)
	}
	c.Points = len(landedAt)
	tl.Note("%d yanks, %d distinct points landed", c.Count, c.Points)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// faultAtPercent runs one backup of v to a copy percentage, injects fault (SIGKILL of the
// daemon or a power cut) and returns once the resumed run ended. It reports whether the fault
// landed while copying, the bytes the first run had to copy, and those the resumed run had.
func faultAtPercent(t *testing.T, ctx context.Context, env *Env, tl *Timeline, v *vault, pct float64,
	fault func() (resumeSince uint64, err error)) (hit bool, before, after uint64, err error) {
	v.churn(ctx, 16<<20)
	mark := plug(t, ctx, env, tl, v.s)
	if _, err := env.VM.Wait(ctx, mark, agentproto.KindDrive, drivePath(v.s), map[string]string{"Progress": fmt.Sprintf(">=%g", pct)}, cycleTimeout); err != nil {
		return false, 0, 0, fmt.Errorf("the copy never reached %.0f%%: %w", pct*100, err)
	}
	at, err := env.VM.Mark(ctx)
	if err != nil {
		return false, 0, 0, err
	}
	evs, err := env.VM.Events(ctx, mark)
	if err != nil {
		return false, 0, 0, err
	}
	hit = true
	for _, ev := range evs {
		if ev.Seq > at {
			break
		}
		if agentproto.Matches(ev, agentproto.KindJournal, "", step("engine-finishing", "begin")) {
			hit = false
		}
		if ev.Kind == agentproto.KindDrive && ev.Path == drivePath(v.s) && ev.Props["BytesTotal"] != "" {
			before, _ = strconv.ParseUint(ev.Props["BytesTotal"], 10, 64)
		}
	}
	since, err := fault()
	if err != nil {
		return hit, before, 0, err
	}
	if err := v.waitEnd(ctx, since); err != nil {
		return hit, before, 0, fmt.Errorf("the resumed run: %w", err)
	}
	evs, err = env.VM.Events(ctx, since)
	if err != nil {
		return hit, before, 0, err
	}
	// The resumed run's total: the first BytesTotal published once its engine copies (the
	// drive's figures are reset to 0 when a run starts).
	copying, measured := false, false
	for _, ev := range evs {
		if agentproto.Matches(ev, agentproto.KindJournal, "", step("engine-copying", "begin")) {
			copying = true
		}
		if copying && ev.Kind == agentproto.KindDrive && ev.Path == drivePath(v.s) && ev.Props["BytesTotal"] != "" {
			after, _ = strconv.ParseUint(ev.Props["BytesTotal"], 10, 64)
			measured = true
			break
		}
	}
	if !measured {
		return hit, before, 0, errNotMeasured
	}
	tl.AddEvents(env.VM, evs, v.s.Serial, drivePath(v.s))
	return hit, before, after, nil
}

// errNoGuest: the guest is gone (it did not come back after a power cut); nothing more can be
// checked.
var errNoGuest = errors.New("the guest did not come back")

// errNotMeasured: the resumed run completed, but published no byte total while copying.
var errNotMeasured = errors.New("the resumed run published no byte total while copying")

// percents spreads n copy percentages over 5–95 %.
func percents(n int) []float64 {
	if n == 1 {
		return []float64{0.5}
	}
	p := make([]float64, n)
	for i := range p {
		p[i] = 0.05 + 0.9*float64(i)/float64(n-1)
	}
	return p
}

func savedLine(before, after uint64) string {
	if before == 0 {
		return "resume: no byte total seen before the fault"
	}
	if after > before {
		return fmt.Sprintf("resume copied %d bytes, more than the %d the first run had to", after, before)
	}
	return fmt.Sprintf("resume had %d of the first run's %d bytes to copy (saved %.0f%%)", after, before, 100*float64(before-after)/float64(before))
}

// TestTortureKill is R2: plugvaultd is SIGKILLed at different copy percentages; systemd
// restarts it, the partial is resumed; no complete snapshot is lost or changed.
func TestTortureKill(t *testing.T) {
	env, tl, ctx := tortureEnv(t)
	c := tortureCase(t, "SIGKILL of plugvaultd (R2)")
	n := 10
	if !*tortureFull {
		n = 2
	}
	restarts := 0
	faultSeries(t, ctx, env, tl, c, newVault(t, env, "t-kill", false), n, "kill", func() (uint64, error) {
		restarts, _ = strconv.Atoi(nRestarts(t, ctx, env))
		km, err := env.VM.Mark(ctx)
		if err != nil {
			return 0, err
		}
		if _, err := env.VM.Exec(ctx, "systemctl", "kill", "--kill-whom=main", "--signal=KILL", "plugvaultd.service"); err != nil {
			return 0, err
		}
		down, err := env.VM.Wait(ctx, km, agentproto.KindService, "", map[string]string{"up": "false"}, time.Minute)
		if err != nil {
			return 0, err
		}
		up, err := env.VM.Wait(ctx, down.Seq, agentproto.KindService, "", map[string]string{"up": "true"}, 2*time.Minute)
		if err != nil {
			return 0, fmt.Errorf("systemd did not restart plugvaultd: %w", err)
		}
		return up.Seq - 1, nil
	}, func() { daemonHealthy(t, ctx, env, strconv.Itoa(restarts+1)) })
}

// faultSeries injects fault at n copy percentages of backups to v (each resumed by the next
// run), then checks that the daemon is healthy, nothing is left and every complete snapshot is
// intact, and counts all of it into c.
func faultSeries(t *testing.T, ctx context.Context, env *Env, tl *Timeline, c *TortureCase, v *vault, n int, what string,
	fault func() (resumeSince uint64, err error), healthy func()) {
	points := map[string]bool{}
	for _, pct := range percents(n) {
		hit, before, after, err := faultAtPercent(t, ctx, env, tl, v, pct, fault)
		if errors.Is(err, errNoGuest) {
			c.Count++
			c.Line("%s at copy >= %3.0f%%: %v", what, pct*100, err)
			t.Fatal(err)
		}
		saved := savedLine(before, after)
		if errors.Is(err, errNotMeasured) {
			saved, err = "resume: "+err.Error(), nil
		}
		c.Count++
		if hit {
			points[fmt.Sprintf("%.0f", pct*100)] = true
		}
		replug := "resumed: complete"
		if err != nil {
			c.ReplugFailed++
			replug = "resume FAILED: " + err.Error()
			t.Errorf("%s at %.0f%%: %v", what, pct*100, err)
		}
		healthy()
		left := leftoversOfLocked(t, ctx, env)
		lost, corrupted, note := v.check(ctx)
		c.Lost += lost
		c.Corrupted += corrupted
		c.Leftovers += len(left)
		c.Line("%s at copy >= %3.0f%%: while copying %s; %s; %s; leftovers %d; %s", what, pct*100, yesNo(hit), replug, saved, len(left), note)
		pullNow(t, ctx, env, v.s)
	}
	c.Points = len(points)
}

// leftoversOfLocked is leftovers while a stick is plugged and its drive locked (safe to
// remove): nothing may be mapped, mounted or running either.
func leftoversOfLocked(t *testing.T, ctx context.Context, env *Env) []string {
	t.Helper()
	left := leftovers(t, ctx, env)
	for _, l := range left {
		t.Errorf("left behind: %s", l)
	}
	return left
}

// TestTorturePlugCycles is R4: an enrolled stick plugged and pulled many times with short and
// long gaps (pulled before udev settles, at the udev event, while unlocking, while copying, and
// after a whole run); afterwards the daemon's descriptors, goroutines and memory are flat and
// nothing is left in the guest.
func TestTorturePlugCycles(t *testing.T) {
	env, tl, ctx := tortureEnv(t)
	c := tortureCase(t, "plug/pull cycles (R4)")
	v := newVault(t, env, "t-cycle", false)
	s := v.s
	n := 100
	if !*tortureFull {
		n = 10
	}
	// Bounds on the drift over the cycles: a leak of one descriptor or goroutine per cycle
	// exceeds them within the CI pass already.
	const maxFD, maxGoroutines, maxRSSKiB = 3, 8, 16 << 10
	v.churn(ctx, 256<<10)
	m := plug(t, ctx, env, tl, s)
	if err := v.waitEnd(ctx, m); err != nil {
		t.Fatal(err)
	}
	pullNow(t, ctx, env, s)
	base := runtimeFigures(t, ctx, env)
	pid := mainPID(t, ctx, env)
	kinds := []string{"pulled at once", "pulled at udev add", "pulled while unlocking", "pulled while backing up", "whole run"}
	count := map[string]int{}
	failed := 0
	for i := 0; i < n; i++ {
		kind := kinds[i%len(kinds)]
		mark := plug(t, ctx, env, tl, s)
		var err error
		switch kind {
		case "pulled at udev add":
			_, err = env.VM.Wait(ctx, mark, agentproto.KindUdev, "", map[string]string{"ACTION": "add", "DEVTYPE": "disk", "ID_SERIAL_SHORT": s.Serial}, cycleTimeout)
		case "pulled while unlocking":
			_, err = env.VM.Wait(ctx, mark, agentproto.KindDrive, drivePath(s), map[string]string{"State": string(api.StateUnlocking)}, cycleTimeout)
		case "pulled while backing up":
			_, err = env.VM.Wait(ctx, mark, agentproto.KindDrive, drivePath(s), map[string]string{"State": string(api.StateBackingUp)}, cycleTimeout)
		case "whole run":
			err = v.waitEnd(ctx, mark)
		}
		if err != nil {
			failed++
			t.Errorf("cycle %d (%s): %v", i, kind, err)
		}
		count[kind]++
		if err := pullSettled(t, ctx, env, s, mark); err != nil {
			failed++
			t.Errorf("cycle %d (%s): the drive is not absent after the pull: %v", i, kind, err)
		}
	}
	left := leftovers(t, ctx, env)
	for _, l := range left {
		t.Errorf("after %d cycles: left behind: %s", n, l)
	}
	if now := mainPID(t, ctx, env); now != pid {
		t.Errorf("plugvaultd's PID changed from %s to %s during the cycles", pid, now)
	}
	m = plug(t, ctx, env, tl, s)
	if err := v.waitEnd(ctx, m); err != nil {
		c.ReplugFailed++
		t.Errorf("the run after the cycles: %v", err)
	}
	lost, corrupted, note := v.check(ctx)
	pullNow(t, ctx, env, s)
	end := runtimeFigures(t, ctx, env)
	dfd, dg, drss := end.fds-base.fds, end.goroutines-base.goroutines, end.rssKiB-base.rssKiB
	if dfd > maxFD || dg > maxGoroutines || drss > maxRSSKiB {
		t.Errorf("after %d cycles plugvaultd grew by %d descriptors, %d goroutines, %d KiB RSS (bounds %d, %d, %d KiB)",
			n, dfd, dg, drss, maxFD, maxGoroutines, maxRSSKiB)
	}
	c.Count, c.Points = n, len(count)
	c.Lost, c.Corrupted, c.Leftovers, c.ReplugFailed = lost, corrupted, len(left), c.ReplugFailed+failed
	c.Drift = fmt.Sprintf("%+d / %+d / %+d KiB", dfd, dg, drss)
	var kindsSeen []string
	for k, x := range count {
		kindsSeen = append(kindsSeen, fmt.Sprintf("%s ×%d", k, x))
	}
	sort.Strings(kindsSeen)
	c.Line("%d cycles: %s; cycles that went wrong %d", n, strings.Join(kindsSeen, ", "), failed)
	c.Line("plugvaultd before: %d fds, %d goroutines, %d KiB RSS; after: %d, %d, %d KiB (bounds +%d, +%d, +%d KiB)",
		base.fds, base.goroutines, base.rssKiB, end.fds, end.goroutines, end.rssKiB, maxFD, maxGoroutines, maxRSSKiB)
	c.Line("leftovers after the cycles: %d; the run after them: %s", len(left), note)
}

// TestTortureTwoSticks is R4: two enrolled drives plugged together each get a complete
// snapshot; an eject of one while the other backs up does not disturb the other.
func TestTortureTwoSticks(t *testing.T) {
	env, tl, ctx := tortureEnv(t)
	c := tortureCase(t, "two sticks at once (R4)")
	a, b := newVault(t, env, "t-two-a", false), newVault(t, env, "t-two-b", false)
	for round := 1; round <= 2; round++ {
		a.churn(ctx, 16<<20)
		b.fresh = a.fresh
		mark := plug(t, ctx, env, tl, a.s)
		plug(t, ctx, env, tl, b.s)
		ejected := ""
		if round == 2 {
			// Eject a as soon as b copies: b must still complete.
			if _, err := env.VM.Wait(ctx, mark, agentproto.KindDrive, drivePath(b.s), map[string]string{"State": string(api.StateBackingUp)}, cycleTimeout); err != nil {
				t.Fatal(err)
			}
			res, err := env.VM.Call(ctx, 0, api.MethodEject, drivePath(a.s), nil)
			if err != nil || res.Err != nil {
				t.Errorf("Eject of %s: %v %v", a.s.Name, err, res.Err)
			}
			st := status(t, ctx, env, b.s)
			ejected = fmt.Sprintf("; Eject of %s called while %s was backing up, %s when it returned", a.s.Name, b.s.Name, st.State)
		}
		errB := b.waitEnd(ctx, mark)
		errA := error(nil)
		if round == 1 {
			errA = a.waitEnd(ctx, mark)
		}
		evs, err := env.VM.Events(ctx, mark)
		if err != nil {
			t.Fatal(err)
		}
		tl.AddEvents(env.VM, evs, "", drivePath(a.s))
		tl.AddEvents(env.VM, evs, "", drivePath(b.s))
		for _, e := range []error{errA, errB} {
			if e != nil {
				c.ReplugFailed++
				t.Errorf("round %d: %v", round, e)
			}
		}
		overlap := overlapped(evs, drivePath(a.s), drivePath(b.s))
		if round == 2 {
			// a was ejected (and powered off): pull it and plug it again; it completes.
			if err := pullSettled(t, ctx, env, a.s, mark); err != nil {
				t.Fatal(err)
			}
			m := plug(t, ctx, env, tl, a.s)
			if err := a.waitEnd(ctx, m); err != nil {
				c.ReplugFailed++
				t.Errorf("replug of %s after its eject: %v", a.s.Name, err)
			}
		}
		la, ca, na := a.check(ctx)
		lb, cb, nb := b.check(ctx)
		left := leftoversOfLocked(t, ctx, env)
		c.Count++
		c.Lost += la + lb
		c.Corrupted += ca + cb
		c.Leftovers += len(left)
		c.Line("round %d: backups overlapped in time: %s%s; %s: %s; %s: %s", round, yesNo(overlap), ejected, a.s.Name, na, b.s.Name, nb)
		pullNow(t, ctx, env, a.s)
		pullNow(t, ctx, env, b.s)
	}
	c.Points = c.Count
}

// overlapped says whether drives a and b were backing up at the same moment.
func overlapped(evs []agentproto.Event, a, b string) bool {
	state := map[string]string{}
	for _, ev := range evs {
		if ev.Kind == agentproto.KindDrive && ev.State != "" {
			state[ev.Path] = ev.State
		}
		if state[a] == string(api.StateBackingUp) && state[b] == string(api.StateBackingUp) {
			return true
		}
	}
	return false
}

// damage is a way to break an enrolled stick's image on the host (unplugged).
type damage struct {
	stick, what string
	apply       func(s *Stick) error
}

func badInputs() []damage {
	return []damage{
		{"t-garbage", "LUKS header overwritten with garbage (first 32 KiB random)", func(s *Stick) error {
			return overwrite(s.Path, 0, 32<<10)
		}},
		{"t-trunc", "LUKS header truncated (the stick ends 64 KiB in: both header copies, no keyslot material)", func(s *Stick) error {
			return os.Truncate(s.Path, 64<<10)
		}},
		{"t-badfs", "filesystem inside LUKS corrupt (the first MiB of the encrypted data random)", func(s *Stick) error {
			out, err := run(nil, "cryptsetup", "luksDump", "--dump-json-metadata", s.Path)
			if err != nil {
				return err
			}
			var meta struct {
				Segments map[string]struct {
					Offset string `json:"offset"`
				} `json:"segments"`
			}
			if err := json.Unmarshal([]byte(out), &meta); err != nil {
				return err
			}
			off, err := strconv.ParseInt(meta.Segments["0"].Offset, 10, 64)
			if err != nil {
				return fmt.Errorf("cannot read the data offset of %s: %w", s.Name, err)
			}
			return overwrite(s.Path, off, 1<<20)
		}},
	}
}

// overwrite writes n random bytes at off into the file at path.
func overwrite(path string, off, n int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	if _, err := f.WriteAt(b, off); err != nil {
		return err
	}
	return f.Sync()
}

// TestTortureBadInput is R3 (its damaged sticks): an enrolled stick with a garbage or
// truncated LUKS header, and one whose filesystem is corrupt. Each ends in a clear state with a
// reason (or is left alone when nothing identifies it), nothing is mapped or mounted, the daemon
// stays up, and not one byte of the stick changes.
func TestTortureBadInput(t *testing.T) {
	env, tl, ctx := tortureEnv(t)
	c := tortureCase(t, "bad input (R3)")
	pid := mainPID(t, ctx, env)
	for _, d := range badInputs() {
		s := env.Sticks[d.stick]
		if err := d.apply(s); err != nil {
			t.Fatalf("cannot damage %s: %v", s.Name, err)
		}
		digest, err := s.Digest()
		if err != nil {
			t.Fatal(err)
		}
		mark := plug(t, ctx, env, tl, s)
		waitUdev(t, ctx, env, mark, s, "add")
		if _, err := env.VM.Exec(ctx, "udevadm", "settle", "--timeout=120"); err != nil {
			t.Fatal(err)
		}
		// Either the daemon takes the stick up and ends in a state that says why it stops, or
		// nothing identifies it as the drive and it is left alone (the drive stays absent).
		outcome := ""
		// (The daemon handles a udev event within seconds; a minute without a state change
		// after udev settled means it left the stick alone.)
		if _, err := env.VM.Wait(ctx, mark, agentproto.KindDrive, drivePath(s), map[string]string{"State": "present|unlocking|failed"}, time.Minute); err == nil {
			end, err := env.VM.Wait(ctx, mark, agentproto.KindDrive, drivePath(s), map[string]string{"State": strings.Join([]string{
				string(api.StateFailed), string(api.StateAwaitingPassphrase), string(api.StateSafeToRemove)}, "|")}, cycleTimeout)
			if err != nil {
				t.Errorf("%s: no end state: %v", d.what, err)
			}
			st := status(t, ctx, env, s)
			outcome = fmt.Sprintf("state %s: %q", st.State, st.StateReason)
			if end.State == string(api.StateSafeToRemove) && st.LastResult == api.ResultSuccess {
				t.Errorf("%s: a backup succeeded on a damaged stick", d.what)
			}
			if st.StateReason == "" {
				t.Errorf("%s: state %s without a reason", d.what, st.State)
			}
		} else {
			st := status(t, ctx, env, s)
			outcome = fmt.Sprintf("left alone (drive %s, present %v)", st.State, st.Present)
			if st.State != api.StateAbsent {
				t.Errorf("%s: the drive is %s although nothing identified the stick", d.what, st.State)
			}
		}
		left := leftovers(t, ctx, env)
		for _, l := range left {
			t.Errorf("%s: left behind: %s", d.what, l)
		}
		if now := mainPID(t, ctx, env); now != pid {
			t.Errorf("%s: plugvaultd's PID changed from %s to %s", d.what, pid, now)
			pid = now
		}
		daemonHealthy(t, ctx, env, "")
		pm, err := env.VM.Mark(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := pullSettled(t, ctx, env, s, pm); err != nil {
			t.Errorf("%s: %v", d.what, err)
		}
		after, err := s.Digest()
		if err != nil {
			t.Fatal(err)
		}
		written := "not one byte written"
		if after != digest {
			written = "THE STICK WAS WRITTEN TO"
			c.Corrupted++
			t.Errorf("%s: the stick was written to", d.what)
		}
		c.Count++
		c.Points++
		c.Leftovers += len(left)
		c.Line("%s: %s; leftovers %d; %s", d.what, outcome, len(left), written)
	}
}

// TestTortureBigSource is R3 (its awkward source): one directory with 100 k entries (10 k in
// the short pass) and a 4 GiB sparse file with a little data in it. The backup completes, the
// snapshot equals the source, the sparse file stays sparse on the stick (its holes are not
// written out) and verify agrees. The source is put back as it was afterwards.
func TestTortureBigSource(t *testing.T) {
	env, tl, ctx := tortureEnv(t)
	c := tortureCase(t, "big source (R3)")
	v := newVault(t, env, "t-big", false)
	v.wait = 30 * time.Minute // 100 k entries under TCG take minutes
	entries := 100000
	if !*tortureFull {
		entries = 10000
	}
	const sparseSize = 4 << 30
	// The guest's root filesystem has too few inodes for 100 k files: the big directory is a
	// tmpfs of alice's (the engine crosses into filesystems mounted in the source).
	big := SourceDir + "/torture-big"
	if _, err := env.VM.Shell(ctx, fmt.Sprintf("mkdir -p %[1]s && mount -t tmpfs -o mode=0755,uid=%[2]d,gid=%[2]d,nr_inodes=%[3]d,size=256m plugvault-big %[1]s", big, AliceUID, entries+1000)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.VM.Shell(context.Background(), "umount "+big+" && rmdir "+big) })
	// The data blocks sit at the start, in the middle and at the end of the sparse file.
	script := fmt.Sprintf(`mkdir -p %[1]s/many && cd %[1]s/many && seq -f 'f%%06g' 1 %[2]d | xargs touch
truncate -s %[3]d %[1]s/sparse.img
for off in 0 %[4]d %[5]d; do head -c 65536 /dev/urandom | dd of=%[1]s/sparse.img bs=65536 seek=$off conv=notrunc status=none; done
sync`, big, entries, sparseSize, sparseSize/2/65536, sparseSize/65536-1)
	if _, err := env.VM.ExecAs(ctx, AliceUID, nil, "/bin/sh", "-ec", script); err != nil {
		t.Fatal(err)
	}
	v.fresh = manifestOf(t, ctx, env, SourceDir, false)
	if n := countUnder(v.fresh, "torture-big/many/"); n != entries {
		t.Fatalf("the source holds %d entries in torture-big/many, want %d", n, entries)
	}
	mark := plug(t, ctx, env, tl, v.s)
	replug := 0
	if err := v.waitEnd(ctx, mark); err != nil {
		replug = 1
		t.Errorf("the backup of the big source: %v", err)
	}
	evs, _ := env.VM.Events(ctx, mark)
	tl.AddEvents(env.VM, evs, v.s.Serial, drivePath(v.s))
	lost, corrupted, note := v.check(ctx)
	// The sparse file on the stick: at most the data written plus a little per extent.
	var allocated int64
	onStick(t, ctx, env, v.s, func(snapDir string) {
		for name := range v.known {
			src := snapshotSource(t, ctx, env, snapDir+"/"+name)
			out, err := env.VM.Exec(ctx, "stat", "-c", "%b %B", src+"/torture-big/sparse.img")
			if err != nil {
				t.Fatal(err)
			}
			var blocks, unit int64
			if _, err := fmt.Sscan(out, &blocks, &unit); err != nil {
				t.Fatalf("stat of the sparse file: %q: %v", out, err)
			}
			allocated = max(allocated, blocks*unit)
		}
	})
	const allocBound = 16 << 20
	if allocated > allocBound {
		corrupted++
		t.Errorf("the 4 GiB sparse file takes %d bytes on the stick (bound %d): its holes were written out", allocated, allocBound)
	}
	left := leftoversOfLocked(t, ctx, env)
	daemonHealthy(t, ctx, env, "")
	pullNow(t, ctx, env, v.s)
	c.Count, c.Points = 1, 1
	c.Lost, c.Corrupted, c.Leftovers, c.ReplugFailed = lost, corrupted, len(left), replug
	c.Line("%d entries in one directory and a %d GiB sparse file (192 KiB of data): backed up; the sparse file takes %d KiB on the stick; leftovers %d; %s",
		entries, sparseSize>>30, allocated>>10, len(left), note)
}

// countUnder counts the entries of m whose path starts with prefix.
func countUnder(m map[string]agentproto.Entry, prefix string) int {
	n := 0
	for p := range m {
		if strings.HasPrefix(p, prefix) {
			n++
		}
	}
	return n
}

// TestTortureSuspend is R2: the guest suspends (systemctl suspend, through logind) while a
// backup copies. plugvaultd's delay inhibitor must hold the sleep back until the run has
// stopped and the drive is locked; after the wake-up the backup runs again and completes;
// nothing is lost.
//
// The sleep is the kernel's own suspend test (pm_test=freezer): logind's PrepareForSleep, the
// inhibitor, systemd-sleep and the freezing of user space all happen, and the kernel wakes
// 5 s later without powering devices down. A real S3 sleep is not used: after an S3 resume
// under QEMU the guest's virtio-serial port stops carrying the agent's answers (reconnecting
// the host end did not bring them back for long), and the harness loses the guest.
func TestTortureSuspend(t *testing.T) {
	env, tl, ctx := tortureEnv(t)
	c := tortureCase(t, "suspend during a backup (R2)")
	v := newVault(t, env, "t-sleep", false)
	s := v.s
	v.churn(ctx, 16<<20)
	if _, err := env.VM.Shell(ctx, "echo freezer > /sys/power/pm_test"); err != nil {
		t.Fatal(err)
	}
	defer env.VM.Shell(ctx, "echo none > /sys/power/pm_test")
	mark := plug(t, ctx, env, tl, s)
	copying, err := env.VM.Wait(ctx, mark, agentproto.KindDrive, drivePath(s), map[string]string{"Progress": ">=0.3"}, cycleTimeout)
	if err != nil {
		t.Fatal(err)
	}
	req, err := env.VM.Mark(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.VM.Exec(ctx, "systemctl", "suspend"); err != nil {
		t.Fatal(err)
	}
	tl.Add("systemctl suspend (pm_test=freezer)", time.Now())
	// Before the sleep the run must have ended with the drive locked (safe to remove, or absent
	// if the stick went away); then, awake, a run completes.
	stopped, err := env.VM.Wait(ctx, req, agentproto.KindDrive, drivePath(s), map[string]string{"State": string(api.StateSafeToRemove) + "|" + string(api.StateAbsent) + "|" + string(api.StateFailed)}, cycleTimeout)
	if err != nil {
		t.Fatal(err)
	}
	replug := "after the wake-up the backup ran again and completed"
	since := stopped.Seq
	if stopped.State == string(api.StateAbsent) {
		pullNow(t, ctx, env, s)
		since = plug(t, ctx, env, tl, s)
		replug = "the stick was gone after the wake-up; replugged, the backup completed"
	}
	if err := v.waitEnd(ctx, since); err != nil {
		c.ReplugFailed++
		replug = "FAILED after the wake-up: " + err.Error()
		t.Error(replug)
	}
	entry, exit := sleepTimes(t, ctx, env, copying.Time)
	tl.Add("kernel: suspend entry", env.VM.HostTime(entry))
	tl.Add("kernel: suspend exit", env.VM.HostTime(exit))
	if stopped.Time > entry {
		t.Errorf("the drive was %s only %v after the kernel began to suspend: the inhibitor did not hold the sleep back",
			stopped.State, time.Duration(stopped.Time-entry))
	}
	evs, _ := env.VM.Events(ctx, mark)
	tl.AddEvents(env.VM, evs, s.Serial, drivePath(s))
	left := leftoversOfLocked(t, ctx, env)
	daemonHealthy(t, ctx, env, "")
	lost, corrupted, note := v.check(ctx)
	c.Count, c.Points = 1, 1
	c.Lost, c.Corrupted, c.Leftovers = lost, corrupted, len(left)
	c.Line("suspend at copy >= 30%%: before sleeping the drive was %s (%s), %.1fs before the kernel froze; %s; leftovers %d; %s",
		stopped.State, stopped.Props["StateReason"], time.Duration(entry-stopped.Time).Seconds(), replug, len(left), note)
	pullNow(t, ctx, env, s)
}

// sleepTimes returns when the guest's kernel began the suspend after since and when it came
// back (guest Unix nanoseconds), from the kernel's "PM: suspend entry" and "PM: suspend exit"
// in the journal.
func sleepTimes(t *testing.T, ctx context.Context, env *Env, since int64) (entry, exit int64) {
	t.Helper()
	out, err := env.VM.Exec(ctx, "journalctl", "-k", "-o", "json", "--output-fields=MESSAGE",
		fmt.Sprintf("--since=@%d.%06d", since/1e9, since%1e9/1e3))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(out, "\n") {
		var e struct {
			Message string `json:"MESSAGE"`
			Time    string `json:"__REALTIME_TIMESTAMP"`
		}
		if json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		us, _ := strconv.ParseInt(e.Time, 10, 64)
		switch {
		case strings.Contains(e.Message, "PM: suspend entry") && entry == 0:
			entry = us * 1000
		case strings.Contains(e.Message, "PM: suspend exit") && entry != 0 && exit == 0:
			exit = us * 1000
		}
	}
	if entry == 0 || exit == 0 {
		t.Fatalf("the kernel logged no suspend entry and exit after the suspend was asked for (entry %d, exit %d)", entry, exit)
	}
	return entry, exit
}

// TestTorturePowerCut is R2 (last: it resets the guest): the power fails at different copy
// percentages; after each reboot every complete snapshot is intact and the partial is resumed.
func TestTorturePowerCut(t *testing.T) {
	env, tl, ctx := tortureEnv(t)
	c := tortureCase(t, "power cut (R2)")
	n := 10
	if !*tortureFull {
		n = 1
	}
	faultSeries(t, ctx, env, tl, c, newVault(t, env, "t-power", false), n, "power cut", func() (uint64, error) {
		tl.Add("power cut (system_reset)", time.Now())
		boot, err := env.VM.PowerCut(ctx)
		if err != nil {
			return 0, fmt.Errorf("%w after the power cut: %v", errNoGuest, err)
		}
		tl.Add("guest up again ("+boot.SystemState+")", time.Now())
		// The event log starts afresh with the new boot.
		return 0, nil
	}, func() { daemonHealthy(t, ctx, env, "") })
}
