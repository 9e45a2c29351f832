package drive

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/config"
	"github.com/plugvault/plugvault/service/internal/luks"
)

// pulledWindow: a removal this soon after the backup failed is taken as its cause (writes to a
// pulled stick fail before udev reports the removal).
const pulledWindow = 30 * time.Second

// Activity kinds: what holds a drive's one activity slot.
const (
	kindBackup  = "backup"
	kindBrowse  = "browse"
	kindRestore = "restore"
	kindVerify  = "verify"
	kindEject   = "eject"
	kindCleanup = "cleanup"
)

// ErrRemoved is the cause (context.Cause) of the context handed to Engine.Run when the stick
// was pulled: there is no safe point left to reach, so the engine should be killed at once.
// Every other cause (cancel, eject, suspend, shutdown) lets it stop at a safe point first.
var ErrRemoved = errors.New("the drive was removed")

// errImpostor: a stick carries an enrolled drive's LUKS UUID but not its fingerprint, and the
// drive's keyfile does not open it.
var errImpostor = errors.New("the stick carries the drive's LUKS UUID but not its volume key")

// Why an activity's context was cancelled (context.Cause).
var (
	errEjected    = fmt.Errorf("the drive is being ejected: %w", api.ErrCancelled)
	errSuspend    = errors.New("the system is going to sleep")
	errShutdown   = errors.New("the service is stopping")
	errUserCancel = fmt.Errorf("cancelled by the user: %w", api.ErrCancelled)
)

// device is the block device (disk or partition) that currently carries a drive.
type device struct {
	DevPath, DevName, DevType string
	Vendor, Model, Serial     string
	Label                     string
}

// diskDevPath is the DEVPATH of the whole disk, which is what USB power-off needs.
func (dv device) diskDevPath() string {
	if dv.DevType == "partition" {
		return path.Dir(dv.DevPath)
	}
	return dv.DevPath
}

// activity is the one thing a drive is doing: a backup run or a browse, restore, verify, eject
// or cleanup operation. It owns the drive's mapping and mount while it lasts.
type activity struct {
	kind   string
	ctx    context.Context
	cancel context.CancelCauseFunc
	done   chan struct{}
	pass   chan attempt // passphrases from Unlock, backup runs only
}

// attempt is one Unlock call handed to the run that awaits a passphrase.
type attempt struct {
	passphrase []byte // owned by the caller, who zeroes it once reply has answered
	reply      chan error
}

// drive is one configured drive. Every field is guarded by Manager.mu.
type drive struct {
	cfg  config.Drive
	uuid string // lower case
	st   api.DriveStatus

	dev     *device // nil when absent
	pending *device // the same drive seen on a second DEVPATH while the first was still there
	act     *activity

	startAfter bool // start a backup run when the current activity ends (replug, resume)
	resume     bool // a run was stopped for suspend: start again after resume
	ejecting   bool
	// gone: the stick of what is set up now was removed; teardown may then detach a busy
	// mount lazily. Cleared once teardown has closed everything.
	gone bool

	// What is set up now. *Tried is set before the operation, so that teardown also looks
	// after an operation that was interrupted half way.
	mapTried, mapped    bool
	mountTried, mounted bool
	readOnly            bool
	unlocking           bool      // an Unlock attempt is being tried
	ioFailed            bool      // the last run failed on the device (maybe the stick was pulled)
	failedAt            time.Time // when it failed
	fails               int       // wrong passphrases since the last plug-in or success
	notBefore           time.Time
	lastProgressPublish time.Time
	snapshots           []api.Snapshot
}

// Manager runs the state machines of all configured drives. It implements the daemon's Backend.
type Manager struct {
	deps    Deps
	log     *slog.Logger
	clock   func() time.Time
	host    string
	base    string // mount base
	mapper  string // mapper dir
	baseCtx context.Context

	mu         sync.Mutex
	drives     map[string]*drive
	order      []*drive
	removedSeq map[string]uint64 // DEVPATH -> SeqNum of its last remove event
	stopping   bool
	wg         sync.WaitGroup // activities

	onEvent func(Event) // test hook: called after each live event was handled
}

