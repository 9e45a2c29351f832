package drive_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/apitest"
	"github.com/plugvault/plugvault/service/internal/backup"
	"github.com/plugvault/plugvault/service/internal/config"
	"github.com/plugvault/plugvault/service/internal/drive"
	"github.com/plugvault/plugvault/service/internal/luks"
)

const (
	uuidA = "0b9f5c6e-1111-4a4a-9c9c-aaaaaaaaaaaa"
	uuidB = "0b9f5c6e-2222-4b4b-9c9c-bbbbbbbbbbbb"
	base  = "/run/plugvault"
)

var (
	keyA  = []byte("key-of-drive-a\x00\n\xff")
	keyB  = []byte("key-of-drive-b")
	passA = []byte("correct horse battery staple")
)

// harness runs a Manager on fakes.
type harness struct {
	t        *testing.T
	sys      *fakeSys
	eng      *fakeEngine
	pub      *fakePublisher
	src      *fakeSource
	clock    *apitest.Clock
	logind   *fakeLogind
	powerMu  sync.Mutex
	powerOff []string
	powerErr error // what PowerOff returns
	powerAt  []int // number of statuses of drive A published at each power-off
	keyDir   string
	cfg      *config.Config
	check    func(string) error
	// after replaces Deps.After when set; by default the fake clock jumps over the wait.
	after  func(time.Duration) <-chan time.Time
	afters []time.Duration // every wait asked for, guarded by powerMu
	// recorded lists the fingerprints the manager recorded (uuid + " " + fp), guarded by powerMu.
	recorded []string

	m       *drive.Manager
	handled chan drive.Event
	cancel  context.CancelFunc
	done    chan error
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	sys := newFakeSys(t)
	h := &harness{
		t:       t,
		sys:     sys,
		eng:     &fakeEngine{sys: sys, snapshots: map[string][]api.Snapshot{}},
		pub:     newFakePublisher(),
		src:     &fakeSource{ch: make(chan drive.Event, 64)},
		clock:   apitest.NewClock(time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)),
		logind:  &fakeLogind{sys: sys, sleep: make(chan bool)},
		keyDir:  t.TempDir(),
		cfg:     &config.Config{Version: 1, MountBase: base},
		handled: make(chan drive.Event, 64),
	}
	return h
}

// addDrive configures a drive whose keyfile holds key (nil: no keyfile).
func (h *harness) addDrive(name, uuid string, key []byte) {
	h.t.Helper()
	kf := filepath.Join(h.keyDir, uuid+".key")
	if key != nil {
		if err := os.WriteFile(kf, key, 0o600); err != nil {
			h.t.Fatal(err)
		}
	}
	h.cfg.Drives = append(h.cfg.Drives, config.Drive{
		Name: name, LuksUUID: uuid, Fingerprint: genuineFP(uuid), Keyfile: kf, KeySlot: 1,
		Sources: []string{"/home/u"}, Excludes: []string{"*.tmp"}, RunAs: "u",
	})
}

