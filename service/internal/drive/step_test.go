package drive

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plugvault/plugvault/service/api"
)

var stepNow = time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)

const stepUUID = "0b9f5c6e-1111-4a4a-9c9c-aaaaaaaaaaaa"

var (
	stickB = device{DevPath: "/devices/usb2/2-1/block/sdb", DevName: "/dev/sdb", DevType: "disk", Vendor: "SanDisk", Model: "Ultra Fit", Serial: "4C530001"}
	stickC = device{DevPath: "/devices/usb2/2-2/block/sdc", DevName: "/dev/sdc", DevType: "disk", Vendor: "SanDisk", Model: "Ultra Fit", Serial: "4C530002"}
)

// stepStates are the contract's states.
var stepStates = []api.State{
	api.StateAbsent, api.StatePresent, api.StateUnlocking, api.StateAwaitingPassphrase, api.StateMounting,
	api.StateBackingUp, api.StateFinishing, api.StateUnmounting, api.StateLocking, api.StateSafeToRemove,
	api.StateFailed,
}

// stepFixtures are the machines of the state table, by the name its first column uses: each of
// the contract's states as a run (or none) leaves it, in the order of DESIGN's diagram, and the
// variants (state/variant) whose outcome differs: a run's other phases, a drive open for
// browsing, a run paused for suspend.
var stepFixtures = []struct {
	name string
	s    machine
}{
	{"absent", fixture(api.StateAbsent, "")},
	{"present", fixture(api.StatePresent, "")},
	{"present/browsing", fixture(api.StatePresent, "browsing")},
	{"present/waiting", fixture(api.StatePresent, "waiting")},
	{"present/browse-open", fixture(api.StatePresent, "browse-open")},
	{"present/verify-open", fixture(api.StatePresent, "verify-open")},
	{"present/verify-work", fixture(api.StatePresent, "verify-work")},
	{"present/verify-close", fixture(api.StatePresent, "verify-close")},
	{"present/run", fixture(api.StatePresent, "run")},
	{"present/inhibit", fixture(api.StatePresent, phaseInhibit)},
	{"present/close-browse", fixture(api.StatePresent, phaseCloseBrowse)},
	{"unlocking", fixture(api.StateUnlocking, "")},
	{"unlocking/reopen", fixture(api.StateUnlocking, phaseReopen)},
	{"awaiting-passphrase", fixture(api.StateAwaitingPassphrase, "")},
	{"awaiting-passphrase/op", fixture(api.StateAwaitingPassphrase, "op")},
	{"mounting", fixture(api.StateMounting, "")},
	{"mounting/adopted", fixture(api.StateMounting, "adopted")},
	{"mounting/snapshots", fixture(api.StateMounting, phaseSnapshots)},
	{"backing-up", fixture(api.StateBackingUp, "")},
	{"finishing", fixture(api.StateFinishing, "")},
	{"unmounting", fixture(api.StateUnmounting, "")},
	{"locking", fixture(api.StateLocking, "")},
	{"locking/end", fixture(api.StateLocking, phaseEnd)},
	{"locking/eject", fixture(api.StateLocking, "eject")},
	{"locking/eject-power-off", fixture(api.StateLocking, "eject-power-off")},
	{"locking/eject-gone", fixture(api.StateLocking, "eject-gone")},
	{"safe-to-remove", fixture(api.StateSafeToRemove, "")},
	{"safe-to-remove/resume", fixture(api.StateSafeToRemove, "resume")},
	{"failed", fixture(api.StateFailed, "")},
}