// NewManager checks deps, fills in defaults and publishes every configured drive as absent
// (Publisher.AddDrive).
func NewManager(deps Deps) (*Manager, error) {
	switch {
	case deps.Config == nil:
		return nil, errors.New("internal error: drive manager without configuration")
	case deps.Source == nil, deps.LUKS == nil, deps.Mounter == nil, deps.Engine == nil, deps.Publisher == nil:
		return nil, errors.New("internal error: drive manager without source, luks, mounter, engine or publisher")
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Clock == nil {
		deps.Clock = time.Now
	}
	if deps.ReadKeyfile == nil {
		deps.ReadKeyfile = config.ReadKeyfile
	}
	if deps.Logind == nil {
		deps.Logind = noLogind{}
	}
	if deps.MapperDir == "" {
		deps.MapperDir = "/dev/mapper"
	}
	if deps.After == nil {
		deps.After = time.After
	}
	if deps.Hostname == nil {
		deps.Hostname = os.Hostname
	}
	deps = withStepLog(deps)
	host, err := deps.Hostname()
	if err != nil {
		return nil, fmt.Errorf("cannot get the host name: %w", err)
	}
	base := deps.Config.MountBase
	if base == "" {
		base = "/run/plugvault"
	}
	if !filepath.IsAbs(base) {
		return nil, fmt.Errorf("cannot use mount base %q: not an absolute path", base)
	}
	m := &Manager{
		deps:       deps,
		log:        deps.Logger,
		clock:      deps.Clock,
		host:       host,
		base:       filepath.Clean(base),
		mapper:     deps.MapperDir,
		baseCtx:    context.Background(),
		drives:     make(map[string]*drive),
		removedSeq: make(map[string]uint64),
	}
	for _, c := range deps.Config.Drives {
		if err := m.addDriveLocked(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// AddDrive starts managing a drive enrolled while the daemon runs and publishes it
// (Publisher.AddDrive; an error from it, such as a drive published already, is only logged).
// A stick that is already plugged in is picked up at its next udev event.
func (m *Manager) AddDrive(c config.Drive) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.addDriveLocked(c)
}

// RemoveDrive (enroll.Registry) stops managing a drive and unpublishes it (Publisher.RemoveDrive). It refuses
// (api.ErrBusy) while the drive is busy or still unlocked: eject it first.
func (m *Manager) RemoveDrive(uuid string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, err := m.lookupLocked(uuid)
	if err != nil {
		return err
	}
	if d.act != nil || d.mapTried || d.mountTried {
		return fmt.Errorf("cannot forget %s: it is in use; eject it first: %w", d.cfg.Name, api.ErrBusy)
	}
	delete(m.drives, d.uuid)
	m.order = slices.DeleteFunc(m.order, func(x *drive) bool { return x == d })
	m.deps.Publisher.RemoveDrive(d.uuid)
	return nil
}

func (m *Manager) addDriveLocked(c config.Drive) error {
	uuid := strings.ToLower(c.LuksUUID)
	if luks.CheckUUID(uuid) != nil {
		return fmt.Errorf("cannot manage drive %q: invalid LUKS UUID %q", c.Name, c.LuksUUID)
	}
	if _, dup := m.drives[uuid]; dup {
		return fmt.Errorf("cannot manage drive %q: LUKS UUID %s is already configured", c.Name, uuid)
	}
	d := &drive{cfg: c, uuid: uuid}
	d.st = api.DriveStatus{Name: c.Name, LuksUUID: uuid, State: api.StateAbsent, EtaSeconds: -1}
	m.drives[uuid] = d
	m.order = append(m.order, d)
	if err := m.deps.Publisher.AddDrive(uuid, d.st); err != nil {
		m.log.Warn("cannot publish drive", "drive", c.Name, "uuid", uuid, "err", err)
	}
	return nil
}

func (m *Manager) mappingName(d *drive) string { return luks.MappingPrefix + d.uuid }
func (m *Manager) mapperPath(d *drive) string  { return filepath.Join(m.mapper, m.mappingName(d)) }
func (m *Manager) target(d *drive) string      { return filepath.Join(m.base, d.uuid, "drive") }

// publishLocked sends d's complete status.
func (m *Manager) publishLocked(d *drive) {
	m.deps.Publisher.UpdateDrive(d.uuid, d.st)
}

// setStateLocked changes the state and reason and publishes.
func (m *Manager) setStateLocked(d *drive, s api.State, reason string) {
	if s != api.StateBackingUp {
		d.st.Progress, d.st.Rate, d.st.EtaSeconds = 0, 0, -1
		d.st.FilesDone, d.st.FilesTotal, d.st.BytesDone, d.st.BytesTotal = 0, 0, 0, 0
	}
	if d.st.State != s {
		m.log.Info("drive state", "drive", d.cfg.Name, "uuid", d.uuid, "state", string(s), "reason", reason)
	}
	d.st.State, d.st.StateReason = s, reason
	m.publishLocked(d)
}

func (m *Manager) setState(d *drive, s api.State, reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.setStateLocked(d, s, reason)
}

// lookupLocked finds a drive by LUKS UUID.
func (m *Manager) lookupLocked(uuid string) (*drive, error) {
	d := m.drives[strings.ToLower(uuid)]
	if d == nil {
		return nil, fmt.Errorf("cannot find drive %s: %w", uuid, api.ErrNotFound)
	}
	return d, nil
}

// newActivityLocked claims d's activity slot. The caller must call m.wg.Done and close done
// when it ends (endActivityLocked does both bookkeeping steps but done).
func (m *Manager) newActivityLocked(d *drive, kind string) *activity {
	ctx, cancel := context.WithCancelCause(m.baseCtx)
	a := &activity{kind: kind, ctx: ctx, cancel: cancel, done: make(chan struct{})}
	if kind == kindBackup {
		a.pass = make(chan attempt)
	}
	d.act = a
	m.wg.Add(1)
	return a
}

// busyErrLocked is the error for a call that needs the activity slot while it is taken.
func busyErrLocked(d *drive, verb string) error {
	what := "a backup"
	switch d.act.kind {
	case kindBrowse:
		what = "opening it for browsing"
	case kindRestore:
		what = "a restore"
	case kindVerify:
		what = "a verification"
	case kindEject:
		what = "an eject"
	case kindCleanup:
		what = "a cleanup"
	}
	return fmt.Errorf("cannot %s %s: %s is in progress: %w", verb, d.cfg.Name, what, api.ErrBusy)
}

// Run reconciles what an earlier daemon left behind, handles the devices already plugged in,
// then serves udev events and the sleep signal until ctx ends. When ctx ends it cancels every
// activity and waits until each drive is unmounted and locked.
func (m *Manager) Run(ctx context.Context) error {
	events := m.deps.Source.Events()
	sleep := m.deps.Logind.PrepareForSleep()
	cold, err := m.deps.Source.Enumerate(ctx)
	if err != nil {
		m.log.Warn("cannot enumerate block devices; devices plugged in before the start are handled at their next event", "err", err)
	}
	m.reconcile(ctx, cold)
	for _, e := range cold {
		m.handleEvent(e)
	}
	for {
		select {
		case <-ctx.Done():
			m.shutdown()
			return nil
		case e, ok := <-events:
			if !ok {
				m.shutdown()
				return errors.New("cannot watch udev: the monitor stopped")
			}
			m.handleEvent(e)
			if m.onEvent != nil {
				m.onEvent(e)
			}
		case s, ok := <-sleep:
			if !ok {
				sleep = nil
				continue
			}
			m.handleSleep(s)
		}
	}
}

// match tells whether e is a USB block device carrying one of our drives.
func (m *Manager) match(e Event) (*drive, *device) {
	if e.Subsystem != "" && e.Subsystem != "block" {
		return nil, nil
	}
	if e.DevType != "disk" && e.DevType != "partition" {
		return nil, nil
	}
	// The mapping's own dm device never carries a drive (and never has ID_BUS=usb).
	if e.Prop("DM_NAME") != "" || strings.HasPrefix(e.DevName, "/dev/dm-") || strings.Contains(e.DevPath, "/virtual/") {
		return nil, nil
	}
	if e.Prop("ID_BUS") != "usb" || e.Prop("ID_FS_TYPE") != "crypto_LUKS" || !strings.HasPrefix(e.DevName, "/dev/") {
		return nil, nil
	}
	uuid := strings.ToLower(e.Prop("ID_FS_UUID"))
	d := m.drives[uuid]
	if d == nil {
		m.log.Debug("ignoring a LUKS device that is not configured", "device", e.DevName, "uuid", uuid)
		return nil, nil
	}
	serial := e.Prop("ID_SERIAL_SHORT")
	if serial == "" {
		serial = e.Prop("ID_SERIAL")
	}
	return d, &device{
		DevPath: e.DevPath, DevName: e.DevName, DevType: e.DevType,
		Vendor: strings.ReplaceAll(e.Prop("ID_VENDOR"), "_", " "),
		Model:  strings.ReplaceAll(e.Prop("ID_MODEL"), "_", " "),
		Serial: serial,
		Label:  e.Prop("ID_FS_LABEL"),
	}
}

// handleEvent merges one udev event into the drives' state. It never blocks on I/O.
func (m *Manager) handleEvent(e Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch e.Action {
	case "remove":
		m.handleRemoveLocked(e)
	case "add", "change":
		if e.SeqNum != 0 && e.SeqNum < m.removedSeq[e.DevPath] {
			m.log.Debug("ignoring a stale event of a removed device", "devpath", e.DevPath, "seqnum", e.SeqNum)
			return
		}
		d, dv := m.match(e)
		if d == nil {
			return
		}
		m.handleAddLocked(d, dv)
	}
}

func (m *Manager) handleAddLocked(d *drive, dv *device) {
	switch {
	case d.dev != nil && d.dev.DevPath == dv.DevPath:
		// A duplicate, or the change events our own luksOpen causes: same plug-in.
		return
	case d.dev != nil:
		// The stick came back on a new DEVPATH before the old one's remove arrived, or a
		// second device carries the same LUKS UUID: take it once the first one is gone.
		m.log.Warn("drive seen on a second device; waiting for the first one to go", "drive", d.cfg.Name, "device", dv.DevName, "first", d.dev.DevName)
		d.pending = dv
		return
	}
	m.plugLocked(d, dv)
}

// plugLocked makes dv the drive's device and starts a run (or queues it behind the cleanup of
// the previous plug-in).
func (m *Manager) plugLocked(d *drive, dv *device) {
	m.log.Info("drive plugged in", "drive", d.cfg.Name, "uuid", d.uuid, "device", dv.DevName, "vendor", dv.Vendor, "model", dv.Model, "serial", dv.Serial)
	d.dev = dv
	d.fails, d.notBefore = 0, time.Time{}
	d.resume, d.ioFailed = false, false
	d.st.Present = true
	d.st.Vendor, d.st.Model, d.st.Serial = dv.Vendor, dv.Model, dv.Serial
	if dv.Label != "" {
		d.st.Label = dv.Label
	}
	if d.act != nil || m.stopping {
		d.startAfter = !m.stopping
		m.setStateLocked(d, api.StatePresent, "Waiting for the previous plug-in to be cleaned up")
		return
	}
	m.setStateLocked(d, api.StatePresent, "Plugged in")
	m.startBackupLocked(d)
}

func (m *Manager) handleRemoveLocked(e Event) {
	if e.SeqNum != 0 {
		m.removedSeq[e.DevPath] = e.SeqNum
	}
	for _, d := range m.order {
		if d.pending != nil && (d.pending.DevPath == e.DevPath || d.pending.diskDevPath() == e.DevPath) {
			d.pending = nil
		}
		if d.dev == nil || (d.dev.DevPath != e.DevPath && d.dev.diskDevPath() != e.DevPath) {
			continue
		}
		m.log.Info("drive removed", "drive", d.cfg.Name, "uuid", d.uuid, "device", d.dev.DevName)
		d.dev = nil
		d.gone = d.mapTried || d.mountTried || d.act != nil
		d.startAfter, d.resume = false, false
		if d.pending != nil {
			dv := d.pending
			d.pending = nil
			d.dev = dv
			d.startAfter = true
		}
		if d.act != nil {
			d.act.cancel(ErrRemoved)
			continue // the activity cleans up and publishes
		}
		if d.mapTried || d.mountTried {
			// Left open for browsing: clean up in the background.
			a := m.newActivityLocked(d, kindCleanup)
			a.cancel(ErrRemoved)
			go func() {
				terr := m.teardown(d, false)
				m.endActivity(d, a, nil, terr)
			}()
			continue
		}
		if d.dev != nil {
			m.plugLocked(d, d.dev)
			continue
		}
		d.st.Present = false
		reason := ""
		if d.ioFailed && d.st.State == api.StateFailed && m.clock().Sub(d.failedAt) < pulledWindow {
			// Its writes failed before udev reported the removal.
			d.st.LastResult = api.ResultInterrupted
			reason = "The drive was removed during the backup; plug it in again to resume"
		}
		d.ioFailed = false
		m.setStateLocked(d, api.StateAbsent, reason)
	}
}

// handleSleep stops every backup run before suspend (each releases its inhibitor once the
// drive is locked) and starts them again after resume if the stick is still there.
func (m *Manager) handleSleep(sleeping bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, d := range m.order {
		if sleeping {
			if d.act != nil && d.act.kind == kindBackup {
				d.act.cancel(errSuspend)
				d.resume = true
			}
			continue
		}
		if !d.resume || d.dev == nil || m.stopping {
			continue
		}
		d.resume = false
		if d.act != nil {
			d.startAfter = true
			continue
		}
		m.startBackupLocked(d)
	}
}

// reconcile adopts (stick present) or cleans (stick absent) the mappings and mounts an earlier
// daemon left behind.
func (m *Manager) reconcile(ctx context.Context, cold []Event) {
	present := make(map[*drive]bool)
	m.mu.Lock()
	// Bus calls may already add drives (AddDrive, from an enrollment): look up a copy.
	drives := maps.Clone(m.drives)
	for _, e := range cold {
		if d, _ := m.match(e); d != nil {
			present[d] = true
		}
	}
	m.mu.Unlock()

	var names []string
	var err error
	if m.deps.Mappings != nil {
		names, err = m.deps.Mappings(ctx)
	} else {
		names, err = listMappings(m.mapper)
	}
	if err != nil {
		m.log.Warn("cannot list device-mapper mappings", "err", err)
	}
	mounts, err := m.deps.Mounter.Mounts(m.base)
	if err != nil {
		m.log.Warn("cannot list mounts", "base", m.base, "err", err)
	}
	mappedDrive := make(map[string]*drive) // mapping name -> present drive
	for _, name := range names {
		if !strings.HasPrefix(name, luks.MappingPrefix) {
			continue
		}
		if d := drives[strings.TrimPrefix(name, luks.MappingPrefix)]; d != nil && present[d] {
			mappedDrive[name] = d
		}
	}
	// Deepest first, so nested leftovers come off before their parents.
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i].Target) > len(mounts[j].Target) })
	for _, mi := range mounts {
		if gate := filepath.Dir(mi.Target); filepath.Dir(gate) == m.base {
			d := drives[filepath.Base(gate)]
			if d != nil && mi.Target == m.target(d) && mappedDrive[m.mappingName(d)] == d && m.mountOfMapping(mi, d) {
				m.log.Info("adopting the mount of a plugged-in drive", "drive", d.cfg.Name, "target", mi.Target)
				m.mu.Lock()
				d.mountTried, d.mounted = true, true
				m.mu.Unlock()
				continue
			}
		}
		if mi.Target == m.base {
			continue
		}
		m.log.Info("cleaning a leftover mount", "target", mi.Target, "source", mi.Source)
		if err := m.deps.Mounter.Unmount(ctx, mi.Target); err != nil {
			m.log.Warn("cannot unmount a leftover mount", "target", mi.Target, "err", err)
		}
	}
	for _, name := range names {
		if !strings.HasPrefix(name, luks.MappingPrefix) {
			continue
		}
		if d := mappedDrive[name]; d != nil {
			m.log.Info("adopting the mapping of a plugged-in drive", "drive", d.cfg.Name, "mapping", name)
			m.mu.Lock()
			d.mapTried, d.mapped = true, true
			m.mu.Unlock()
			continue
		}
		m.log.Info("closing a leftover mapping", "mapping", name)
		if err := m.closeMapping(ctx, name); err != nil {
			m.log.Warn("cannot close a leftover mapping", "mapping", name, "err", err)
		}
	}
}