func (h *harness) start() {
	h.t.Helper()
	m, err := drive.NewManager(drive.Deps{
		Config:  h.cfg,
		Source:  h.src,
		LUKS:    h.sys,
		Mounter: h.sys,
		Engine:  h.eng,
		PowerOff: func(ctx context.Context, devPath string) error {
			h.powerMu.Lock()
			defer h.powerMu.Unlock()
			h.powerOff = append(h.powerOff, devPath)
			h.powerAt = append(h.powerAt, len(h.pub.statuses(uuidA)))
			return h.powerErr
		},
		Publisher: h.pub,
		Logger:    slog.New(slog.NewTextHandler(testWriter{h.t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Clock:     h.clock.Now,
		ReadKeyfile: func(path string) ([]byte, error) {
			if h.check != nil {
				if err := h.check(path); err != nil {
					return nil, err
				}
			}
			return os.ReadFile(path)
		},
		Logind: h.logind,
		RecordFingerprint: func(uuid, fp string) error {
			h.powerMu.Lock()
			defer h.powerMu.Unlock()
			h.recorded = append(h.recorded, uuid+" "+fp)
			return nil
		},
		Mappings: h.sys.Mappings,
		Hostname: func() (string, error) { return "testhost", nil },
		After: func(d time.Duration) <-chan time.Time {
			h.powerMu.Lock()
			h.afters = append(h.afters, d)
			h.powerMu.Unlock()
			if h.after != nil {
				return h.after(d)
			}
			h.clock.Advance(d)
			ch := make(chan time.Time, 1)
			ch <- h.clock.Now()
			return ch
		},
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.m = m
	// The promise the user acts on: safe-to-remove and absent are only ever published when
	// nothing of the drive is mounted or unlocked (a deferred close aside).
	h.pub.check = func(uuid string, st api.DriveStatus) {
		if st.State != api.StateSafeToRemove && st.State != api.StateAbsent {
			return
		}
		if l := h.sys.setUp(uuid); len(l) > 0 {
			h.t.Errorf("%s published while %v", st.State, l)
		}
	}
	m.SetOnEvent(func(e drive.Event) { h.handled <- e })
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan error, 1)
	go func() { h.done <- m.Run(ctx) }()
	h.t.Cleanup(h.stop)
}

// stop shuts the manager down (idempotent) and checks that nothing is left behind.
func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run: %v", err)
		}
	case <-time.After(waitTimeout):
		h.t.Fatal("Run did not return after its context ended")
	}
	h.sys.assertClean(h.t)
}

// send delivers a udev event and waits until the manager has handled it.
func (h *harness) send(e drive.Event) {
	h.t.Helper()
	h.src.ch <- e
	select {
	case <-h.handled:
	case <-time.After(waitTimeout):
		h.t.Fatalf("event %s %s never handled", e.Action, e.DevPath)
	}
}

// stick makes a udev event of a USB LUKS disk.
func stick(action, devpath, uuid string, seq uint64) drive.Event {
	name := "/dev/" + filepath.Base(devpath)
	return drive.Event{
		Action: action, DevPath: devpath, Subsystem: "block", DevType: "disk", DevName: name, SeqNum: seq,
		Props: map[string]string{
			"ID_BUS": "usb", "ID_FS_TYPE": "crypto_LUKS", "ID_FS_UUID": uuid,
			"ID_VENDOR": "SanDisk", "ID_MODEL": "Ultra_Fit", "ID_SERIAL_SHORT": "4C53000" + filepath.Base(devpath),
		},
	}
}

const (
	sdb = "/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb"
	sdc = "/devices/pci0000:00/0000:00:14.0/usb2/2-2/2-2:1.0/host7/target7:0:0/7:0:0:0/block/sdc"
)

// plug inserts the stick into the fake kernel and sends its add event.
func (h *harness) plug(devpath, uuid string, seq uint64, keys ...[]byte) {
	h.t.Helper()
	h.sys.insert("/dev/"+filepath.Base(devpath), uuid, keys...)
	h.send(stick("add", devpath, uuid, seq))
}

func (h *harness) waitState(uuid string, from int, s api.State) (api.DriveStatus, int) {
	h.t.Helper()
	return h.pub.waitFor(h.t, uuid, from, string(s), func(st api.DriveStatus) bool { return st.State == s })
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

var happyPath = []api.State{
	api.StateAbsent, api.StatePresent, api.StateUnlocking, api.StateMounting, api.StateBackingUp,
	api.StateFinishing, api.StateUnmounting, api.StateLocking, api.StateSafeToRemove,
}

func TestHappyPath(t *testing.T) {
	h := newHarness(t)
	h.addDrive("Blue stick", uuidA, keyA)
	h.eng.progress = []drive.Progress{{FilesDone: 1204, FilesTotal: 8310, BytesDone: 10, BytesTotal: 40, Rate: 5, ETA: 6 * time.Second}}
	h.start()
	h.plug(sdb, uuidA, 100, keyA)

	st, _ := h.waitState(uuidA, 0, api.StateSafeToRemove)
	if got := h.pub.states(uuidA); !slices.Equal(got, happyPath) {
		t.Errorf("states = %v, want %v", got, happyPath)
	}
	if st.LastResult != api.ResultSuccess || !st.Present || st.SnapshotCount != 1 || st.LastBackup == 0 {
		t.Errorf("final status = %+v", st)
	}
	if st.Vendor != "SanDisk" || st.Model != "Ultra Fit" || st.Serial != "4C53000sdb" {
		t.Errorf("identity = %q %q %q", st.Vendor, st.Model, st.Serial)
	}
	// The progress the engine reported was published in words.
	prog, _ := h.pub.waitFor(t, uuidA, 0, "progress", func(s api.DriveStatus) bool { return s.FilesDone == 1204 })
	if prog.StateReason != "Backing up 1,204 of 8,310 files" || prog.Progress != 0.25 || prog.EtaSeconds != 6 || prog.State != api.StateBackingUp {
		t.Errorf("progress status = %+v", prog)
	}
	h.eng.mu.Lock()
	job := h.eng.jobs[0]
	h.eng.mu.Unlock()
	want := drive.Job{Sources: []string{"/home/u"}, Excludes: []string{"*.tmp"}, Target: base + "/" + uuidA + "/drive", Host: "testhost", FSType: "btrfs", RunAs: "u"}
	if job.Target != want.Target || job.Host != want.Host || job.FSType != want.FSType || job.RunAs != want.RunAs ||
		!slices.Equal(job.Sources, want.Sources) || !slices.Equal(job.Excludes, want.Excludes) || job.Dev == 0 {
		t.Errorf("job = %+v", job)
	}
	h.sys.assertClean(t)
	// The keyfile unlocked it with the configured slot; the inhibitor was released after locking.
	h.logind.mu.Lock()
	if h.logind.taken != 1 || len(h.logind.released) != 1 || len(h.logind.released[0]) != 0 {
		t.Errorf("inhibitor taken %d, released with leftovers %v", h.logind.taken, h.logind.released)
	}
	h.logind.mu.Unlock()
	if snaps, err := h.m.ListSnapshots(context.Background(), uuidA); err != nil || len(snaps) != 1 {
		t.Errorf("ListSnapshots = %v, %v", snaps, err)
	}
	lists := h.sys.count("list")
	if snaps, _ := h.m.ListSnapshots(context.Background(), uuidA); len(snaps) != 1 || h.sys.count("list") != lists {
		t.Error("ListSnapshots touched the drive")
	}

	// BackupNow on a safe-to-remove drive starts a new run.
	n := len(h.pub.statuses(uuidA))
	if err := h.m.BackupNow(context.Background(), uuidA); err != nil {
		t.Fatal(err)
	}
	st, _ = h.waitState(uuidA, n, api.StateSafeToRemove)
	if st.SnapshotCount != 2 || h.eng.runs() != 2 {
		t.Errorf("after second run: %+v, %d engine runs", st, h.eng.runs())
	}
}

func TestRemovalInEveryState(t *testing.T) {
	type step struct {
		state  api.State
		op     string // operation to hold while in state ("" = none: the state is idle)
		nth    int
		result api.Result
	}
	for _, c := range []step{
		{api.StateUnlocking, "open", 1, api.ResultInterrupted},
		{api.StateAwaitingPassphrase, "", 0, api.ResultInterrupted},
		{api.StateMounting, "mount", 1, api.ResultInterrupted},
		{api.StateBackingUp, "engine", 1, api.ResultInterrupted},
		{api.StateFinishing, "list", 2, api.ResultSuccess},
		{api.StateUnmounting, "unmount", 1, api.ResultSuccess},
		{api.StateLocking, "close", 1, api.ResultSuccess},
		{api.StateSafeToRemove, "", 0, api.ResultSuccess},
		{api.StateFailed, "", 0, api.ResultFailed},
	} {
		t.Run(string(c.state), func(t *testing.T) {
			h := newHarness(t)
			key := keyA
			if c.state == api.StateAwaitingPassphrase {
				key = nil
			}
			h.addDrive("A", uuidA, key)
			if c.state == api.StateFailed {
				h.eng.err = errors.New("source /home/u is not readable")
			}
			var g *gate
			if c.op != "" {
				g = h.sys.block(c.op, c.nth)
			}
			h.start()
			h.plug(sdb, uuidA, 10, keyA)
			_, next := h.waitState(uuidA, 0, c.state)
			if g != nil {
				g.waitEntered(t)
			}
			if c.state == api.StateFailed {
				h.clock.Advance(time.Minute) // long after the failure: not caused by the removal
			}
			h.send(stick("remove", sdb, uuidA, 20))
			if g != nil {
				g.open()
			}
			st, _ := h.waitState(uuidA, next, api.StateAbsent)
			if st.Present || st.LastResult != c.result {
				t.Errorf("after removal: present=%v result=%q, want %q", st.Present, st.LastResult, c.result)
			}
			if c.result == api.ResultInterrupted && !strings.Contains(st.StateReason, "removed") {
				t.Errorf("reason = %q", st.StateReason)
			}
			h.sys.assertClean(t)

			// Replugging works at once.
			h.sys.insert("/dev/sdc", uuidA, keyA)
			if c.state == api.StateAwaitingPassphrase {
				h.addKeyfile(uuidA, keyA)
			}
			h.eng.mu.Lock()
			h.eng.err = nil
			h.eng.mu.Unlock()
			n := len(h.pub.statuses(uuidA))
			h.send(stick("add", sdc, uuidA, 30))
			st, _ = h.waitState(uuidA, n, api.StateSafeToRemove)
			if st.LastResult != api.ResultSuccess {
				t.Errorf("after replug: %+v", st)
			}
		})
	}
}

func (h *harness) addKeyfile(uuid string, key []byte) {
	h.t.Helper()
	if err := os.WriteFile(filepath.Join(h.keyDir, uuid+".key"), key, 0o600); err != nil {
		h.t.Fatal(err)
	}
}

func TestDuplicateAndReorderedEvents(t *testing.T) {
	h := newHarness(t)
	h.addDrive("A", uuidA, keyA)
	g := h.sys.block("engine", 1)
	h.start()
	h.plug(sdb, uuidA, 10, keyA)
	g.waitEntered(t)
	// add again, change after our own luksOpen, the dm device's own events, a change of a
	// partition-less disk: none of them starts a second run.
	h.send(stick("add", sdb, uuidA, 11))
	h.send(stick("change", sdb, uuidA, 12))
	dm := drive.Event{Action: "add", DevPath: "/devices/virtual/block/dm-0", Subsystem: "block", DevType: "disk", DevName: "/dev/dm-0", SeqNum: 13,
		Props: map[string]string{"DM_NAME": "plugvault-" + uuidA, "ID_FS_TYPE": "btrfs", "ID_FS_UUID": "ffff"}}
	h.send(dm)
	dm.Action = "change"
	h.send(dm)
	if err := h.m.BackupNow(context.Background(), uuidA); !errors.Is(err, api.ErrBusy) {
		t.Errorf("BackupNow during a run = %v, want Busy", err)
	}
	g.open()
	st, _ := h.waitState(uuidA, 0, api.StateSafeToRemove)
	if h.eng.runs() != 1 || h.sys.count("open") != 1 {
		t.Errorf("engine runs %d, opens %d, want 1 each", h.eng.runs(), h.sys.count("open"))
	}
	if got := h.pub.states(uuidA); !slices.Equal(got, happyPath) {
		t.Errorf("states = %v", got)
	}
	// A late change of the stick after the run: still the same plug-in.
	h.send(stick("change", sdb, uuidA, 14))
	if h.pub.last(uuidA) != st || h.eng.runs() != 1 {
		t.Error("a change event after the run started something")
	}

	// Remove, then a stale add of the removed device (older seqnum) arrives late.
	n := len(h.pub.statuses(uuidA))
	h.send(stick("remove", sdb, uuidA, 20))
	h.waitState(uuidA, n, api.StateAbsent)
	h.send(stick("add", sdb, uuidA, 15))
	if last := h.pub.last(uuidA); last.State != api.StateAbsent || last.Present {
		t.Errorf("stale add revived the drive: %+v", last)
	}
	// A remove of a device we never saw does nothing.
	h.send(stick("remove", sdc, uuidA, 21))
	if h.sys.count("uuid") != 1 {
		t.Error("a stale or unknown event touched the drive")
	}
}

func TestReplugOnNewDevPathBeforeRemove(t *testing.T) {
	h := newHarness(t)
	h.addDrive("A", uuidA, keyA)
	g := h.sys.block("engine", 1)
	h.start()
	h.plug(sdb, uuidA, 10, keyA)
	g.waitEntered(t)
	// The stick was pulled and plugged again; the new add overtakes the old remove.
	h.sys.insert("/dev/sdc", uuidA, keyA)
	h.send(stick("add", sdc, uuidA, 30))
	if h.eng.runs() != 1 {
		t.Fatal("a second run started while the first one was still going")
	}
	h.send(stick("remove", sdb, uuidA, 20))
	st, _ := h.pub.waitFor(t, uuidA, 0, "success on sdc", func(s api.DriveStatus) bool {
		return s.State == api.StateSafeToRemove && s.LastResult == api.ResultSuccess
	})
	if !st.Present || st.Serial != "4C53000sdc" || h.eng.runs() != 2 {
		t.Errorf("final = %+v after %d runs", st, h.eng.runs())
	}
	h.sys.assertClean(t)
}

func TestEjectDuringBackup(t *testing.T) {
	h := newHarness(t)
	h.addDrive("A", uuidA, keyA)
	g := h.sys.block("engine", 1)
	h.start()
	// A stick with a partition table: LUKS on sdb1, power-off goes to the disk.
	ev := stick("add", sdb+"/sdb1", uuidA, 10)
	ev.DevType, ev.DevName = "partition", "/dev/sdb1"
	h.sys.insert("/dev/sdb1", uuidA, keyA)
	h.send(ev)
	g.waitEntered(t)
	before := len(h.pub.statuses(uuidA))
	if err := h.m.Eject(context.Background(), uuidA, true); err != nil {
		t.Fatal(err)
	}
	// Eject returned: it is safe now.
	h.sys.assertClean(t)
	st := h.pub.last(uuidA)
	if st.State != api.StateSafeToRemove || st.LastResult != api.ResultCancelled {
		t.Errorf("after eject: %+v", st)
	}
	h.powerMu.Lock()
	if !slices.Equal(h.powerOff, []string{sdb}) {
		t.Errorf("powered off %v, want the disk %s", h.powerOff, sdb)
	}
	// Nothing said safe-to-remove before the power-off.
	for _, s := range h.pub.statuses(uuidA)[before:h.powerAt[0]] {
		if s.State == api.StateSafeToRemove {
			t.Error("safe-to-remove was published before the power-off")
		}
	}
	h.powerMu.Unlock()
	// The removal that follows the power-off ends the plug-in.
	n := len(h.pub.statuses(uuidA))
	h.send(stick("remove", sdb+"/sdb1", uuidA, 11))
	h.waitState(uuidA, n, api.StateAbsent)
	if err := h.m.Eject(context.Background(), uuidA, true); !errors.Is(err, api.ErrNotPresent) {
		t.Errorf("Eject of an absent drive = %v", err)
	}
}

func TestEngineLearnsWhyItStops(t *testing.T) {
	for _, c := range []struct {
		name    string
		stop    func(h *harness)
		removed bool
	}{
		{"removal", func(h *harness) { h.send(stick("remove", sdb, uuidA, 11)) }, true},
		{"cancel", func(h *harness) { h.m.Cancel(context.Background(), uuidA) }, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			h.addDrive("A", uuidA, keyA)
			causes := make(chan error, 1)
			g := h.sys.block("engine", 1)
			h.eng.onCtx = func(ctx context.Context) {
				go func() { <-ctx.Done(); causes <- context.Cause(ctx) }()
			}
			h.start()
			h.plug(sdb, uuidA, 10, keyA)
			g.waitEntered(t)
			c.stop(h)
			if got := errors.Is(<-causes, drive.ErrRemoved); got != c.removed {
				t.Errorf("cause is ErrRemoved: %v, want %v", got, c.removed)
			}
		})
	}
}

func TestCancel(t *testing.T) {
	h := newHarness(t)
	h.addDrive("A", uuidA, keyA)
	g := h.sys.block("engine", 1)
	h.start()
	h.plug(sdb, uuidA, 10, keyA)
	g.waitEntered(t)
	if err := h.m.Cancel(context.Background(), uuidA); err != nil {
		t.Fatal(err)
	}
	st, _ := h.waitState(uuidA, 0, api.StateSafeToRemove)
	if st.LastResult != api.ResultCancelled {
		t.Errorf("after cancel: %+v", st)
	}
	h.sys.assertClean(t)
}

func TestPassphraseFallback(t *testing.T) {
	for _, c := range []struct {
		name    string
		keyfile []byte // nil: missing
		check   error
		reason  string
	}{
		{"missing keyfile", nil, nil, "is missing — enter the passphrase"},
		{"refused keyfile", keyA, errors.New("keyfile is group-readable"), "is not safe to use (keyfile is group-readable) — enter the passphrase"},
		{"rejected key", []byte("not the key"), nil, "was not accepted by the drive — enter the passphrase"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			h.addDrive("A", uuidA, c.keyfile)
			if c.check != nil {
				h.check = func(string) error { return c.check }
			}
			h.start()
			h.plug(sdb, uuidA, 10, keyA, passA)
			st, next := h.waitState(uuidA, 0, api.StateAwaitingPassphrase)
			if !strings.HasPrefix(st.StateReason, "The keyfile ") || !strings.HasSuffix(st.StateReason, c.reason) {
				t.Errorf("reason = %q", st.StateReason)
			}
			ctx := context.Background()
			wrong := []byte("wrong")
			// Failures 1..5 are answered after 0, 1, 2, 4, 8 s.
			for i := range 5 {
				if err := h.m.Unlock(ctx, uuidA, wrong); !errors.Is(err, api.ErrBadPassphrase) {
					t.Fatalf("wrong passphrase %d: %v", i+1, err)
				}
				if s := h.pub.last(uuidA); s.State != api.StateAwaitingPassphrase {
					t.Fatalf("state after a wrong passphrase = %s", s.State)
				}
			}
			h.powerMu.Lock()
			afters := slices.Clone(h.afters)
			h.powerMu.Unlock()
			if want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}; !slices.Equal(afters, want) {
				t.Errorf("answers delayed by %v, want %v", afters, want)
			}
			if st := h.pub.last(uuidA); st.StateReason != "The passphrase was wrong — try again in 8 seconds" {
				t.Errorf("reason %q", st.StateReason)
			}
			if got := drive.UnlockDelay(30); got != 30*time.Second {
				t.Errorf("delay is not capped: %v", got)
			}
			if err := h.m.Unlock(ctx, uuidA, passA); err != nil {
				t.Fatalf("right passphrase: %v", err)
			}
			st, _ = h.waitState(uuidA, next, api.StateSafeToRemove)
			if st.LastResult != api.ResultSuccess {
				t.Errorf("final %+v", st)
			}
			if err := h.m.Unlock(ctx, uuidA, passA); !errors.Is(err, api.ErrBusy) {
				t.Errorf("Unlock when not waiting = %v", err)
			}
		})
	}
}