// fixture is a machine in state st as a run (or none) leaves it there: what is set up, which
// activity holds the slot and, for a run, the phase it is in; variant picks another phase or
// situation in that state.
func fixture(st api.State, variant string) machine {
	s := machine{st: api.DriveStatus{Name: "A", LuksUUID: stepUUID, State: st, Present: st != api.StateAbsent, EtaSeconds: -1}}
	if st == api.StateAbsent {
		return s
	}
	if variant == "eject-gone" {
		// The stick went while an eject locked it or powered it off.
		s.act, s.ejecting, s.powerOff, s.gone = kindEject, true, true, true
		return s
	}
	dv := stickB
	s.dev = &dv
	inRun := func(phase string) {
		s.act = kindBackup
		s.run = run{phase: phase, inhibited: phase != "" && phase != phaseInhibit}
	}
	mapped := func() { s.mapTried, s.mapped = true, true }
	mounted := func() { mapped(); s.mountTried, s.mounted = true, true }
	switch st {
	case api.StatePresent:
		switch variant {
		case "browsing":
			mounted()
			s.readOnly = true
		case "waiting":
			// Plugged in again while the previous plug-in is cleaned up.
			s.act, s.startAfter = kindCleanup, true
			s.op = op{phase: opPhaseCleanup, keep: true}
			mapped()
		case "browse-open", "verify-open":
			// Opening read-only, from safe-to-remove.
			s.act = kindBrowse
			if variant == "verify-open" {
				s.act = kindVerify
			}
			s.op = op{phase: opPhaseOpen, endState: api.StateSafeToRemove, endReason: "Safe to remove", openReason: "Open for browsing"}
			s.mapTried = true
		case "verify-work":
			s.act = kindVerify
			s.op = op{phase: opPhaseWork, opened: true, endState: api.StateSafeToRemove, endReason: "Safe to remove"}
			mounted()
			s.readOnly = true
		case "verify-close":
			// The teardown of what the verify opened has closed everything (or failed to).
			s.act = kindVerify
			s.op = op{phase: opPhaseClose, opened: true, endState: api.StateSafeToRemove, endReason: "Safe to remove"}
		case "run":
			inRun("")
		case phaseInhibit:
			inRun(phaseInhibit)
		case phaseCloseBrowse:
			// The browse mount's teardown has closed everything (or failed to).
			inRun(phaseCloseBrowse)
		}
	case api.StateUnlocking:
		if variant == phaseReopen {
			// The adopted mapping's teardown has closed it (or failed to).
			inRun(phaseReopen)
			s.run.adopted = true
			break
		}
		inRun(phaseKeyfile)
		s.mapTried = true
	case api.StateAwaitingPassphrase:
		s.mapTried = true
		if variant == "op" {
			// A verify from safe-to-remove whose keyfile the drive refused.
			s.act = kindVerify
			s.op = op{phase: opPhasePassphrase, endState: api.StateSafeToRemove, endReason: "Safe to remove", reason: "Verifying the latest snapshot"}
			break
		}
		inRun(phasePassphrase)
	case api.StateMounting:
		switch variant {
		case phaseSnapshots:
			inRun(phaseSnapshots)
			mounted()
		default:
			inRun(phaseMount)
			s.run.adopted = variant == "adopted"
			mapped()
			s.mountTried = true
		}
	case api.StateBackingUp:
		inRun(phaseEngine)
		mounted()
	case api.StateFinishing:
		inRun(phaseFinished)
		mounted()
		s.run.res = &Result{Snapshot: "20261126T080000Z"}
	case api.StateUnmounting:
		inRun(phaseTeardown)
		mounted()
	case api.StateLocking:
		switch variant {
		case phaseEnd:
			inRun(phaseEnd)
		case "eject", "eject-power-off":
			// An eject's teardown has closed everything (or failed to).
			s.act, s.ejecting, s.powerOff = kindEject, true, variant == "eject-power-off"
		default:
			inRun(phaseTeardown)
			mapped()
		}
	case api.StateSafeToRemove:
		s.resume = variant == "resume"
	case api.StateFailed:
		s.ioFailed, s.failedAt = true, stepNow.Add(-time.Second)
	}
	return s
}

// inUseErr stands for usbpower.InUseError.
type inUseErr struct{}

func (inUseErr) Error() string   { return "in use" }
func (inUseErr) InUse() []string { return []string{"/dev/sdb2 mounted at /media/x"} }

var errBoom = errors.New("boom")

