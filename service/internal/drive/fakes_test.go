package drive_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/drive"
)

// waitTimeout bounds every wait on the state machine; it only decides how long a broken test
// hangs, never whether a test passes.
const waitTimeout = 10 * time.Second

// gate blocks the nth call of a fake operation until the test releases it (or, for operations
// on a run's context, until that context ends).
type gate struct {
	op      string
	nth     int
	entered chan struct{}
	release chan struct{}
}

// fakeSys stands for the kernel as seen through service/internal/luks (cryptsetup) and
// service/internal/mount: block devices with their LUKS UUID and accepted keys, open mappings
// and mounts. It enforces what the real kernel does: a mapping name exists once, a mount needs
// an open mapping, a mapping cannot be closed (without deferral) while mounted.
type fakeSys struct {
	t      *testing.T
	mapper string

	mu       sync.Mutex
	devices  map[string]*fakeDevice // devname -> device
	mappings map[string]*fakeMapping
	mounts   map[string]*fakeMount // target -> mount
	calls    []string
	counts   map[string]int
	gates    []*gate
	fail     map[string]error // op -> error for its next call
	held     map[string]bool  // mappings a process still holds (after a lazy unmount)
}

// failNext makes the next call of op fail with err.
func (s *fakeSys) failNext(op string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail[op] = err
}

// hold makes a process hold mapping name: closing it fails until release, a deferred close
// takes effect at release.
func (s *fakeSys) hold(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held[name] = true
}

func (s *fakeSys) release(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.held, name)
	if m := s.mappings[name]; m != nil && m.deferred {
		delete(s.mappings, name)
	}
}

type fakeDevice struct {
	uuid string
	fp   string // its fingerprint (volume-key digest and UUID)
	keys [][]byte
}

// genuineFP is the fingerprint of the real drive uuid; impostorFP that of a stick that only
// copied its UUID.
func genuineFP(uuid string) string  { return fakeFP("genuine " + uuid) }
func impostorFP(uuid string) string { return fakeFP("impostor " + uuid) }

func fakeFP(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "v1:" + hex.EncodeToString(sum[:])
}

type fakeMapping struct {
	device   string
	readOnly bool
	deferred bool
	// stale: a device-mapper device without a table (an open killed half-way). cryptsetup
	// status fails on it and luks.Cryptsetup.Close removes it (with dmsetup).
	stale bool
}

type fakeMount struct {
	source, fstype string
	readOnly       bool
}

func newFakeSys(t *testing.T) *fakeSys {
	return &fakeSys{
		t: t, mapper: "/dev/mapper",
		devices:  map[string]*fakeDevice{},
		mappings: map[string]*fakeMapping{},
		mounts:   map[string]*fakeMount{},
		counts:   map[string]int{},
		fail:     map[string]error{},
		held:     map[string]bool{},
	}
}

// insert makes devname the LUKS drive uuid, opening with any of keys.
func (s *fakeSys) insert(devname, uuid string, keys ...[]byte) {
	s.insertWithFP(devname, uuid, genuineFP(uuid), keys...)
}

// insertWithFP makes devname a LUKS device with UUID uuid and fingerprint fp that opens with
// any of keys (an impostor: another fingerprint and its own keys).
func (s *fakeSys) insertWithFP(devname, uuid, fp string, keys ...[]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.devices[devname] = &fakeDevice{uuid: uuid, fp: fp, keys: keys}
}

// block returns a gate on the nth (1-based) call of op.
func (s *fakeSys) block(op string, nth int) *gate {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := &gate{op: op, nth: nth, entered: make(chan struct{}), release: make(chan struct{})}
	s.gates = append(s.gates, g)
	return g
}

func (g *gate) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-g.entered:
	case <-time.After(waitTimeout):
		t.Fatalf("%s call %d never came", g.op, g.nth)
	}
}

func (g *gate) open() { close(g.release) }