func TestBackoffResetOnReplug(t *testing.T) {
	h := newHarness(t)
	h.addDrive("A", uuidA, nil)
	waiting := make(chan time.Duration, 1)
	h.after = func(d time.Duration) <-chan time.Time {
		waiting <- d
		return nil // never fires: the caller gives up
	}
	h.start()
	h.plug(sdb, uuidA, 10, passA)
	h.waitState(uuidA, 0, api.StateAwaitingPassphrase)
	ctx := context.Background()
	if err := h.m.Unlock(ctx, uuidA, []byte("wrong")); !errors.Is(err, api.ErrBadPassphrase) {
		t.Fatal(err)
	}
	// The second failure is answered after 1 s; the caller gives up after the attempt.
	cctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- h.m.Unlock(cctx, uuidA, []byte("wrong")) }()
	if d := <-waiting; d != time.Second {
		t.Errorf("second failure delayed by %v", d)
	}
	if err := h.m.Unlock(ctx, uuidA, passA); !errors.Is(err, api.ErrBusy) {
		t.Errorf("attempt during a slow answer = %v", err)
	}
	cancel()
	if err := <-errc; !errors.Is(err, api.ErrBadPassphrase) {
		t.Errorf("abandoned attempt = %v", err)
	}
	// Giving up does not shorten the delay.
	if err := h.m.Unlock(ctx, uuidA, passA); !errors.Is(err, api.ErrBusy) || !strings.Contains(err.Error(), "try again in 1 s") {
		t.Fatalf("attempt right after an abandoned one = %v", err)
	}
	n := len(h.pub.statuses(uuidA))
	h.send(stick("remove", sdb, uuidA, 11))
	_, next := h.waitState(uuidA, n, api.StateAbsent)
	h.plug(sdb, uuidA, 12, passA)
	h.waitState(uuidA, next, api.StateAwaitingPassphrase)
	if err := h.m.Unlock(ctx, uuidA, passA); err != nil {
		t.Fatalf("the delay survived the replug: %v", err)
	}
	h.waitState(uuidA, next, api.StateSafeToRemove)
}