// mountOfMapping tells whether mi is a mount of d's mapping.
func (m *Manager) mountOfMapping(mi MountInfo, d *drive) bool {
	if mi.Source == m.mapperPath(d) {
		return true
	}
	dev, err := m.deps.Mounter.DeviceNumber(m.mapperPath(d))
	return err == nil && dev != 0 && dev == mi.Dev
}

// listMappings lists the plugvault-* entries of the mapper directory.
func listMappings(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), luks.MappingPrefix) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// closeMapping closes a mapping, deferred if it is still held (it then goes when its last
// user does).
func (m *Manager) closeMapping(ctx context.Context, name string) error {
	err := m.deps.LUKS.Close(ctx, name, false)
	if err == nil {
		return nil
	}
	m.log.Warn("cannot close mapping; deferring the close", "mapping", name, "err", err)
	if derr := m.deps.LUKS.Close(ctx, name, true); derr != nil {
		return fmt.Errorf("cannot close %s: %w", name, errors.Join(err, derr))
	}
	return nil
}

// shutdown cancels every activity and waits until every drive is unmounted and locked.
func (m *Manager) shutdown() {
	m.mu.Lock()
	m.stopping = true
	// The bus still serves while the drives are locked: Forget may change m.order meanwhile.
	order := slices.Clone(m.order)
	for _, d := range order {
		d.startAfter = false
		if d.act != nil {
			d.act.cancel(errShutdown)
		}
	}
	m.mu.Unlock()
	m.wg.Wait()
	for _, d := range order {
		m.mu.Lock()
		left := d.mapTried || d.mountTried
		m.mu.Unlock()
		if !left {
			continue
		}
		if err := m.teardown(d, false); err != nil {
			m.log.Warn("cannot lock drive at shutdown", "drive", d.cfg.Name, "err", err)
			continue
		}
		m.mu.Lock()
		if d.dev != nil {
			m.setStateLocked(d, api.StateSafeToRemove, "Safe to remove")
		}
		m.mu.Unlock()
	}
}