// enter records a call of op and blocks at its gate. It returns ctx's error if ctx ended there.
func (s *fakeSys) enter(ctx context.Context, op, detail string) error {
	s.mu.Lock()
	s.counts[op]++
	s.calls = append(s.calls, op+" "+detail)
	n := s.counts[op]
	var g *gate
	for i, x := range s.gates {
		if x.op == op && x.nth == n {
			g = x
			s.gates = append(s.gates[:i], s.gates[i+1:]...)
			break
		}
	}
	err := s.fail[op]
	delete(s.fail, op)
	s.mu.Unlock()
	if g != nil {
		close(g.entered)
		select {
		case <-g.release:
		case <-ctx.Done():
		}
		// The test may end ctx and open the gate before this goroutine reaches the select;
		// then both are ready and select picks one at random. An operation whose context
		// ended while it was held fails, as the real ones do.
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return err
}

func (s *fakeSys) count(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[op]
}

// setUp lists the mappings (not yet deferred) and mounts of the drive uuid.
func (s *fakeSys) setUp(uuid string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var l []string
	for n, m := range s.mappings {
		if strings.HasSuffix(n, uuid) && !m.deferred {
			l = append(l, "mapping "+n)
		}
	}
	for t := range s.mounts {
		if strings.HasSuffix(t, uuid) {
			l = append(l, "mount "+t)
		}
	}
	return l
}

// leftovers lists the open mappings and mounts.
func (s *fakeSys) leftovers() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var l []string
	for n := range s.mappings {
		l = append(l, "mapping "+n)
	}
	for t := range s.mounts {
		l = append(l, "mount "+t)
	}
	sort.Strings(l)
	return l
}

func (s *fakeSys) assertClean(t *testing.T) {
	t.Helper()
	if l := s.leftovers(); len(l) > 0 {
		t.Fatalf("left behind: %v", l)
	}
}

var (
	errBadKey = fmt.Errorf("cryptsetup: no key available with this passphrase: %w", api.ErrBadPassphrase)
	errExists = fmt.Errorf("cryptsetup: device already exists: %w", api.ErrBusy)
)

// LUKS

func (s *fakeSys) IsLuks(ctx context.Context, device string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.devices[device]
	return ok, nil
}