func TestIgnoredDevices(t *testing.T) {
	h := newHarness(t)
	h.addDrive("A", uuidA, keyA)
	h.start()
	unknown := stick("add", sdb, uuidB, 1)
	plain := stick("add", sdc, uuidA, 2)
	plain.Props["ID_FS_TYPE"] = "vfat"
	ata := stick("add", "/devices/pci0000:00/ata1/host0/target0:0:0/0:0:0:0/block/sda", uuidA, 3)
	ata.Props["ID_BUS"] = "ata"
	other := stick("add", sdc+"/sdc1", uuidA, 4)
	other.DevType = "link"
	for _, e := range []drive.Event{unknown, plain, ata, other} {
		h.send(e)
	}
	h.sys.mu.Lock()
	calls := h.sys.calls
	h.sys.mu.Unlock()
	for _, c := range calls {
		if !strings.HasPrefix(c, "mounts ") {
			t.Errorf("an ignored device was touched: %s", c)
		}
	}
	if got := h.pub.statuses(uuidA); len(got) != 1 || got[0].State != api.StateAbsent {
		t.Errorf("published %v", got)
	}
	if _, err := h.m.ListSnapshots(context.Background(), uuidB); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("unknown drive: %v", err)
	}
	if err := h.m.BackupNow(context.Background(), uuidA); !errors.Is(err, api.ErrNotPresent) {
		t.Errorf("BackupNow of an absent drive: %v", err)
	}
}

func TestUUIDMismatchIsNeverMounted(t *testing.T) {
	h := newHarness(t)
	h.addDrive("A", uuidA, keyA)
	h.start()
	// udev claims uuidA, the header says otherwise.
	h.sys.insert("/dev/sdb", uuidB, keyA)
	h.send(stick("add", sdb, uuidA, 1))
	st, _ := h.waitState(uuidA, 0, api.StateFailed)
	if !strings.Contains(st.StateReason, "does not match") || h.sys.count("open") != 0 || h.sys.count("mount") != 0 {
		t.Errorf("failed with %q after %d opens", st.StateReason, h.sys.count("open"))
	}
	// BackupNow on a failed drive starts a new run (which checks the header again).
	n := len(h.pub.statuses(uuidA))
	if err := h.m.BackupNow(context.Background(), uuidA); err != nil {
		t.Fatal(err)
	}
	h.waitState(uuidA, n, api.StateFailed)
	if h.sys.count("uuid") != 2 || h.sys.count("open") != 0 {
		t.Errorf("second run: %d header reads, %d opens", h.sys.count("uuid"), h.sys.count("open"))
	}
	// Pulled right after: a mismatch is not a failure a pull explains.
	n = len(h.pub.statuses(uuidA))
	h.send(stick("remove", sdb, uuidA, 2))
	if st, _ := h.waitState(uuidA, n, api.StateAbsent); st.LastResult != api.ResultFailed {
		t.Errorf("after removal: %+v", st)
	}
}

// TestEnrollDuringReconciliation: a drive enrolled over the bus while Run still reconciles
// (the objects answer by unique name before the well-known name is owned) must not race with
// it (go test -race).
func TestEnrollDuringReconciliation(t *testing.T) {
	h := newHarness(t)
	h.addDrive("A", uuidA, keyA)
	h.sys.mappings["plugvault-"+uuidB] = &fakeMapping{device: "(null)"} // a leftover to look up
	g := h.sys.block("mounts", 1)
	h.start()
	g.waitEntered(t)
	g.open()
	if err := h.m.AddDrive(config.Drive{Name: "B", LuksUUID: uuidB}); err != nil {
		t.Fatal(err)
	}
	h.send(stick("add", sdc, uuidA, 1)) // any event: reconciliation is done before it
	if len(h.pub.statuses(uuidB)) == 0 {
		t.Error("the drive added during reconciliation was not published")
	}
}

func TestRestartReconciliation(t *testing.T) {
	t.Run("stick absent: cleaned", func(t *testing.T) {
		h := newHarness(t)
		h.addDrive("A", uuidA, keyA)
		h.sys.mappings["plugvault-"+uuidA] = &fakeMapping{device: "(null)"}
		h.sys.mounts[base+"/"+uuidA+"/drive"] = &fakeMount{source: "/dev/mapper/plugvault-" + uuidA, fstype: "btrfs"}
		h.sys.mappings["plugvault-"+uuidB] = &fakeMapping{device: "(null)"} // no longer configured
		h.sys.mounts[base+"/stray"] = &fakeMount{source: "/dev/sdz", fstype: "ext4"}
		h.sys.mappings["cryptroot"] = &fakeMapping{device: "/dev/nvme0n1p3"} // not ours
		h.start()
		h.send(stick("add", sdc, uuidB, 1)) // any event: reconciliation is done before it
		if got := h.sys.leftovers(); !slices.Equal(got, []string{"mapping cryptroot"}) {
			t.Errorf("left: %v", got)
		}
		delete(h.sys.mappings, "cryptroot")
		if st := h.pub.last(uuidA); st.State != api.StateAbsent {
			t.Errorf("state %s", st.State)
		}
	})
	t.Run("stick present: adopted and finished", func(t *testing.T) {
		h := newHarness(t)
		h.addDrive("A", uuidA, keyA)
		h.sys.insert("/dev/sdb", uuidA, keyA)
		h.sys.mappings["plugvault-"+uuidA] = &fakeMapping{device: "/dev/sdb"}
		h.sys.mounts[base+"/"+uuidA+"/drive"] = &fakeMount{source: "/dev/mapper/plugvault-" + uuidA, fstype: "btrfs"}
		h.src.cold = []drive.Event{stick("add", sdb, uuidA, 0)}
		h.start()
		st, _ := h.waitState(uuidA, 0, api.StateSafeToRemove)
		if st.LastResult != api.ResultSuccess || h.eng.runs() != 1 {
			t.Errorf("final %+v, %d runs", st, h.eng.runs())
		}
		if h.sys.count("open") != 0 || h.sys.count("mount") != 0 {
			t.Errorf("adoption opened %d and mounted %d times", h.sys.count("open"), h.sys.count("mount"))
		}
		h.sys.assertClean(t)
	})
	t.Run("stick present, mounted where older versions mounted: mounted again behind its gate", func(t *testing.T) {
		h := newHarness(t)
		h.addDrive("A", uuidA, keyA)
		h.sys.insert("/dev/sdb", uuidA, keyA)
		h.sys.mappings["plugvault-"+uuidA] = &fakeMapping{device: "/dev/sdb"}
		h.sys.mounts[base+"/"+uuidA] = &fakeMount{source: "/dev/mapper/plugvault-" + uuidA, fstype: "btrfs"}
		h.src.cold = []drive.Event{stick("add", sdb, uuidA, 0)}
		h.start()
		st, _ := h.waitState(uuidA, 0, api.StateSafeToRemove)
		if st.LastResult != api.ResultSuccess || h.sys.count("mount") != 1 {
			t.Errorf("final %+v, %d mounts", st, h.sys.count("mount"))
		}
		h.sys.assertClean(t)
	})
	t.Run("coldplug without leftovers", func(t *testing.T) {
		h := newHarness(t)
		h.addDrive("A", uuidA, keyA)
		h.sys.insert("/dev/sdb", uuidA, keyA)
		h.src.cold = []drive.Event{stick("add", sdb, uuidA, 0)}
		h.start()
		h.waitState(uuidA, 0, api.StateSafeToRemove)
		if got := h.pub.states(uuidA); !slices.Equal(got, happyPath) {
			t.Errorf("states %v", got)
		}
	})
}

