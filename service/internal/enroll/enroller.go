package enroll

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"unicode"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/config"
	"github.com/plugvault/plugvault/service/internal/drive"
	"github.com/plugvault/plugvault/service/internal/luks"
	"github.com/plugvault/plugvault/service/internal/sysexec"
)

// maxSecret bounds a keyfile (cryptsetup's own default limit is 8 MiB).
const maxSecret = 8 << 20

// keyLen is the size of the random keys plugvault makes: 512 bits, far beyond what a PBKDF
// could add to.
const keyLen = 64

// LUKS is the part of service/internal/luks.Cryptsetup that enrolling needs (same method set).
type LUKS interface {
	Format(ctx context.Context, device string, passphrase []byte, label string) (uuid string, err error)
	AddKey(ctx context.Context, device string, existingKey, newKey []byte, fastPBKDF bool) (slot int, err error)
	KillSlot(ctx context.Context, device string, slot int, authKey []byte) error
	TestKey(ctx context.Context, device string, key []byte, slot int) error
	UUID(ctx context.Context, device string) (string, error)
	// Identify returns the header's UUID and its fingerprint (UUID and volume-key digest:
	// luks.Fingerprint).
	Identify(ctx context.Context, device string) (uuid, fingerprint string, err error)
	Open(ctx context.Context, device, name string, key []byte, slot int, readOnly bool) error
	Close(ctx context.Context, name string, deferred bool) error
	HeaderBackup(ctx context.Context, device, file string) error
}

// Keyslot is what enrolling needs to know about one LUKS keyslot (from luks.Cryptsetup.Dump).
type Keyslot struct {
	Type  string // "luks2"
	PBKDF string // "argon2id", "argon2i", "pbkdf2"
}

// Registry is how a new or forgotten drive reaches the running daemon: the drive state machine
// reloads it and the D-Bus Drive object is published or removed (drive.Publisher). plugvaultd
// implements it. RemoveDrive fails (wrapping api.ErrBusy) while the drive is in a
// run.
type Registry interface {
	AddDrive(d config.Drive) error
	RemoveDrive(uuid string) error
}

// Deps is everything an Enroller uses; the function fields are service/internal/config's
// functions in production.
type Deps struct {
	LUKS        LUKS
	Keyslots    func(ctx context.Context, device string) (map[int]Keyslot, error)
	Registry    Registry
	LoadConfig  func(path string) (*config.Config, error)
	AppendDrive func(path string, d config.Drive) error
	RemoveDrive func(path, luksUUID string) error
	// Runner runs mkfs and udevadm; LookPath finds them (sysexec.LookPath when nil).
	Runner   sysexec.Runner
	LookPath func(name string) (string, error)
	// DeviceByUUID finds the device node of a present LUKS device (default: the
	// /dev/disk/by-uuid link).
	DeviceByUUID func(uuid string) (string, error)
	// ReadKeyfile reads a drive's keyfile (Forget's removeKeyslot authorizes with it); nil
	// means config.ReadKeyfile, the reader plugvaultd unlocks drives with.
	ReadKeyfile func(path string) ([]byte, error)
	// TempDir is where a header backup is made, in a new private directory that is removed
	// again (os.TempDir when "").
	TempDir string
	Logger  *slog.Logger
	Rand    io.Reader // crypto/rand when nil

	// SealKey turns a new drive key into what the keyfile holds (keyseal.Sealer.Seal in
	// plugvaultd); nil writes the key as it is.
	SealKey func(ctx context.Context, key []byte) ([]byte, error)
	// ReadStoredKey reads a keyfile as it is stored, sealed or not (SealKeys); nil means
	// config.ReadKeyfile.
	ReadStoredKey func(path string) ([]byte, error)

	ConfigPath string // config.DefaultPath when ""
	KeyDir     string // config.DefaultKeyDir when ""
	RulesDir   string // /etc/udev/rules.d when ""
	System     System // the real /sys, /run/udev/data and /proc when zero
}

// Enroller implements the daemon's Enroller. One enrollment (or adopt, or forget) runs at a time; a
// second one fails at once with api.ErrBusy.
type Enroller struct {
	d  Deps
	mu sync.Mutex
}