func (s *fakeSys) Identify(ctx context.Context, device string) (uuid, fp string, err error) {
	if err := s.enter(ctx, "uuid", device); err != nil {
		return "", "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.devices[device]
	if !ok {
		return "", "", fmt.Errorf("cryptsetup: %s is not a LUKS device", device)
	}
	return d.uuid, d.fp, nil
}

// TestKey checks key against the device's keys; it maps nothing.
func (s *fakeSys) TestKey(ctx context.Context, device string, key []byte, slot int) error {
	s.mu.Lock()
	d, ok := s.devices[device]
	s.mu.Unlock()
	if gerr := s.enter(ctx, "test-key", device); gerr != nil {
		return gerr
	}
	if !ok {
		return fmt.Errorf("cryptsetup: device %s does not exist", device)
	}
	for _, k := range d.keys {
		if bytes.Equal(k, key) {
			return nil
		}
	}
	return errBadKey
}

// Open creates the mapping first and then blocks at its gate: an interrupted open may leave a
// mapping behind, and teardown must find it.
func (s *fakeSys) Open(ctx context.Context, device, name string, key []byte, slot int, readOnly bool) error {
	s.mu.Lock()
	d, ok := s.devices[device]
	var err error
	switch {
	case !ok:
		err = fmt.Errorf("cryptsetup: device %s does not exist", device)
	case s.mappings[name] != nil:
		err = errExists
	default:
		err = errBadKey
		for _, k := range d.keys {
			if bytes.Equal(k, key) {
				err = nil
			}
		}
	}
	if err == nil {
		s.mappings[name] = &fakeMapping{device: device, readOnly: readOnly}
	}
	s.mu.Unlock()
	if gerr := s.enter(ctx, "open", name); gerr != nil {
		return gerr
	}
	return err
}

func (s *fakeSys) Close(ctx context.Context, name string, deferred bool) error {
	if err := s.enter(ctx, "close", fmt.Sprint(name, " deferred=", deferred)); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mappings[name] == nil {
		return fmt.Errorf("cryptsetup: %s is not active", name)
	}
	if s.mappings[name].stale {
		if deferred {
			return fmt.Errorf("cryptsetup: %s is not active", name)
		}
		delete(s.mappings, name)
		return nil
	}
	if s.held[name] {
		if deferred {
			s.mappings[name].deferred = true
			return nil
		}
		return fmt.Errorf("cryptsetup: %s is busy: %w", name, api.ErrBusy)
	}
	for _, m := range s.mounts {
		if m.source == filepath.Join(s.mapper, name) {
			if deferred {
				s.mappings[name].deferred = true
				return nil
			}
			return fmt.Errorf("cryptsetup: %s is busy: %w", name, api.ErrBusy)
		}
	}
	delete(s.mappings, name)
	return nil
}

func (s *fakeSys) Active(ctx context.Context, name string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.mappings[name]; m != nil && m.stale {
		return false, fmt.Errorf("cannot query %s: cryptsetup exited with status 1", name)
	}
	return s.mappings[name] != nil, nil
}

// Mounter

func (s *fakeSys) Mount(ctx context.Context, source, target, fstype string, readOnly bool, extra []string, runAs string) error {
	s.mu.Lock()
	var err error
	switch {
	case s.mappings[filepath.Base(source)] == nil:
		err = fmt.Errorf("mount: %s does not exist", source)
	case s.mounts[target] != nil:
		err = fmt.Errorf("mount: %s is already mounted", target)
	default:
		s.mounts[target] = &fakeMount{source: source, fstype: fstype, readOnly: readOnly}
	}
	s.mu.Unlock()
	if gerr := s.enter(ctx, "mount", fmt.Sprint(target, " ro=", readOnly, " for=", runAs)); gerr != nil {
		return gerr
	}
	return err
}

func (s *fakeSys) Unmount(ctx context.Context, target string) error {
	if err := s.enter(ctx, "unmount", target); err != nil {
		return err
	}
	return s.dropMount(target)
}

func (s *fakeSys) Detach(target string) error {
	if err := s.enter(context.Background(), "detach", target); err != nil {
		return err
	}
	return s.dropMount(target)
}

// dropMount removes a mount, and its mapping when that mapping's close was deferred (the
// kernel removes a deferred mapping when its last user, the mount, goes).
func (s *fakeSys) dropMount(target string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.mounts[target]
	if m == nil {
		return fmt.Errorf("umount: %s: not mounted", target)
	}
	delete(s.mounts, target)
	if mp := s.mappings[filepath.Base(m.source)]; mp != nil && mp.deferred {
		delete(s.mappings, filepath.Base(m.source))
	}
	return nil
}

func (s *fakeSys) FSType(device string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mappings[filepath.Base(device)] == nil {
		return "", fmt.Errorf("%s does not exist", device)
	}
	return "btrfs", nil
}

func (s *fakeSys) DeviceNumber(path string) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mappings[filepath.Base(path)] == nil {
		return 0, fmt.Errorf("%s does not exist", path)
	}
	return 0xfe00 + uint64(len(path)), nil
}

func (s *fakeSys) Mounts(base string) ([]drive.MountInfo, error) {
	if err := s.enter(context.Background(), "mounts", base); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var l []drive.MountInfo
	for t, m := range s.mounts {
		if t == base || strings.HasPrefix(t, base+"/") {
			l = append(l, drive.MountInfo{Target: t, Source: m.source, FSType: m.fstype})
		}
	}
	return l, nil
}

func (s *fakeSys) Mappings(ctx context.Context) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var l []string
	for n, m := range s.mappings {
		if !m.stale { // no table, no node in /dev/mapper
			l = append(l, n)
		}
	}
	return l, nil
}