func TestSuspendDuringRun(t *testing.T) {
	h := newHarness(t)
	h.addDrive("A", uuidA, keyA)
	g := h.sys.block("engine", 1)
	h.start()
	h.plug(sdb, uuidA, 10, keyA)
	g.waitEntered(t)
	h.logind.sleep <- true
	st, next := h.pub.waitFor(t, uuidA, 0, "paused", func(s api.DriveStatus) bool {
		return s.State == api.StateSafeToRemove && s.LastResult == api.ResultInterrupted
	})
	if !strings.Contains(st.StateReason, "suspend") {
		t.Errorf("reason %q", st.StateReason)
	}
	h.sys.assertClean(t)
	h.logind.mu.Lock()
	released := slices.Clone(h.logind.released)
	h.logind.mu.Unlock()
	if len(released) != 1 || len(released[0]) != 0 {
		t.Fatalf("inhibitor released with %v still open", released)
	}
	h.logind.sleep <- false
	st, _ = h.pub.waitFor(t, uuidA, next, "resumed and done", func(s api.DriveStatus) bool {
		return s.State == api.StateSafeToRemove && s.LastResult == api.ResultSuccess
	})
	if h.eng.runs() != 2 {
		t.Errorf("engine ran %d times, want 2 (resumed)", h.eng.runs())
	}
}

func TestTwoDrivesAtOnce(t *testing.T) {
	h := newHarness(t)
	h.addDrive("A", uuidA, keyA)
	h.addDrive("B", uuidB, nil)
	g := h.sys.block("engine", 1)
	h.start()
	h.plug(sdb, uuidA, 10, keyA)
	g.waitEntered(t)
	// B waits for a passphrase with a delay pending, while A's backup is running.
	h.plug(sdc, uuidB, 11, passA)
	h.waitState(uuidB, 0, api.StateAwaitingPassphrase)
	ctx := context.Background()
	for range 3 {
		if err := h.m.Unlock(ctx, uuidB, []byte("wrong")); !errors.Is(err, api.ErrBadPassphrase) {
			t.Fatal(err)
		}
	}
	if st := h.pub.last(uuidA); st.State != api.StateBackingUp {
		t.Errorf("A is %s", st.State)
	}
	if err := h.m.Unlock(ctx, uuidB, passA); err != nil {
		t.Fatal(err)
	}
	h.waitState(uuidB, 0, api.StateSafeToRemove)
	if st := h.pub.last(uuidA); st.State != api.StateBackingUp {
		t.Errorf("A is %s while B finished", st.State)
	}
	g.open()
	h.waitState(uuidA, 0, api.StateSafeToRemove)
	for _, u := range []string{uuidA, uuidB} {
		if st := h.pub.last(u); st.LastResult != api.ResultSuccess {
			t.Errorf("%s: %+v", u, st)
		}
	}
	h.sys.assertClean(t)
}

func TestShutdownDuringRun(t *testing.T) {
	h := newHarness(t)
	h.addDrive("A", uuidA, keyA)
	g := h.sys.block("engine", 1)
	h.start()
	h.plug(sdb, uuidA, 10, keyA)
	g.waitEntered(t)
	h.stop() // asserts that nothing is left
	if st := h.pub.last(uuidA); st.LastResult != api.ResultInterrupted {
		t.Errorf("after shutdown: %+v", st)
	}
}

func TestProgressRateLimit(t *testing.T) {
	h := newHarness(t)
	h.addDrive("A", uuidA, keyA)
	h.eng.onRun = func(job drive.Job, progress func(drive.Progress)) {
		for i := range 10 {
			progress(drive.Progress{FilesDone: uint64(i), FilesTotal: 100, ETA: -1})
		}
		h.clock.Advance(200 * time.Millisecond)
		progress(drive.Progress{FilesDone: 50, FilesTotal: 100, ETA: -1})
	}
	h.start()
	h.plug(sdb, uuidA, 10, keyA)
	h.waitState(uuidA, 0, api.StateSafeToRemove)
	var done []uint64
	for _, st := range h.pub.statuses(uuidA) {
		if st.State == api.StateBackingUp && st.FilesTotal > 0 {
			done = append(done, st.FilesDone)
		}
	}
	if !slices.Equal(done, []uint64{0, 50}) {
		t.Errorf("published FilesDone %v, want [0 50]", done)
	}
}

func TestBrowseVerifyRestore(t *testing.T) {
	h := newHarness(t)
	h.addDrive("A", uuidA, keyA)
	h.start()
	h.plug(sdb, uuidA, 10, keyA)
	h.waitState(uuidA, 0, api.StateSafeToRemove)
	ctx := context.Background()

	// Verify on a locked drive mounts read-only for the check and locks again; the engine's
	// progress reaches the caller's callback.
	var reports [][2]uint64
	record := func(done, total uint64) { reports = append(reports, [2]uint64{done, total}) }
	checked, problems, err := h.m.Verify(ctx, uuidA, "snap1", drive.Caller{UID: 1000, GID: 1000, User: "alice"}, record)
	if err != nil || checked != 42 || len(problems) != 0 {
		t.Fatalf("Verify = %d %v %v", checked, problems, err)
	}
	if !slices.Equal(reports, engineBytes) {
		t.Errorf("Verify reported progress %v, the engine %v", reports, engineBytes)
	}
	if _, _, err := h.m.Verify(ctx, uuidA, "", drive.Caller{UID: 1000, GID: 1000, User: "alice"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.m.Verify(ctx, uuidA, "snap9", drive.Caller{UID: 1000, GID: 1000, User: "alice"}, nil); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("Verify of a snapshot that is not there = %v", err)
	}
	if err := h.m.Restore(ctx, uuidA, drive.RestoreRequest{Snapshot: "snap9", Destination: "/tmp/x"}, nil); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("Restore of a snapshot that is not there = %v", err)
	}
	h.sys.mu.Lock()
	verified := slices.Clone(h.eng.verified)
	h.sys.mu.Unlock()
	if !slices.Equal(verified, []string{"snap1", "snap1"}) {
		t.Errorf("verified %v; \"\" must be the newest complete snapshot", verified)
	}
	h.sys.assertClean(t)
	if st := h.pub.last(uuidA); st.State != api.StateSafeToRemove {
		t.Errorf("after verify: %s", st.State)
	}

	path, err := h.m.Browse(ctx, uuidA, drive.Caller{UID: 1000})
	if err != nil || path != base+"/"+uuidA+"/drive" {
		t.Fatalf("Browse = %q, %v", path, err)
	}
	h.sys.mu.Lock()
	mnt := h.sys.mounts[path]
	h.sys.mu.Unlock()
	if mnt == nil || !mnt.readOnly {
		t.Fatalf("browse mount %+v is not read-only", mnt)
	}
	if st := h.pub.last(uuidA); st.State != api.StatePresent || !strings.Contains(st.StateReason, path) {
		t.Errorf("while browsing: %+v", st)
	}
	reports = nil
	if err := h.m.Restore(ctx, uuidA, drive.RestoreRequest{Snapshot: "snap1", Destination: "/tmp/x"}, record); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(reports, engineBytes) {
		t.Errorf("Restore reported progress %v, the engine %v", reports, engineBytes)
	}
	if len(h.sys.leftovers()) != 2 {
		t.Error("restore closed the browse mount")
	}
	// A backup run closes the browse mount and mounts read-write.
	n := len(h.pub.statuses(uuidA))
	if err := h.m.BackupNow(ctx, uuidA); err != nil {
		t.Fatal(err)
	}
	h.waitState(uuidA, n, api.StateSafeToRemove)
	h.sys.assertClean(t)

	// During a run: Busy.
	g := h.sys.block("engine", 3)
	if err := h.m.BackupNow(ctx, uuidA); err != nil {
		t.Fatal(err)
	}
	g.waitEntered(t)
	if _, err := h.m.Browse(ctx, uuidA, drive.Caller{}); !errors.Is(err, api.ErrBusy) {
		t.Errorf("Browse during a run = %v", err)
	}
	if err := h.m.Restore(ctx, uuidA, drive.RestoreRequest{Snapshot: "snap1"}, nil); !errors.Is(err, api.ErrBusy) {
		t.Errorf("Restore during a run = %v", err)
	}
	if _, _, err := h.m.Verify(ctx, uuidA, "snap1", drive.Caller{UID: 1000, GID: 1000, User: "alice"}, nil); !errors.Is(err, api.ErrBusy) {
		t.Errorf("Verify during a run = %v", err)
	}
	n = len(h.pub.statuses(uuidA))
	g.open()
	h.waitState(uuidA, n, api.StateSafeToRemove)

	// Browse, then pull the stick: cleaned up.
	if _, err := h.m.Browse(ctx, uuidA, drive.Caller{}); err != nil {
		t.Fatal(err)
	}
	h.send(stick("remove", sdb, uuidA, 20))
	h.waitState(uuidA, n, api.StateAbsent)
	h.sys.assertClean(t)
}