// New checks deps and fills in the defaults.
func New(d Deps) (*Enroller, error) {
	if d.LUKS == nil || d.Keyslots == nil || d.Registry == nil || d.LoadConfig == nil ||
		d.AppendDrive == nil || d.RemoveDrive == nil || d.Runner == nil {
		return nil, errors.New("internal error: enroll.New needs LUKS, Keyslots, Registry, LoadConfig, AppendDrive, RemoveDrive and Runner")
	}
	if d.LookPath == nil {
		d.LookPath = sysexec.LookPath
	}
	if d.DeviceByUUID == nil {
		d.DeviceByUUID = deviceByUUID
	}
	if d.ReadKeyfile == nil {
		d.ReadKeyfile = config.ReadKeyfile
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Rand == nil {
		d.Rand = rand.Reader
	}
	if d.ConfigPath == "" {
		d.ConfigPath = config.DefaultPath
	}
	if d.KeyDir == "" {
		d.KeyDir = config.DefaultKeyDir
	}
	if d.RulesDir == "" {
		d.RulesDir = "/etc/udev/rules.d"
	}
	s := &d.System
	if s.SysRoot == "" {
		s.SysRoot = "/sys"
	}
	if s.UdevDataDir == "" {
		s.UdevDataDir = "/run/udev/data"
	}
	if s.MountInfo == "" {
		s.MountInfo = "/proc/self/mountinfo"
	}
	if s.Swaps == "" {
		s.Swaps = "/proc/swaps"
	}
	if s.DevNumber == nil {
		s.DevNumber = statDevNum
	}
	return &Enroller{d: d}, nil
}

// deviceByUUID resolves /dev/disk/by-uuid/UUID (udev's link) to the device node.
func deviceByUUID(uuid string) (string, error) {
	p, err := filepath.EvalSymlinks("/dev/disk/by-uuid/" + uuid)
	if err != nil {
		return "", fmt.Errorf("the drive with LUKS UUID %s is not plugged in: %w", uuid, api.ErrNotPresent)
	}
	if !strings.HasPrefix(p, "/dev/") {
		return "", fmt.Errorf("internal error: %s resolves outside /dev", uuid)
	}
	return p, nil
}

// undoStack holds the steps that roll back what succeeded so far, run in reverse.
type undoStack struct {
	steps []undoStep
}

type undoStep struct {
	what string
	fn   func() error
}

func (u *undoStack) push(what string, fn func() error) { u.steps = append(u.steps, undoStep{what, fn}) }

// run undoes every step in reverse order and returns what could not be undone.
func (u *undoStack) run(log *slog.Logger) error {
	var errs []error
	for i := len(u.steps) - 1; i >= 0; i-- {
		s := u.steps[i]
		if err := s.fn(); err != nil {
			log.Error("cannot roll back", "step", s.what, "err", err)
			errs = append(errs, fmt.Errorf("cannot %s: %w", s.what, err))
		} else {
			log.Info("rolled back", "step", s.what)
		}
	}
	u.steps = nil
	return errors.Join(errs...)
}

// rollback runs the undo stack after a failure and adds what it could not undo to err.
func (e *Enroller) rollback(u *undoStack, err error) error {
	if uerr := u.run(e.d.Logger); uerr != nil {
		return fmt.Errorf("%w (and the rollback failed: %v)", err, uerr)
	}
	return err
}

func (e *Enroller) lock(what string) error {
	if !e.mu.TryLock() {
		return fmt.Errorf("cannot %s: another enroll, adopt or forget is running: %w", what, api.ErrBusy)
	}
	return nil
}

// validName accepts a drive name for the configuration and messages: printable, one line.
func validName(name string) error {
	if name == "" || len(name) > 64 || strings.TrimSpace(name) != name {
		return fmt.Errorf("the drive name %q must be 1 to 64 characters without leading or trailing space: %w", name, api.ErrInvalidArgument)
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("the drive name %q has a character that is not printable: %w", name, api.ErrInvalidArgument)
		}
	}
	return nil
}

// tool resolves a program's absolute path.
func (e *Enroller) tool(name string) (string, error) {
	p, err := e.d.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("cannot find %s: %w", name, err)
	}
	return p, nil
}

// run runs a tool through the Runner.
func (e *Enroller) run(ctx context.Context, path string, args []string) error {
	e.d.Logger.Debug("running", "argv", append([]string{path}, args...))
	if _, err := e.d.Runner.Run(ctx, sysexec.Cmd{Path: path, Args: args}); err != nil {
		return err
	}
	return nil
}

// newKey returns a fresh random key.
func (e *Enroller) newKey() ([]byte, error) {
	k := make([]byte, keyLen)
	if _, err := io.ReadFull(e.d.Rand, k); err != nil {
		return nil, fmt.Errorf("cannot make a random key: %w", err)
	}
	return k, nil
}

// alreadyEnrolled refuses a UUID that the configuration already has, or whose keyfile exists.
func (e *Enroller) alreadyEnrolled(uuid string) error {
	cfg, err := e.d.LoadConfig(e.d.ConfigPath)
	if err != nil {
		return fmt.Errorf("cannot read the configuration: %w", err)
	}
	for _, d := range cfg.Drives {
		if strings.EqualFold(d.LuksUUID, uuid) {
			return fmt.Errorf("the drive with LUKS UUID %s is already enrolled as %q: %w", uuid, d.Name, api.ErrInvalidArgument)
		}
	}
	if _, err := os.Lstat(e.keyPath(uuid)); err == nil {
		return fmt.Errorf("a keyfile for LUKS UUID %s already exists (%s): %w", uuid, e.keyPath(uuid), api.ErrInvalidArgument)
	}
	return nil
}

func (e *Enroller) keyPath(uuid string) string { return filepath.Join(e.d.KeyDir, uuid+".key") }