// stepEvents are the events of the state table: one of each kind, and the variants whose
// outcome differs, by the name the table uses. closed marks the events the executor sends only
// after a teardown that closed everything: they meet each state with nothing set up.
var stepEvents = []struct {
	name   string
	ev     event
	closed bool
}{
	{"plug", evPlug{dev: stickB}, false},
	{"plug-other", evPlug{dev: stickC}, false},
	{"remove", evRemove{devPath: stickB.DevPath}, false},
	{"sleep", evSleep{}, false},
	{"resume", evResume{}, false},
	{"shutdown", evShutdown{}, false},
	{"shutdown-locked", evShutdownLocked{}, true},
	{"adopted-mapping", evAdopted{}, false},
	{"adopted-mount", evAdopted{mount: true}, false},
	{"backup-now", evBackupNow{}, false},
	{"cancel", evCancel{}, false},
	{"eject", evEject{}, false},
	{"eject-wait", evEjectWait{}, false},
	{"eject-claim", evEjectClaim{}, false},
	{"eject-over", evEjectOver{}, false},
	{"browse", evClaim{kind: kindBrowse, verb: "browse", reason: "Opening the drive for browsing", openReason: "Open for browsing"}, false},
	{"verify", evClaim{kind: kindVerify, verb: "verify", reason: "Verifying the latest snapshot"}, false},
	{"open-done", evOpenDone{}, false},
	{"open-failed", evOpenDone{failed: true}, false},
	{"open-keyfile-refused", evOpenDone{problem: "the keyfile /k is missing"}, false},
	{"work-done", evWorkDone{}, false},
	{"unlock", evUnlockAttempt{}, false},
	{"unlock-over", evUnlockOver{}, false},
	{"wrong-passphrase", evWrongPassphrase{}, false},
	{"passphrase-ok", evPassphraseOK{}, false},
	{"open-begin", evOpenBegin{}, false},
	{"opened", evOpened{}, false},
	{"mount-begin", evMountBegin{}, false},
	{"mounted", evMounted{}, false},
	{"unmounting", evUnmounting{}, false},
	{"unmounted", evUnmounted{}, false},
	{"locking", evLocking{}, false},
	{"locked", evLocked{}, false},
	{"torn-down", evTornDown{}, false},
	{"progress", evProgress{p: Progress{FilesDone: 1, FilesTotal: 4, BytesDone: 1, BytesTotal: 4, ETA: -1}}, false},
	{"progress-finishing", evProgress{p: Progress{Phase: "finishing", ETA: -1}}, false},
	{"snapshots", evSnapshots{snaps: []api.Snapshot{{Name: "20261126T080000Z", Created: stepNow.Unix(), Status: api.SnapshotComplete}}}, false},
	{"run-started", evRunStarted{}, false},
	{"inhibited", evInhibited{}, false},
	{"keyfile-ok", evKeyfileDone{}, false},
	{"keyfile-refused", evKeyfileDone{problem: "the keyfile /k is missing"}, false},
	{"keyfile-failed", evKeyfileDone{err: failf(errBoom, "The drive cannot be unlocked: boom")}, false},
	{"passphrase-done", evPassphraseDone{}, false},
	{"passphrase-failed", evPassphraseDone{err: errBoom}, false},
	{"mount-done", evMountDone{}, false},
	{"mount-failed", evMountDone{err: errBoom}, false},
	{"cancelled", evMountDone{err: errBoom, cause: errUserCancel}, false},
	{"snapshots-read", evSnapshotsRead{}, false},
	{"engine-done", evEngineDone{}, false},
	{"engine-failed", evEngineDone{err: errBoom}, false},
	{"teardown-done", evTeardownDone{}, false},
	{"teardown-failed", evTeardownDone{err: errBoom}, false},
	{"power-off-done", evPowerOffDone{}, true},
	{"power-off-in-use", evPowerOffDone{err: inUseErr{}}, true},
	{"power-off-failed", evPowerOffDone{err: errBoom}, true},
	{"run-ended", evRunEnded{}, false},
}

// closedMachine is s after a teardown that closed everything.
func closedMachine(s machine) machine {
	s.mapTried, s.mapped, s.mountTried, s.mounted, s.readOnly = false, false, false, false, false
	return s
}

// before is the machine an event of the table meets in fixture s.
func before(s machine, closed bool) machine {
	if closed {
		return closedMachine(s)
	}
	return s
}

// outcome is one cell of the table: the next state and the effects, logs left out.
type outcome struct {
	next    api.State
	effects string // names joined by ",", or "-"
}

func stepOutcome(s machine, ev event) outcome {
	next, effs := step(s, ev, stepNow)
	var names []string
	for _, e := range effs {
		if _, ok := e.(effLog); !ok {
			names = append(names, e.effectName())
		}
	}
	o := outcome{next: next.st.State, effects: strings.Join(names, ",")}
	if o.effects == "" {
		o.effects = "-"
	}
	return o
}