// Browse, Verify and Restore of a drive whose keyfile is missing move it to
// awaiting-passphrase; Unlock hands the passphrase over (wrong ones answered after the same
// growing delay as in a run), the drive is opened and mounted read-only, the call goes on, and
// the drive ends where it was.
func TestBrowseVerifyRestoreAskForThePassphrase(t *testing.T) {
	for _, kind := range []string{"browse", "verify", "restore"} {
		t.Run(kind, func(t *testing.T) {
			h := newHarness(t)
			h.addDrive("A", uuidA, nil)
			h.start()
			h.plug(sdb, uuidA, 10, passA)
			_, n := h.waitState(uuidA, 0, api.StateAwaitingPassphrase)
			// A first backup with the passphrase writes the snapshot.
			if err := h.m.Unlock(context.Background(), uuidA, passA); err != nil {
				t.Fatal(err)
			}
			_, n = h.waitState(uuidA, n, api.StateSafeToRemove)
			h.powerMu.Lock()
			h.afters = nil
			h.powerMu.Unlock()

			ctx := context.Background()
			done := make(chan error, 1)
			var path string
			go func() {
				var err error
				switch kind {
				case "browse":
					path, err = h.m.Browse(ctx, uuidA, drive.Caller{UID: 1000})
				case "verify":
					_, _, err = h.m.Verify(ctx, uuidA, "", drive.Caller{UID: 1000, GID: 1000, User: "alice"}, nil)
				case "restore":
					err = h.m.Restore(ctx, uuidA, drive.RestoreRequest{Snapshot: "snap1", Destination: "/tmp/x"}, nil)
				}
				done <- err
			}()
			st, n := h.waitState(uuidA, n, api.StateAwaitingPassphrase)
			if !strings.HasSuffix(st.StateReason, "is missing — enter the passphrase") {
				t.Errorf("reason %q", st.StateReason)
			}
			for i := range 2 {
				if err := h.m.Unlock(ctx, uuidA, []byte("wrong")); !errors.Is(err, api.ErrBadPassphrase) {
					t.Fatalf("wrong passphrase %d: %v", i+1, err)
				}
			}
			h.powerMu.Lock()
			afters := slices.Clone(h.afters)
			h.powerMu.Unlock()
			if want := []time.Duration{time.Second}; !slices.Equal(afters, want) {
				t.Errorf("wrong passphrases answered after %v, want %v", afters, want)
			}
			if err := h.m.Unlock(ctx, uuidA, passA); err != nil {
				t.Fatalf("right passphrase: %v", err)
			}
			if err := <-done; err != nil {
				t.Fatalf("%s after the passphrase: %v", kind, err)
			}
			if kind != "browse" {
				h.sys.mu.Lock()
				verified := len(h.eng.verified)
				h.sys.mu.Unlock()
				restored := h.sys.count("restore")
				if kind == "verify" && verified != 1 || kind == "restore" && restored != 1 {
					t.Errorf("%s did not reach the engine: %d verified, %d restored", kind, verified, restored)
				}
				h.waitState(uuidA, n, api.StateSafeToRemove)
				h.sys.assertClean(t)
				return
			}
			h.sys.mu.Lock()
			mnt, mp := h.sys.mounts[path], h.sys.mappings[luks.MappingPrefix+uuidA]
			h.sys.mu.Unlock()
			if mnt == nil || !mnt.readOnly || mp == nil || !mp.readOnly {
				t.Fatalf("browse with the passphrase: mount %+v, mapping %+v; want both read-only", mnt, mp)
			}
			if st := h.pub.last(uuidA); st.State != api.StatePresent || !strings.Contains(st.StateReason, path) {
				t.Errorf("while browsing: %+v", st)
			}
			if err := h.m.Eject(ctx, uuidA, false); err != nil {
				t.Fatal(err)
			}
			h.sys.assertClean(t)
		})
	}
}

// A Browse waiting for the passphrase ends with Cancelled when the drive's activity is
// cancelled, and the drive is back where it was, nothing left open.
func TestBrowseWaitingForThePassphraseCancelled(t *testing.T) {
	h := newHarness(t)
	h.addDrive("A", uuidA, nil)
	h.start()
	h.plug(sdb, uuidA, 10, passA)
	_, n := h.waitState(uuidA, 0, api.StateAwaitingPassphrase)
	if err := h.m.Cancel(context.Background(), uuidA); err != nil {
		t.Fatal(err)
	}
	_, n = h.waitState(uuidA, n, api.StateSafeToRemove)
	done := make(chan error, 1)
	go func() {
		_, err := h.m.Browse(context.Background(), uuidA, drive.Caller{})
		done <- err
	}()
	_, n = h.waitState(uuidA, n, api.StateAwaitingPassphrase)
	if err := h.m.Cancel(context.Background(), uuidA); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, api.ErrCancelled) {
		t.Errorf("Browse cancelled while waiting for the passphrase = %v", err)
	}
	h.waitState(uuidA, n, api.StateSafeToRemove)
	h.sys.assertClean(t)
	if err := h.m.Unlock(context.Background(), uuidA, passA); !errors.Is(err, api.ErrBusy) {
		t.Errorf("Unlock after the cancel = %v, want Busy", err)
	}
}