// fakeEngine stands for service/internal/backup (the engine child). Its Run reports the
// scripted progress, then blocks at its gate, then returns result or err.
type fakeEngine struct {
	sys *fakeSys

	mu        sync.Mutex
	jobs      []drive.Job
	progress  []drive.Progress
	snapshots map[string][]api.Snapshot // target -> list
	err       error
	result    drive.Result
	onRun     func(job drive.Job, progress func(drive.Progress))
	verified  []string // guarded by sys.mu
	onCtx     func(ctx context.Context)
	running   int // runs under way
	most      int // the most runs ever under way at once
}

func (e *fakeEngine) Run(ctx context.Context, job drive.Job, progress func(drive.Progress)) (drive.Result, error) {
	e.mu.Lock()
	e.jobs = append(e.jobs, job)
	e.running++
	e.most = max(e.most, e.running)
	defer func() {
		e.mu.Lock()
		e.running--
		e.mu.Unlock()
	}()
	script := append([]drive.Progress(nil), e.progress...)
	onRun := e.onRun
	if e.onCtx != nil {
		e.onCtx(ctx)
	}
	err, res := e.err, e.result
	e.mu.Unlock()
	e.sys.mu.Lock()
	m := e.sys.mounts[job.Target]
	e.sys.mu.Unlock()
	if m == nil || m.readOnly {
		return drive.Result{}, fmt.Errorf("engine: %s is not our writable mount", job.Target)
	}
	for _, p := range script {
		progress(p)
	}
	if onRun != nil {
		onRun(job, progress)
	}
	if gerr := e.sys.enter(ctx, "engine", job.Target); gerr != nil {
		return drive.Result{}, gerr
	}
	if err == nil {
		e.mu.Lock()
		e.snapshots[job.Target] = append(e.snapshots[job.Target], api.Snapshot{
			Name: fmt.Sprintf("snap%d", len(e.jobs)), Created: int64(1_700_000_000 + len(e.jobs)), Status: api.SnapshotComplete,
		})
		e.mu.Unlock()
	}
	return res, err
}

func (e *fakeEngine) List(target, host string) ([]api.Snapshot, error) {
	if err := e.sys.enter(context.Background(), "list", target); err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]api.Snapshot(nil), e.snapshots[target]...), nil
}

// engineBytes is the bytes done and total the fake engine reports during Verify and Restore.
var engineBytes = [][2]uint64{{0, 100}, {60, 100}, {100, 100}}

// reportBytes reports engineBytes on progress (may be nil).
func reportBytes(progress func(done, total uint64)) {
	if progress == nil {
		return
	}
	for _, b := range engineBytes {
		progress(b[0], b[1])
	}
}

func (e *fakeEngine) Verify(ctx context.Context, target, host, snapshot string, _ drive.Caller, progress func(done, total uint64)) (uint64, []string, error) {
	if err := e.sys.enter(ctx, "verify", target); err != nil {
		return 0, nil, err
	}
	e.sys.mu.Lock()
	defer e.sys.mu.Unlock()
	if e.sys.mounts[target] == nil {
		return 0, nil, errors.New("verify: not mounted")
	}
	e.verified = append(e.verified, snapshot)
	reportBytes(progress)
	return 42, nil, nil
}

func (e *fakeEngine) Restore(ctx context.Context, target, host string, req drive.RestoreRequest, progress func(done, total uint64)) error {
	if err := e.sys.enter(ctx, "restore", target); err != nil {
		return err
	}
	e.sys.mu.Lock()
	defer e.sys.mu.Unlock()
	if e.sys.mounts[target] == nil {
		return errors.New("restore: not mounted")
	}
	reportBytes(progress)
	return nil
}

// mostAtOnce returns the most runs that were ever under way at the same time.
func (e *fakeEngine) mostAtOnce() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.most
}

func (e *fakeEngine) runs() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.jobs)
}

// fakePublisher stands for the daemon's Drive objects: it records every status.
type fakePublisher struct {
	check   func(uuid string, st api.DriveStatus) // called with every update
	mu      sync.Mutex
	added   []string
	log     map[string][]api.DriveStatus
	changed chan struct{} // closed and replaced on every update
}