// stepTable computes the state table in the format of doc.go: for each event, the rows of the
// fixtures whose outcome differs from the most common one, then that one as the "*" row
// (left out when it is "= -").
func stepTable() string {
	type rel struct {
		same    bool
		next    api.State
		effects string
	}
	var b strings.Builder
	for _, e := range stepEvents {
		count := map[rel]int{}
		cells := make([]rel, len(stepFixtures))
		for i, f := range stepFixtures {
			o := stepOutcome(before(f.s, e.closed), e.ev)
			r := rel{same: o.next == f.s.st.State, effects: o.effects}
			if !r.same {
				r.next = o.next
			}
			cells[i] = r
			count[r]++
		}
		def, best := cells[0], 0
		for _, r := range cells {
			if count[r] > best {
				def, best = r, count[r]
			}
		}
		row := func(name string, r rel) {
			next := "="
			if !r.same {
				next = string(r.next)
			}
			fmt.Fprintf(&b, "//\t%-24s %-20s %-20s %s\n", name, e.name, next, r.effects)
		}
		for i, f := range stepFixtures {
			if cells[i] != def {
				row(f.name, cells[i])
			}
		}
		if def != (rel{same: true, effects: "-"}) {
			row("*", def)
		}
	}
	return b.String()
}

// TestPrintStepTable prints the table step computes, to review and paste into doc.go after a
// change of step.
func TestPrintStepTable(t *testing.T) {
	if os.Getenv("PLUGVAULT_PRINT_STEP_TABLE") == "" {
		t.Skip("set PLUGVAULT_PRINT_STEP_TABLE=1 to print the table")
	}
	fmt.Print(stepTable())
}

// docTable reads the state table from doc.go: (state, event) → "next effects".
func docTable(t *testing.T) map[[2]string]string {
	t.Helper()
	src, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(src), "\n")
	start := slices.IndexFunc(lines, func(l string) bool {
		return slices.Equal(strings.Fields(strings.TrimPrefix(l, "//")), []string{"state", "event", "next", "effects"})
	})
	if start < 0 {
		t.Fatal("doc.go has no state table")
	}
	rows := map[[2]string]string{}
	for _, l := range lines[start+1:] {
		if !strings.HasPrefix(l, "//\t") {
			break
		}
		f := strings.Fields(strings.TrimPrefix(l, "//"))
		if len(f) != 4 {
			t.Fatalf("doc.go: table row %q has %d columns, want 4", l, len(f))
		}
		key := [2]string{f[0], f[1]}
		if _, dup := rows[key]; dup {
			t.Errorf("doc.go: two rows for %s %s", f[0], f[1])
		}
		rows[key] = f[2] + " " + f[3]
	}
	if len(rows) == 0 {
		t.Fatal("doc.go: the state table is empty")
	}
	return rows
}

// TestStepTable checks step against the table of doc.go for every state and every event.
func TestStepTable(t *testing.T) {
	rows := docTable(t)
	fixtures := map[string]bool{"*": true}
	for _, f := range stepFixtures {
		fixtures[f.name] = true
	}
	events := map[string]bool{}
	for _, e := range stepEvents {
		events[e.name] = true
	}
	for key := range rows {
		if !fixtures[key[0]] || !events[key[1]] {
			t.Errorf("doc.go: row %s %s names an unknown state or event", key[0], key[1])
		}
	}
	for _, f := range stepFixtures {
		for _, e := range stepEvents {
			want, ok := rows[[2]string{f.name, e.name}]
			if !ok {
				want, ok = rows[[2]string{"*", e.name}]
			}
			if !ok {
				want = "= -"
			}
			o := stepOutcome(before(f.s, e.closed), e.ev)
			next := string(o.next)
			if o.next == f.s.st.State {
				next = "="
			}
			if got := next + " " + o.effects; got != want {
				t.Errorf("%s, %s: step gives %q, doc.go says %q", f.name, e.name, got, want)
			}
		}
	}
	if t.Failed() {
		t.Logf("the table step computes (check it, then paste it into doc.go):\n%s", stepTable())
	}
}

// TestStepEveryStateEveryEvent checks what must hold after every event in every state: step is
// pure (the same answer twice, its input untouched), what it publishes is the machine it returns,
// an absent drive is not present, it is never published safe to remove while anything may be
// set up, a run starts only in a free slot, and nothing is mounted without our key.
func TestStepEveryStateEveryEvent(t *testing.T) {
	for _, f := range stepFixtures {
		for _, e := range stepEvents {
			t.Run(f.name+"/"+e.name, func(t *testing.T) {
				in := before(f.s, e.closed)
				before := fmt.Sprintf("%+v %+v", in, *in.dev0())
				next, effs := step(in, e.ev, stepNow)
				next2, effs2 := step(in, e.ev, stepNow)
				if after := fmt.Sprintf("%+v %+v", in, *in.dev0()); after != before {
					t.Errorf("step changed its input:\n%s\n%s", before, after)
				}
				if !reflect.DeepEqual(next, next2) || !reflect.DeepEqual(effs, effs2) {
					t.Error("step gave two answers")
				}
				checkStep(t, in, e.ev, next, effs)
			})
		}
	}
}