func (e *Enroller) rulePath(uuid string) string {
	return filepath.Join(e.d.RulesDir, "90-plugvault-"+uuid+".rules")
}

// storeKey writes the keyfile (0400 in the 0700 key directory) and registers its removal.
func (e *Enroller) storeKey(u *undoStack, uuid string, key []byte) error {
	if err := ensurePrivateDir(e.d.KeyDir); err != nil {
		return err
	}
	path := e.keyPath(uuid)
	if err := e.writeKeyfile(path, key); err != nil {
		return err
	}
	u.push("remove the keyfile "+path, func() error { return removeIfExists(path) })
	return nil
}

// installRule writes the udev rule and reloads udevd; it registers the rule's removal.
func (e *Enroller) installRule(ctx context.Context, u *undoStack, uuid, udevadm string) error {
	mapping, err := luks.MappingName(uuid)
	if err != nil {
		return err
	}
	path := e.rulePath(uuid)
	if err := os.MkdirAll(e.d.RulesDir, 0o755); err != nil {
		return fmt.Errorf("cannot create %s: %w", e.d.RulesDir, err)
	}
	if err := replaceFile(path, []byte(udevRule(uuid, mapping)), 0o644); err != nil {
		return err
	}
	u.push("remove the udev rule "+path, func() error {
		if err := removeIfExists(path); err != nil {
			return err
		}
		return e.run(context.WithoutCancel(ctx), udevadm, udevReloadArgs())
	})
	if err := e.run(ctx, udevadm, udevReloadArgs()); err != nil {
		return fmt.Errorf("cannot reload the udev rules: %w", err)
	}
	return nil
}

// replayEvent makes udevd send a change event for device once the drive is registered: udisks
// then sees UDISKS_IGNORE now rather than at the next plug, and the drive state machine sees the
// (already plugged) drive it has just learnt about.
func (e *Enroller) replayEvent(ctx context.Context, device, udevadm string) {
	if err := e.run(ctx, udevadm, udevTriggerArgs(device)); err != nil {
		// The drive is registered and the rule in place; both apply from the next plug.
		e.d.Logger.Warn("cannot replay the udev event; the rule applies from the next plug", "device", device, "err", err)
	}
}

// register adds the drive to the configuration and then to the running daemon.
// newDrive is the configuration entry of a new drive. A user who enrolls a drive for
// themselves wants their home backed up, as themselves: that is the default, and the
// administrator can change sources and run_as in config.toml later. A drive enrolled by root
// gets no sources (backing up the system is a decision to write down, not a default).
func newDrive(name, uuid string, slot int, caller drive.Caller) config.Drive {
	d := config.Drive{Name: name, LuksUUID: uuid, KeySlot: slot}
	if caller.UID != 0 && caller.User != "" && filepath.IsAbs(caller.Home) && caller.Home != "/" {
		d.RunAs = caller.User
		d.Sources = []string{filepath.Clean(caller.Home)}
	}
	return d
}

// The drive's fingerprint is taken from device now, after its key was proven: from then on
// only a stick with this volume key is the drive.
func (e *Enroller) register(ctx context.Context, u *undoStack, device string, d config.Drive) error {
	uuid, fp, err := e.d.LUKS.Identify(ctx, device)
	if err != nil {
		return fmt.Errorf("cannot record the drive's fingerprint: %w", err)
	}
	if uuid != d.LuksUUID {
		return fmt.Errorf("cannot record the drive's fingerprint: %s now has LUKS UUID %s, not %s", device, uuid, d.LuksUUID)
	}
	d.Fingerprint = fp
	if err := e.d.AppendDrive(e.d.ConfigPath, d); err != nil {
		return fmt.Errorf("cannot add the drive to %s: %w", e.d.ConfigPath, err)
	}
	u.push("remove the drive from "+e.d.ConfigPath, func() error { return e.d.RemoveDrive(e.d.ConfigPath, d.LuksUUID) })
	if err := e.d.Registry.AddDrive(d); err != nil {
		return fmt.Errorf("cannot register the drive with plugvaultd: %w", err)
	}
	return nil
}

// findSlot returns the keyslot that key opens, and its PBKDF.
func (e *Enroller) findSlot(ctx context.Context, device string, key []byte) (int, Keyslot, error) {
	slots, err := e.d.Keyslots(ctx, device)
	if err != nil {
		return -1, Keyslot{}, fmt.Errorf("cannot read the LUKS header of %s: %w", device, err)
	}
	nums := make([]int, 0, len(slots))
	for n := range slots {
		nums = append(nums, n)
	}
	sort.Ints(nums)
	for _, n := range nums {
		err := e.d.LUKS.TestKey(ctx, device, key, n)
		if err == nil {
			return n, slots[n], nil
		}
		if !errors.Is(err, api.ErrBadPassphrase) {
			return -1, Keyslot{}, fmt.Errorf("cannot test the key on %s: %w", device, err)
		}
	}
	return -1, Keyslot{}, fmt.Errorf("the key does not open %s: %w", device, api.ErrBadPassphrase)
}