func newFakePublisher() *fakePublisher {
	return &fakePublisher{log: map[string][]api.DriveStatus{}, changed: make(chan struct{})}
}

func (p *fakePublisher) AddDrive(uuid string, st api.DriveStatus) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.added = append(p.added, uuid)
	p.log[uuid] = append(p.log[uuid], st)
	return nil
}

func (p *fakePublisher) UpdateDrive(uuid string, st api.DriveStatus) {
	if p.check != nil {
		p.check(uuid, st)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.log[uuid] = append(p.log[uuid], st)
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *fakePublisher) RemoveDrive(uuid string) {}

// statuses returns every status published for uuid.
func (p *fakePublisher) statuses(uuid string) []api.DriveStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]api.DriveStatus(nil), p.log[uuid]...)
}

// states returns the sequence of states published for uuid, repeats folded.
func (p *fakePublisher) states(uuid string) []api.State {
	var l []api.State
	for _, st := range p.statuses(uuid) {
		if len(l) == 0 || l[len(l)-1] != st.State {
			l = append(l, st.State)
		}
	}
	return l
}

func (p *fakePublisher) last(uuid string) api.DriveStatus {
	l := p.statuses(uuid)
	return l[len(l)-1]
}

// waitFor waits until a status published for uuid at index from or later satisfies ok, and
// returns that status and the index after it.
func (p *fakePublisher) waitFor(t *testing.T, uuid string, from int, what string, ok func(api.DriveStatus) bool) (api.DriveStatus, int) {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		p.mu.Lock()
		l := p.log[uuid]
		for i := from; i < len(l); i++ {
			if ok(l[i]) {
				p.mu.Unlock()
				return l[i], i + 1
			}
		}
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("drive %s never published %s; states: %v", uuid, what, p.states(uuid))
		}
	}
}

// awaitsPassphrase waits until a status published for uuid at index *from or later is
// awaiting-passphrase (it returns true and moves *from past it) or done is closed and no such
// status came (false).
func (p *fakePublisher) awaitsPassphrase(uuid string, from *int, done <-chan struct{}) bool {
	for {
		p.mu.Lock()
		l := p.log[uuid]
		for i := *from; i < len(l); i++ {
			if l[i].State == api.StateAwaitingPassphrase {
				p.mu.Unlock()
				*from = i + 1
				return true
			}
		}
		*from = len(l)
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-done:
			select {
			case <-ch:
			default:
				return false
			}
		}
	}
}

// fakeSource stands for the udev netlink monitor.
type fakeSource struct {
	ch   chan drive.Event
	cold []drive.Event
}

func (s *fakeSource) Events() <-chan drive.Event { return s.ch }
func (s *fakeSource) Enumerate(ctx context.Context) ([]drive.Event, error) {
	return s.cold, nil
}

// fakeLogind stands for org.freedesktop.login1: it hands out inhibitors and records, at each
// release, what was still open.
type fakeLogind struct {
	sys   *fakeSys
	sleep chan bool

	mu       sync.Mutex
	taken    int
	released [][]string // leftovers at each release
}

func (l *fakeLogind) Inhibit(what, who, why, mode string) (io.Closer, error) {
	// logind refuses delay locks on anything but sleep and shutdown (InvalidArgs).
	for _, w := range strings.Split(what, ":") {
		if mode == "delay" && w != "sleep" && w != "shutdown" {
			return nil, fmt.Errorf("org.freedesktop.DBus.Error.InvalidArgs: Delay inhibitors only supported for shutdown and sleep")
		}
	}
	if what != "sleep" || mode != "delay" {
		return nil, fmt.Errorf("unexpected inhibitor %s %s", what, mode)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.taken++
	return closerFunc(func() error {
		left := l.sys.leftovers()
		l.mu.Lock()
		defer l.mu.Unlock()
		l.released = append(l.released, left)
		return nil
	}), nil
}

func (l *fakeLogind) PrepareForSleep() <-chan bool { return l.sleep }

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// callLog returns every operation so far ("unmount /run/…", "close name deferred=false", …).
func (s *fakeSys) callLog() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}