// dev0 is s.dev, or a zero device.
func (s machine) dev0() *device {
	if s.dev == nil {
		return &device{}
	}
	return s.dev
}

// checkStep checks the invariants of one step from in to next.
func checkStep(t *testing.T, in machine, ev event, next machine, effs []effect) {
	t.Helper()
	if !slices.Contains(stepStates, next.st.State) {
		t.Errorf("%s: unknown state %q", ev.eventName(), next.st.State)
	}
	if next.st.Present != (next.st.State != api.StateAbsent) && next.st.State == api.StateAbsent {
		t.Errorf("%s: absent but present", ev.eventName())
	}
	var last *api.DriveStatus
	runs := 0
	for _, e := range effs {
		switch e := e.(type) {
		case effPublish:
			last = &e.st
			if e.st.State == api.StateSafeToRemove && next.setUp() {
				t.Errorf("%s: safe to remove published while mapped %v, mounted %v", ev.eventName(), next.mapTried, next.mountTried)
			}
		case effStartRun:
			runs++
			_, freed := ev.(evRunEnded)
			freed = freed || slices.ContainsFunc(effs, func(e effect) bool { _, ok := e.(effEndActivity); return ok })
			if in.act != "" && !freed {
				t.Errorf("%s: a run started while %s holds the slot", ev.eventName(), in.act)
			}
			if next.act != kindBackup || next.run.phase != "" {
				t.Errorf("%s: a run started, but the slot holds %q in phase %q", ev.eventName(), next.act, next.run.phase)
			}
		case effMount:
			// Never mounted without our key: the keyfile or a passphrase opened it, or it is
			// the mapping an earlier daemon opened.
			ok := in.mapped
			switch ev := ev.(type) {
			case evKeyfileDone:
				ok = ok || ev.err == nil && ev.problem == ""
			case evPassphraseDone:
				ok = ok || ev.err == nil
			}
			if !ok {
				t.Errorf("%s: mount asked for without an open mapping", ev.eventName())
			}
		}
	}
	if runs > 1 {
		t.Errorf("%s: %d runs started", ev.eventName(), runs)
	}
	if last != nil && *last != next.st {
		t.Errorf("%s: published %+v, but the machine holds %+v", ev.eventName(), *last, next.st)
	}
}

// TestStepRandomWalk feeds step long random sequences of events (fixed seeds) and checks the
// invariants after each. What is set up changes only as the executor changes it: opening and
// mounting inside an activity that opens the drive, adoption at start-up before any plug-in.
func TestStepRandomWalk(t *testing.T) {
	for seed := range uint64(50) {
		r := rand.New(rand.NewPCG(seed, 3))
		s := fixture(api.StateAbsent, "")
		now := stepNow
		for i := range 2000 {
			e := stepEvents[r.IntN(len(stepEvents))]
			switch e.ev.(type) {
			case evOpenBegin, evOpened, evMountBegin, evMounted:
				if !slices.Contains([]string{kindBackup, kindBrowse, kindRestore, kindVerify}, s.act) {
					continue
				}
			case evAdopted:
				if s.dev != nil || s.act != "" || s.st.State != api.StateAbsent {
					continue
				}
			}
			if e.closed && s.setUp() {
				continue
			}
			now = now.Add(time.Duration(r.IntN(3000)) * time.Millisecond)
			next, effs := step(s, e.ev, now)
			checkStep(t, s, e.ev, next, effs)
			if t.Failed() {
				t.Fatalf("seed %d, event %d (%s) from %+v", seed, i, e.name, s)
			}
			s = next
		}
	}
}

