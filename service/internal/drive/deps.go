package drive

import (
	"context"
	"io"
	"log/slog"
	"time"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/config"
)

// Event is one udev event of the block subsystem, as service/internal/udev reports it (the
// daemon adapts udev.Event field by field).
type Event struct {
	Action       string // "add", "change", "remove", ... (coldplug reports "add")
	DevPath      string // DEVPATH, the sysfs path without /sys
	Subsystem    string // "block"
	DevType      string // "disk" or "partition"
	DevName      string // absolute device node, e.g. "/dev/sdb1"
	Major, Minor uint32
	SeqNum       uint64 // 0 for coldplug
	Props        map[string]string
}

// Prop returns the udev property key, or "".
func (e Event) Prop(key string) string { return e.Props[key] }

// Source is the udev monitor: subscribed before Run starts, then enumerated for coldplug.
type Source interface {
	Events() <-chan Event
	Enumerate(ctx context.Context) ([]Event, error)
}

// LUKS is the part of service/internal/luks.Cryptsetup the state machine uses. Errors of Open
// wrap api.ErrBadPassphrase when the key is wrong and api.ErrBusy when the mapping exists.
type LUKS interface {
	IsLuks(ctx context.Context, device string) (bool, error)
	// Identify returns the header's LUKS UUID and its fingerprint (the UUID and volume-key
	// digest: luks.Fingerprint).
	Identify(ctx context.Context, device string) (uuid, fingerprint string, err error)
	TestKey(ctx context.Context, device string, key []byte, slot int) error
	Open(ctx context.Context, device, name string, key []byte, slot int, readOnly bool) error
	Close(ctx context.Context, name string, deferred bool) error
	Active(ctx context.Context, name string) (bool, error)
}

// MountInfo is one mount at or below the mount base (service/internal/mount.Info).
type MountInfo struct {
	Target, Source, FSType string
	Dev                    uint64
}

// Mounter is service/internal/mount: the Mounter's methods plus the package functions
// DeviceNumber and Mounts, and FSType (the filesystem type inside an opened mapping, for the
// engine's Job and the mount call; it is not in the agreed mount API, so the daemon's adapter
// supplies it, from a superblock probe or from udev's ID_FS_TYPE of the dm device).
type Mounter interface {
	// Mount mounts source at target (<base>/<uuid>/drive), reachable only by root and the
	// user runAs ("" or "root": root only).
	Mount(ctx context.Context, source, target, fstype string, readOnly bool, extra []string, runAs string) error
	// Unmount retries while target is busy and then fails with an error wrapping
	// api.ErrBusy that names the programs holding it.
	Unmount(ctx context.Context, target string) error
	// Detach unmounts target lazily (MNT_DETACH). The state machine uses it only when the
	// stick is gone: then nothing can reach the device any more and the mapping must go so a
	// replug works. While the stick is there, a busy mount is reported, never detached:
	// "safe to remove" must mean the filesystem is closed.
	Detach(target string) error
	FSType(device string) (string, error)
	DeviceNumber(path string) (uint64, error)
	Mounts(base string) ([]MountInfo, error)
}

// Job is everything the backup engine needs for one run (service/internal/backup.Job plus the
// user the engine child runs as).
type Job struct {
	LuksUUID  string // the drive's, lower case
	Sources   []string
	Excludes  []string
	Target    string // the mount point
	Host      string
	FSType    string
	Dev       uint64 // device number of the mapping, for the engine's mount guard
	Retention config.Retention
	RunAs     string
}

// Progress is the engine's progress report (service/internal/backup.Progress).
type Progress struct {
	Phase                 string
	FilesDone, FilesTotal uint64
	BytesDone, BytesTotal uint64
	Rate                  float64       // bytes per second
	ETA                   time.Duration // < 0: unknown
}

// Result is the outcome of a finished engine run (service/internal/backup.Result).
type Result struct {
	Snapshot     string
	Files, Bytes uint64
	Warnings     []string
	Dropped      int // complete snapshots deleted for space that the retention policy would have kept
}

// Engine is the backup engine. Run must return only once the engine child's whole process group
// is gone (when ctx ends it stops at a safe point or is killed; the partial snapshot stays for
// resuming), so that nothing holds the mount when the state machine unmounts; when
// context.Cause(ctx) is ErrRemoved the stick is gone and the child should be killed at once.
// Verify and Restore run with the caller's credentials and hand progress (may be nil) the
// bytes done and the total (0: unknown) as they go.
type Engine interface {
	Run(ctx context.Context, job Job, progress func(Progress)) (Result, error)
	List(target, host string) ([]api.Snapshot, error)
	Verify(ctx context.Context, target, host, snapshot string, caller Caller, progress func(done, total uint64)) (checked uint64, problems []string, err error)
	Restore(ctx context.Context, target, host string, req RestoreRequest, progress func(done, total uint64)) error
}

// Logind is the part of org.freedesktop.login1.Manager the state machine uses: a delay
// inhibitor held during every run, and the PrepareForSleep signal. NewLogind returns the real
// one (a no-op when logind is absent).
type Logind interface {
	// Inhibit takes an inhibitor lock; closing the returned Closer releases it.
	Inhibit(what, who, why, mode string) (io.Closer, error)
	// PrepareForSleep delivers the signal's argument: true before suspend, false after resume.
	// It is called once; the channel may be nil (never delivers).
	PrepareForSleep() <-chan bool
}

// Deps are the Manager's dependencies. Config, Source, LUKS, Mounter, Engine and Publisher are
// required; the rest have defaults.
type Deps struct {
	Config    *config.Config
	Source    Source
	LUKS      LUKS
	Mounter   Mounter
	Engine    Engine
	PowerOff  func(ctx context.Context, devPath string) error // nil: eject does not power off
	Publisher Publisher
	Logger    *slog.Logger
	Clock     func() time.Time

	// ReadKeyfile reads a drive's key, refusing symlinks and keyfiles with lax ownership or
	// permissions; errors wrap fs.ErrNotExist when the keyfile is missing. Nil means
	// config.ReadKeyfile, which checks the opened file itself so it cannot be swapped.
	ReadKeyfile func(path string) ([]byte, error)
	// RecordFingerprint keeps a drive's fingerprint in the configuration file (taken at the
	// first keyfile unlock of a drive registered without one). Nil: kept in memory only.
	RecordFingerprint func(luksUUID, fingerprint string) error
	// Logind defaults to no inhibitor and no sleep signal.
	Logind Logind
	// Mappings lists the active mapping names starting with "plugvault-" (restart
	// reconciliation); nil lists MapperDir.
	Mappings func(ctx context.Context) ([]string, error)
	// MapperDir defaults to /dev/mapper.
	MapperDir string
	// Hostname defaults to os.Hostname.
	Hostname func() (string, error)
	// After defaults to time.After; it times the slower answers to wrong passphrases.
	After func(time.Duration) <-chan time.Time
}

// noLogind is the Logind of a system without logind: no inhibitor, no sleep signal.
type noLogind struct{}

func (noLogind) Inhibit(what, who, why, mode string) (io.Closer, error) { return nopCloser{}, nil }
func (noLogind) PrepareForSleep() <-chan bool                           { return nil }

type nopCloser struct{}

func (nopCloser) Close() error { return nil }