func TestGroupDigits(t *testing.T) {
	for n, want := range map[uint64]string{0: "0", 999: "999", 1000: "1,000", 8310: "8,310", 1234567: "1,234,567"} {
		if got := drive.GroupDigits(n); got != want {
			t.Errorf("GroupDigits(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestPulledWhileWritingBeforeTheRemoveEvent(t *testing.T) {
	h := newHarness(t)
	h.addDrive("A", uuidA, keyA)
	// The writes fail (EIO) and the engine gives up before udev reports the removal.
	h.eng.err = errors.New("cannot write: input/output error")
	h.start()
	h.plug(sdb, uuidA, 10, keyA)
	st, next := h.waitState(uuidA, 0, api.StateFailed)
	if st.LastResult != api.ResultFailed || !strings.Contains(st.StateReason, "input/output error") || st.FailedIn != api.StateBackingUp {
		t.Errorf("failed with %+v", st)
	}
	h.sys.assertClean(t)
	h.send(stick("remove", sdb, uuidA, 11))
	st, next = h.waitState(uuidA, next, api.StateAbsent)
	if st.LastResult != api.ResultInterrupted || !strings.Contains(st.StateReason, "plug it in again") || st.FailedIn != "" {
		t.Errorf("after the remove event: %+v", st)
	}
	// The same when the mount fails (the stick went while it was being mounted).
	h.sys.failNext("mount", errors.New("mount: cannot read superblock"))
	h.plug(sdb, uuidA, 12, keyA)
	if st, _ := h.waitState(uuidA, next, api.StateFailed); !strings.Contains(st.StateReason, "cannot be mounted") || st.FailedIn != api.StateMounting {
		t.Errorf("mount failure reason %q, failed in %q", st.StateReason, st.FailedIn)
	}
	h.send(stick("remove", sdb, uuidA, 13))
	if st, _ := h.waitState(uuidA, next, api.StateAbsent); st.LastResult != api.ResultInterrupted {
		t.Errorf("after the second remove: %+v", st)
	}
}

func TestAdoptedMappingUnusable(t *testing.T) {
	h := newHarness(t)
	h.addDrive("A", uuidA, keyA)
	h.sys.insert("/dev/sdb", uuidA, keyA)
	// A mapping is left but its mount is gone and mounting it fails (stale device).
	h.sys.mappings["plugvault-"+uuidA] = &fakeMapping{device: "(null)"}
	h.sys.failNext("mount", errors.New("mount: wrong fs type, bad superblock"))
	h.src.cold = []drive.Event{stick("add", sdb, uuidA, 0)}
	h.start()
	st, _ := h.waitState(uuidA, 0, api.StateSafeToRemove)
	if st.LastResult != api.ResultSuccess || h.sys.count("open") != 1 || h.sys.count("mount") != 2 {
		t.Errorf("final %+v; opens %d mounts %d", st, h.sys.count("open"), h.sys.count("mount"))
	}
	h.sys.assertClean(t)
}

func TestAddAndRemoveDrive(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.addKeyfile(uuidA, keyA)
	if err := h.m.AddDrive(config.Drive{Name: "A", LuksUUID: strings.ToUpper(uuidA), Keyfile: filepath.Join(h.keyDir, uuidA+".key"), KeySlot: -1}); err != nil {
		t.Fatal(err)
	}
	if err := h.m.AddDrive(config.Drive{Name: "again", LuksUUID: uuidA}); err == nil {
		t.Error("the same UUID was added twice")
	}
	if err := h.m.AddDrive(config.Drive{Name: "bad", LuksUUID: "../x"}); err == nil {
		t.Error("a UUID that is not one was accepted")
	}
	g := h.sys.block("engine", 1)
	h.plug(sdb, uuidA, 1, keyA)
	g.waitEntered(t)
	if err := h.m.RemoveDrive(uuidA); !errors.Is(err, api.ErrBusy) {
		t.Errorf("RemoveDrive during a run = %v", err)
	}
	g.open()
	h.waitState(uuidA, 0, api.StateSafeToRemove)
	if err := h.m.RemoveDrive(uuidA); err != nil {
		t.Fatal(err)
	}
	if _, err := h.m.ListSnapshots(context.Background(), uuidA); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("forgotten drive: %v", err)
	}
}

func TestRemovalWithAHolder(t *testing.T) {
	h := newHarness(t)
	h.addDrive("A", uuidA, keyA)
	name := "plugvault-" + uuidA
	g := h.sys.block("engine", 1)
	h.eng.onRun = func(drive.Job, func(drive.Progress)) { h.sys.hold(name) }
	h.start()
	h.plug(sdb, uuidA, 10, keyA)
	g.waitEntered(t)
	n := len(h.pub.statuses(uuidA))
	h.send(stick("remove", sdb, uuidA, 11))
	h.waitState(uuidA, n, api.StateAbsent)
	// The mount is gone (lazily); the mapping goes when its holder does (deferred close).
	if got := h.sys.leftovers(); !slices.Equal(got, []string{"mapping " + name}) {
		t.Fatalf("left: %v", got)
	}
	h.sys.mu.Lock()
	deferred := h.sys.mappings[name].deferred
	h.sys.mu.Unlock()
	if !deferred {
		t.Fatal("the mapping's close was not deferred")
	}
	h.sys.release(name)
	h.sys.assertClean(t)
}

// An open killed half-way (the stick pulled while cryptsetup ran) leaves a device-mapper device
// with the drive's mapping name and no table: cryptsetup cannot query it and every open says it
// already exists. The next plug-in removes it and backs up.
func TestStaleDeviceOfAKilledOpen(t *testing.T) {
	h := newHarness(t)
	h.addDrive("A", uuidA, keyA)
	name := "plugvault-" + uuidA
	h.sys.mu.Lock()
	h.sys.mappings[name] = &fakeMapping{stale: true}
	h.sys.mu.Unlock()
	h.start()
	h.plug(sdb, uuidA, 10, keyA)
	st, _ := h.pub.waitFor(t, uuidA, 0, "safe-to-remove or failed", func(st api.DriveStatus) bool {
		return st.State == api.StateSafeToRemove || st.State == api.StateFailed
	})
	if st.State != api.StateSafeToRemove {
		t.Fatalf("with a stale device of the mapping's name: %s (%s)", st.State, st.StateReason)
	}
	h.sys.assertClean(t)
}

func TestWarningsAndTeardownFailure(t *testing.T) {
	h := newHarness(t)
	h.addDrive("A", uuidA, keyA)
	h.eng.result = drive.Result{Warnings: []string{"a", "b"}}
	h.start()
	h.plug(sdb, uuidA, 10, keyA)
	st, next := h.waitState(uuidA, 0, api.StateSafeToRemove)
	if st.StateReason != "Backup complete with 2 warnings — safe to remove" {
		t.Errorf("reason %q", st.StateReason)
	}
	// The unmount fails even lazily: never say safe-to-remove.
	h.sys.failNext("unmount", errors.New("umount: target is busy"))
	h.sys.failNext("mounts", errors.New("cannot read mountinfo"))
	if err := h.m.BackupNow(context.Background(), uuidA); err != nil {
		t.Fatal(err)
	}
	st, _ = h.waitState(uuidA, next, api.StateFailed)
	if st.LastResult != api.ResultFailed || !strings.Contains(st.StateReason, "could not be locked") {
		t.Errorf("after a failed unmount: %+v", st)
	}
	if len(h.sys.leftovers()) == 0 {
		t.Fatal("the fake did not keep the mount")
	}
	// Eject tries again.
	if err := h.m.Eject(context.Background(), uuidA, false); err != nil {
		t.Fatal(err)
	}
	h.sys.assertClean(t)
	if st := h.pub.last(uuidA); st.State != api.StateSafeToRemove {
		t.Errorf("after eject: %s", st.State)
	}
}

func TestListMappings(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"plugvault-" + uuidA, "cryptroot", "control"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got, err := drive.ListMappings(dir)
	if err != nil || !slices.Equal(got, []string{"plugvault-" + uuidA}) {
		t.Errorf("ListMappings = %v, %v", got, err)
	}
	if got, err := drive.ListMappings(filepath.Join(dir, "none")); err != nil || len(got) != 0 {
		t.Errorf("missing dir: %v, %v", got, err)
	}
}

func TestNewManagerChecksDeps(t *testing.T) {
	h := newHarness(t)
	good := drive.Deps{Config: h.cfg, Source: h.src, LUKS: h.sys, Mounter: h.sys, Engine: h.eng, Publisher: h.pub,
		Hostname: func() (string, error) { return "h", nil }}
	if _, err := drive.NewManager(good); err != nil {
		t.Fatal(err)
	}
	noEngine := good
	noEngine.Engine = nil
	relative := good
	relative.Config = &config.Config{MountBase: "run/plugvault"}
	badUUID := good
	badUUID.Config = &config.Config{MountBase: base, Drives: []config.Drive{{Name: "x", LuksUUID: "x/../y"}}}
	for name, deps := range map[string]drive.Deps{"no engine": noEngine, "relative base": relative, "bad uuid": badUUID} {
		if _, err := drive.NewManager(deps); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestRemovalDuringAPassphraseAttempt(t *testing.T) {
	h := newHarness(t)
	h.addDrive("A", uuidA, nil)
	g := h.sys.block("open", 1)
	h.start()
	h.plug(sdb, uuidA, 10, passA)
	h.waitState(uuidA, 0, api.StateAwaitingPassphrase)
	pass := slices.Clone(passA)
	errc := make(chan error, 1)
	go func() { errc <- h.m.Unlock(context.Background(), uuidA, pass) }()
	g.waitEntered(t)
	if err := h.m.Unlock(context.Background(), uuidA, passA); !errors.Is(err, api.ErrBusy) {
		t.Errorf("a second Unlock during the attempt = %v", err)
	}
	n := len(h.pub.statuses(uuidA))
	h.send(stick("remove", sdb, uuidA, 11))
	var err error
	select {
	case err = <-errc:
	case <-time.After(waitTimeout):
		t.Fatal("Unlock did not return after the removal")
	}
	if err == nil || errors.Is(err, api.ErrBadPassphrase) {
		t.Errorf("Unlock = %v, want an error that is not BadPassphrase", err)
	}
	clear(pass) // what the daemon does once Unlock returned
	st, _ := h.waitState(uuidA, n, api.StateAbsent)
	if st.LastResult != api.ResultInterrupted {
		t.Errorf("after removal: %+v", st)
	}
	h.sys.assertClean(t)
}

func TestEjectAndShutdownWhileBrowsing(t *testing.T) {
	h := newHarness(t)
	h.addDrive("A", uuidA, keyA)
	h.addDrive("B", uuidB, keyB)
	h.start()
	h.plug(sdb, uuidA, 10, keyA)
	h.plug(sdc, uuidB, 11, keyB)
	h.waitState(uuidA, 0, api.StateSafeToRemove)
	h.waitState(uuidB, 0, api.StateSafeToRemove)
	ctx := context.Background()
	for _, u := range []string{uuidA, uuidB} {
		if _, err := h.m.Browse(ctx, u, drive.Caller{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.m.Eject(ctx, uuidA, false); err != nil {
		t.Fatal(err)
	}
	if got := h.sys.leftovers(); len(got) != 2 || !strings.Contains(got[0], uuidB) || !strings.Contains(got[1], uuidB) {
		t.Errorf("after ejecting A: %v", got)
	}
	if st := h.pub.last(uuidA); st.State != api.StateSafeToRemove {
		t.Errorf("A after eject: %s", st.State)
	}
	h.stop() // B is still open for browsing: shutdown locks it
	if st := h.pub.last(uuidB); st.State != api.StateSafeToRemove {
		t.Errorf("B after shutdown: %s", st.State)
	}
}

func TestRemovalDuringVerifyOfABrowsedDrive(t *testing.T) {
	h := newHarness(t)
	h.addDrive("A", uuidA, keyA)
	h.start()
	h.plug(sdb, uuidA, 10, keyA)
	_, next := h.waitState(uuidA, 0, api.StateSafeToRemove)
	ctx := context.Background()
	if _, err := h.m.Browse(ctx, uuidA, drive.Caller{}); err != nil {
		t.Fatal(err)
	}
	g := h.sys.block("verify", 1)
	errc := make(chan error, 1)
	go func() {
		_, _, err := h.m.Verify(ctx, uuidA, "", drive.Caller{UID: 1000, GID: 1000, User: "alice"}, nil)
		errc <- err
	}()
	g.waitEntered(t)
	h.send(stick("remove", sdb, uuidA, 11))
	if err := <-errc; !errors.Is(err, api.ErrCancelled) {
		t.Errorf("Verify = %v, want Cancelled", err)
	}
	h.waitState(uuidA, next, api.StateAbsent)
	h.sys.assertClean(t)
}

// errMountBusy is what mount.Unmount answers when programs keep the mount busy.
var errMountBusy = fmt.Errorf("cannot unmount: pid 4242 (bash: cwd) uses it: %w", api.ErrBusy)

// A program inside the mount while the stick is still plugged in: the drive is neither
// detached nor locked, and never called safe to remove; Eject finishes once it is closed.
func TestBusyMountIsNeverDetachedWhilePlugged(t *testing.T) {
	h := newHarness(t)
	h.addDrive("A", uuidA, keyA)
	h.start()
	h.sys.failNext("unmount", errMountBusy)
	h.plug(sdb, uuidA, 10, keyA)
	st, _ := h.waitState(uuidA, 0, api.StateFailed)
	if !strings.Contains(st.StateReason, "still in use") || st.FailedIn != api.StateUnmounting {
		t.Errorf("reason %q, failed in %q (want unmounting)", st.StateReason, st.FailedIn)
	}
	name := "plugvault-" + uuidA
	got := h.sys.leftovers()
	if !slices.Equal(got, []string{"mapping " + name, "mount " + filepath.Join(h.cfg.MountBase, uuidA, "drive")}) {
		t.Fatalf("left: %v (want the mount and its mapping kept, nothing detached)", got)
	}
	for _, c := range h.sys.callLog() {
		if strings.HasPrefix(c, "detach ") || strings.HasPrefix(c, "close ") {
			t.Errorf("%q while the mount was busy and the stick present", c)
		}
	}
	for _, s := range h.pub.statuses(uuidA) {
		if s.State == api.StateSafeToRemove {
			t.Fatal("safe-to-remove published while the filesystem was still mounted")
		}
	}
	if err := h.m.Eject(context.Background(), uuidA, false); err != nil {
		t.Fatal(err)
	}
	h.sys.assertClean(t)
	if st := h.pub.last(uuidA); st.State != api.StateSafeToRemove {
		t.Errorf("after eject: %s", st.State)
	}
}

// A busy mount of a stick that was pulled is detached, so the mapping can go and a replug works.
func TestBusyMountOfAPulledStickIsDetached(t *testing.T) {
	h := newHarness(t)
	h.addDrive("A", uuidA, keyA)
	g := h.sys.block("engine", 1)
	h.start()
	h.plug(sdb, uuidA, 10, keyA)
	g.waitEntered(t)
	h.sys.failNext("unmount", errMountBusy)
	n := len(h.pub.statuses(uuidA))
	h.send(stick("remove", sdb, uuidA, 11))
	h.waitState(uuidA, n, api.StateAbsent)
	h.sys.assertClean(t)
	var detached bool
	for _, c := range h.sys.callLog() {
		detached = detached || strings.HasPrefix(c, "detach ")
	}
	if !detached {
		t.Error("the busy mount of the pulled stick was not detached")
	}
	h.plug(sdc, uuidA, 12, keyA)
	h.waitState(uuidA, n, api.StateSafeToRemove)
	h.sys.assertClean(t)
}

// TestDriveFullReason: a run that does not fit even after thinning fails with a reason that
// names the drive, says how much is missing and what to do, and the snapshots it left are
// counted.
func TestDriveFullReason(t *testing.T) {
	h := newHarness(t)
	h.addDrive("A", uuidA, keyA)
	const short = 3_100_000_000
	h.eng.err = &backup.FullError{Short: short, Err: errors.New("cannot write: no space left on device")}
	// What the run leaves on the drive (it thinned snapshots before it gave up) is read again.
	h.eng.onRun = func(job drive.Job, _ func(drive.Progress)) {
		h.eng.mu.Lock()
		h.eng.snapshots[job.Target] = []api.Snapshot{{Name: "20261205T120000Z", Created: 1_700_000_000, Status: api.SnapshotComplete}}
		h.eng.mu.Unlock()
	}
	h.start()
	h.plug(sdb, uuidA, 10, keyA)
	st, _ := h.waitState(uuidA, 0, api.StateFailed)
	for _, want := range []string{st.Name + " is full", "about " + api.FormatBytes(short) + " more", "even after deleting old snapshots", "bigger drive"} {
		if !strings.Contains(st.StateReason, want) {
			t.Errorf("reason %q lacks %q", st.StateReason, want)
		}
	}
	if st.LastResult != api.ResultFailed || st.Name == "" || st.SnapshotCount != 1 {
		t.Errorf("failed with %+v, want the snapshot the run left counted", st)
	}
	h.sys.assertClean(t)
}