// TestStepRunEndings: how a run ends decides the state, the result and the words users see.
func TestStepRunEndings(t *testing.T) {
	removedStick := func(s machine) machine { s.dev = nil; return s }
	ejecting := func(s machine) machine { s.ejecting = true; return s }
	for _, tc := range []struct {
		name       string
		err        error
		in         api.State // the step the run's error failed in (run.failedIn)
		removed    bool
		terr       error
		res        *Result
		adjust     func(machine) machine
		state      api.State
		result     api.Result
		reason     string
		present    bool
		failedIn   api.State
		noNewState bool // only the result is published (eject reports the state itself)
	}{
		{name: "success", res: &Result{}, state: api.StateSafeToRemove, result: api.ResultSuccess,
			reason: "Backup complete — safe to remove", present: true},
		{name: "success with warnings", res: &Result{Warnings: []string{"a", "b"}}, state: api.StateSafeToRemove,
			result: api.ResultSuccess, reason: "Backup complete with 2 warnings — safe to remove", present: true},
		{name: "success after making room", res: &Result{Dropped: 1}, state: api.StateSafeToRemove,
			result: api.ResultSuccess, reason: "Backup complete; 1 old snapshot deleted to make room — safe to remove", present: true},
		{name: "success with a warning after making room", res: &Result{Warnings: []string{"a"}, Dropped: 3}, state: api.StateSafeToRemove,
			result: api.ResultSuccess, reason: "Backup complete with 1 warning; 3 old snapshots deleted to make room — safe to remove", present: true},
		{name: "success, stick gone", res: &Result{}, adjust: removedStick, state: api.StateAbsent,
			result: api.ResultSuccess, reason: "Backup complete"},
		{name: "removed", err: ErrRemoved, removed: true, adjust: removedStick, state: api.StateAbsent,
			result: api.ResultInterrupted, reason: "The drive was removed during the backup; plug it in again to resume"},
		{name: "write failed as it was pulled", err: failf(errBoom, "The backup failed: boom"), removed: true,
			adjust: removedStick, state: api.StateAbsent, result: api.ResultInterrupted,
			reason: "The drive was removed during the backup; plug it in again to resume"},
		{name: "shutdown", err: errShutdown, state: api.StateSafeToRemove, result: api.ResultInterrupted,
			reason: "The backup service stopped; the backup continues when it starts again", present: true},
		{name: "suspend", err: errSuspend, state: api.StateSafeToRemove, result: api.ResultInterrupted,
			reason: "Paused for suspend; the backup continues after resume", present: true},
		{name: "cancel", err: errUserCancel, state: api.StateSafeToRemove, result: api.ResultCancelled,
			reason: "Backup cancelled — safe to remove; the next backup continues where this one stopped", present: true},
		{name: "eject", err: errEjected, adjust: ejecting, state: api.StateLocking, result: api.ResultCancelled,
			present: true, noNewState: true},
		{name: "failure", err: failf(errBoom, "The drive cannot be mounted: boom"), in: api.StateMounting, state: api.StateFailed,
			result: api.ResultFailed, reason: "The drive cannot be mounted: boom", present: true, failedIn: api.StateMounting},
		{name: "failure, stick gone", err: failf(errBoom, "The drive cannot be mounted: boom"), in: api.StateMounting, adjust: removedStick,
			state: api.StateAbsent, result: api.ResultFailed, reason: "The drive was removed"},
		{name: "still in use", res: &Result{}, terr: errBoom, state: api.StateFailed, result: api.ResultFailed,
			reason: stillInUse, present: true, failedIn: api.StateLocking},
		{name: "failure, then still in use", err: failf(errBoom, "The drive cannot be mounted: boom"), in: api.StateMounting,
			terr: errBoom, state: api.StateFailed, result: api.ResultFailed, reason: stillInUse, present: true, failedIn: api.StateLocking},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := fixture(api.StateLocking, phaseEnd)
			s.run.err, s.run.res, s.run.terr, s.run.failedIn = tc.err, tc.res, tc.terr, tc.in
			if tc.adjust != nil {
				s = tc.adjust(s)
			}
			next, effs := step(s, evRunEnded{removed: tc.removed}, stepNow)
			if next.act != "" {
				t.Errorf("the slot is still held by %q", next.act)
			}
			st := next.st
			if st.State != tc.state || st.LastResult != tc.result || st.Present != tc.present || st.FailedIn != tc.failedIn {
				t.Errorf("state %s, result %s, present %v, failed in %q; want %s, %s, %v, %q", st.State, st.LastResult, st.Present, st.FailedIn,
					tc.state, tc.result, tc.present, tc.failedIn)
			}
			if !tc.noNewState && st.StateReason != tc.reason {
				t.Errorf("reason %q, want %q", st.StateReason, tc.reason)
			}
			var pubs []api.DriveStatus
			for _, e := range effs {
				if p, ok := e.(effPublish); ok {
					pubs = append(pubs, p.st)
				}
			}
			if len(pubs) != 1 || pubs[0] != st {
				t.Errorf("published %+v, want the machine's status once", pubs)
			}
		})
	}
}
