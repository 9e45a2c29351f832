package drive

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
	"time"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/config"
	"github.com/plugvault/plugvault/service/internal/luks"
)

// pulledWindow: a removal this soon after the backup failed is taken as its cause (writes to a
// pulled stick fail before udev reports the removal).
const pulledWindow = 30 * time.Second

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

// drive is one configured drive. Every field is guarded by Manager.mu.
type drive struct {
	cfg       config.Drive
	uuid      string // lower case
	m         machine
	act       *activity // the activity holding the slot (m.act is its kind)
	snapshots []api.Snapshot
	out       outbox
	check     passCheck // CheckPassphrase's attempts
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
	dirty      []*drive       // drives with publications to deliver at the next unlock
	published  *sync.Cond     // on mu: publications were delivered

	onEvent func(Event)                           // test hook: called after each live event was handled
	onQueue func(uuid string, st api.DriveStatus) // test hook: called with Manager.mu held as a status is queued
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
	m.published = sync.NewCond(&m.mu)
	m.mu.Lock()
	for _, c := range deps.Config.Drives {
		if err := m.addDriveLocked(c); err != nil {
			m.mu.Unlock()
			return nil, err
		}
	}
	m.unlock()
	return m, nil
}

// AddDrive starts managing a drive enrolled while the daemon runs and publishes it
// (Publisher.AddDrive; an error from it, such as a drive published already, is only logged).
// A stick that is already plugged in is picked up at its next udev event.
func (m *Manager) AddDrive(c config.Drive) error {
	m.mu.Lock()
	defer m.unlock()
	return m.addDriveLocked(c)
}

// RemoveDrive (enroll.Registry) stops managing a drive and unpublishes it (Publisher.RemoveDrive). It refuses
// (api.ErrBusy) while the drive is busy or still unlocked: eject it first.
func (m *Manager) RemoveDrive(uuid string) error {
	m.mu.Lock()
	defer m.unlock()
	d, err := m.lookupLocked(uuid)
	if err != nil {
		return err
	}
	if d.m.act != "" || d.m.setUp() {
		return fmt.Errorf("cannot forget %s: it is in use; eject it first: %w", d.cfg.Name, api.ErrBusy)
	}
	delete(m.drives, d.uuid)
	m.order = slices.DeleteFunc(m.order, func(x *drive) bool { return x == d })
	m.queueLocked(d, publication{remove: true})
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
	d.m = machine{
		st:       api.DriveStatus{Name: c.Name, LuksUUID: uuid, State: api.StateAbsent, EtaSeconds: -1},
		stopping: m.stopping,
	}
	m.drives[uuid] = d
	m.order = append(m.order, d)
	m.queueLocked(d, publication{add: true, st: d.m.st})
	return nil
}

func (m *Manager) mappingName(d *drive) string { return luks.MappingPrefix + d.uuid }
func (m *Manager) mapperPath(d *drive) string  { return filepath.Join(m.mapper, m.mappingName(d)) }
func (m *Manager) target(d *drive) string      { return filepath.Join(m.base, d.uuid, "drive") }

// lookupLocked finds a drive by LUKS UUID.
func (m *Manager) lookupLocked(uuid string) (*drive, error) {
	d := m.drives[strings.ToLower(uuid)]
	if d == nil {
		return nil, fmt.Errorf("cannot find drive %s: %w", uuid, api.ErrNotFound)
	}
	return d, nil
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
	defer m.unlock()
	switch e.Action {
	case "remove":
		if e.SeqNum != 0 {
			m.removedSeq[e.DevPath] = e.SeqNum
		}
		for _, d := range m.order {
			m.applyLocked(d, evRemove{devPath: e.DevPath})
		}
	case "add", "change":
		if e.SeqNum != 0 && e.SeqNum < m.removedSeq[e.DevPath] {
			m.log.Debug("ignoring a stale event of a removed device", "devpath", e.DevPath, "seqnum", e.SeqNum)
			return
		}
		if d, dv := m.match(e); d != nil {
			m.applyLocked(d, evPlug{dev: *dv})
		}
	}
}

// handleSleep stops every backup run before suspend (each releases its inhibitor once the
// drive is locked) and starts them again after resume if the stick is still there.
func (m *Manager) handleSleep(sleeping bool) {
	m.mu.Lock()
	defer m.unlock()
	for _, d := range m.order {
		if sleeping {
			m.applyLocked(d, evSleep{})
		} else {
			m.applyLocked(d, evResume{})
		}
	}
}

// shutdown cancels every activity and waits until every drive is unmounted and locked.
func (m *Manager) shutdown() {
	m.mu.Lock()
	m.stopping = true
	// The bus still serves while the drives are locked: Forget may change m.order meanwhile.
	order := slices.Clone(m.order)
	for _, d := range order {
		m.applyLocked(d, evShutdown{})
	}
	m.unlock()
	m.wg.Wait()
	for _, d := range order {
		m.mu.Lock()
		left := d.m.setUp()
		m.mu.Unlock()
		if !left {
			continue
		}
		if err := m.teardown(d, false); err != nil {
			m.log.Warn("cannot lock drive at shutdown", "drive", d.cfg.Name, "err", err)
			continue
		}
		m.apply(d, evShutdownLocked{})
	}
}
