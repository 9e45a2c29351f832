package luks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/sysexec"
)

// Errors callers branch on, from cryptsetup's documented exit codes.
var (
	// ErrBadKey: exit 2, no key slot accepts the key. Wraps api.ErrBadPassphrase.
	ErrBadKey = fmt.Errorf("%w: no key slot accepts the key", api.ErrBadPassphrase)
	// ErrNoDevice: exit 4, the device does not exist or the mapping is not active.
	ErrNoDevice = errors.New("no such device or active mapping")
	// ErrBusy: exit 5, the mapping already exists or the device is in use. Wraps api.ErrBusy.
	ErrBusy = fmt.Errorf("%w: device or mapping exists or is in use", api.ErrBusy)
)

// Timeouts: a default argon2id slot takes up to ~35 s to open in a slow VM; status and close
// are quick.
const (
	keyTimeout   = 3 * time.Minute
	quickTimeout = 30 * time.Second
)

// maxKeySize bounds a key: cryptsetup's own default limit for a keyfile (8 MiB). plugvault's
// keys are 64 bytes, but a stick prepared by hand may carry a 1 MiB keyfile (dd bs=1M count=1).
// Keys go to cryptsetup through pipes, which hold 64 KiB: every key is written while
// cryptsetup reads (sysexec streams stdin; AddKey writes the second key concurrently).
const maxKeySize = 8 << 20

// Cryptsetup runs the cryptsetup tool. It is safe for concurrent use.
type Cryptsetup struct {
	run     sysexec.Runner
	path    string
	version string
	// dmsetup is dmsetup's absolute path ("" when it is missing): it removes a device-mapper
	// device that cryptsetup cannot close (removeStale).
	dmsetup string

	mu     sync.Mutex
	pbkdf  PBKDF // for Format's passphrase slot
	logger *slog.Logger

	// validateDevice checks a device path before it reaches argv; tests swap it to allow
	// image files (export_test.go). Production: checkDevice.
	validateDevice func(string) error
}

// New resolves cryptsetup's absolute path once and detects its version once.
func New(r sysexec.Runner) (*Cryptsetup, error) {
	path, err := sysexec.LookPath("cryptsetup")
	if err != nil {
		return nil, err
	}
	c, err := newAt(r, path)
	if err != nil {
		return nil, err
	}
	// libdevmapper, which cryptsetup needs, depends on dmsetup; the package says so too.
	c.dmsetup, _ = sysexec.LookPath("dmsetup")
	return c, nil
}

func newAt(r sysexec.Runner, path string) (*Cryptsetup, error) {
	c := &Cryptsetup{run: r, path: path, logger: slog.New(slog.DiscardHandler), validateDevice: checkDevice}
	res, err := r.Run(context.Background(), sysexec.Cmd{Path: path, Args: []string{"--version"}, Timeout: quickTimeout})
	if err != nil {
		return nil, fmt.Errorf("cannot run cryptsetup --version: %w", err)
	}
	v, err := parseVersion(string(res.Stdout))
	if err != nil {
		return nil, err
	}
	c.version = v
	// Logged once at startup through the default logger: New has no logger of its own.
	slog.Default().Info("found cryptsetup", "path", path, "version", v)
	return c, nil
}

// versionRe matches "cryptsetup 2.6.1 flags: ..." (the flags part since 2.4).
var versionRe = regexp.MustCompile(`^cryptsetup (\d+)\.(\d+)\.(\d+)\S*`)

// parseVersion checks that cryptsetup is new enough: --disable-external-tokens and
// luksDump --dump-json-metadata need 2.4.
func parseVersion(out string) (string, error) {
	m := versionRe.FindStringSubmatch(strings.TrimSpace(out))
	if m == nil {
		return "", fmt.Errorf("cannot parse cryptsetup version %q", strings.TrimSpace(out))
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	if major < 2 || (major == 2 && minor < 4) {
		return "", fmt.Errorf("cannot use cryptsetup %s.%s.%s: version 2.4 or newer is needed", m[1], m[2], m[3])
	}
	return m[1] + "." + m[2] + "." + m[3], nil
}

// Version is the detected cryptsetup version, e.g. "2.6.1".
func (c *Cryptsetup) Version() string { return c.version }

// Path is cryptsetup's absolute path.
func (c *Cryptsetup) Path() string { return c.path }

// SetLogger sets where tool runs are logged (at debug level: argv, never keys).
func (c *Cryptsetup) SetLogger(l *slog.Logger) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.logger = l
}

// SetPassphrasePBKDF sets the KDF Format uses for the passphrase slot. The default (argon2id,
// benchmarked by cryptsetup) is right for a passphrase; a test or a slow VM may use FastPBKDF.
func (c *Cryptsetup) SetPassphrasePBKDF(p PBKDF) error {
	if err := checkPBKDF(p); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pbkdf = p
	return nil
}

func checkPBKDF(p PBKDF) error {
	switch p.Type {
	case "", "argon2id", "argon2i":
		if p.Iterations != 0 && p.Iterations < 4 {
			return fmt.Errorf("cannot use argon2 time cost %d: the minimum is 4", p.Iterations)
		}
	case "pbkdf2":
		if p.Iterations != 0 && p.Iterations < 1000 {
			return fmt.Errorf("cannot use %d pbkdf2 iterations: the minimum is 1000", p.Iterations)
		}
	default:
		return fmt.Errorf("cannot use pbkdf %q: want argon2id, argon2i or pbkdf2", p.Type)
	}
	if p.Iterations < 0 || p.MemoryKiB < 0 {
		return errors.New("cannot use a negative pbkdf cost")
	}
	return nil
}

// checkDevice accepts only a canonical path of a block device node under /dev (no symlink,
// no "..", no leading '-').
func checkDevice(p string) error {
	if err := checkDevicePath(p, "/dev"); err != nil {
		return err
	}
	fi, err := os.Lstat(p)
	if err != nil {
		return fmt.Errorf("cannot use device %s: %w", p, ErrNoDevice)
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		return fmt.Errorf("cannot use device %s: it is a symlink, not a canonical device path", p)
	}
	if fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
		return fmt.Errorf("cannot use device %s: not a block device", p)
	}
	return nil
}

// checkDevicePath is the shape check shared by production and the test hook: an absolute,
// clean path strictly below root.
func checkDevicePath(p, root string) error {
	if p == "" || p[0] != '/' || filepath.Clean(p) != p {
		return fmt.Errorf("cannot use device %q: not an absolute canonical path", p)
	}
	if !strings.HasPrefix(p, root+"/") {
		return fmt.Errorf("cannot use device %q: not under %s", p, root)
	}
	return nil
}

// checkKey refuses an empty or oversized key: cryptsetup treats an empty key file as a read
// error and luksKillSlot then proceeds as in batch mode (measured with 2.6.1), so an empty key
// must never reach it.
func checkKey(key []byte, what string) error {
	if len(key) == 0 {
		return fmt.Errorf("cannot use an empty %s", what)
	}
	if len(key) > maxKeySize {
		return fmt.Errorf("cannot use a %s of %d bytes: the limit is %d", what, len(key), maxKeySize)
	}
	return nil
}

// exec runs cryptsetup and maps its exit status. what reads "open /dev/sdb" etc.
func (c *Cryptsetup) exec(ctx context.Context, what string, args []string, stdin []byte, extra []*os.File, timeout time.Duration) (sysexec.Result, error) {
	c.mu.Lock()
	logger := c.logger
	c.mu.Unlock()
	logger.Debug("running cryptsetup", "args", args) // argv only; keys are never in argv
	cmd := sysexec.Cmd{Path: c.path, Args: args, ExtraFiles: extra, Timeout: timeout}
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	start := time.Now()
	res, err := c.run.Run(ctx, cmd)
	logger.Debug("cryptsetup finished", "verb", args[0], "duration", time.Since(start), "error", err)
	if err != nil {
		return res, mapError(what, err)
	}
	return res, nil
}

// mapError turns cryptsetup's exit status into the package's errors, with its stderr for the
// user (stdin is never attached).
func mapError(what string, err error) error {
	var ee *sysexec.ExitError
	if !errors.As(err, &ee) {
		return fmt.Errorf("cannot %s: %w", what, err)
	}
	var sentinel error
	switch ee.Code {
	case 2:
		sentinel = ErrBadKey
	case 4:
		sentinel = ErrNoDevice
	case 5:
		sentinel = ErrBusy
	case 3:
		sentinel = errors.New("cryptsetup ran out of memory")
	default:
		return fmt.Errorf("cannot %s: %w", what, err)
	}
	if ee.Stderr != "" {
		return fmt.Errorf("cannot %s: %w (cryptsetup: %s)", what, sentinel, ee.Stderr)
	}
	return fmt.Errorf("cannot %s: %w", what, sentinel)
}

// IsLuks reports whether device has a LUKS header (exit 0) or not (exit 1).
func (c *Cryptsetup) IsLuks(ctx context.Context, device string) (bool, error) {
	if err := c.validateDevice(device); err != nil {
		return false, err
	}
	_, err := c.exec(ctx, "check "+device+" for a LUKS header", isLuksArgs(device), nil, nil, quickTimeout)
	var ee *sysexec.ExitError
	if errors.As(err, &ee) && ee.Code == 1 {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, nil
}

// UUID returns the LUKS UUID of device's header.
func (c *Cryptsetup) UUID(ctx context.Context, device string) (string, error) {
	if err := c.validateDevice(device); err != nil {
		return "", err
	}
	res, err := c.exec(ctx, "read the LUKS UUID of "+device, uuidArgs(device), nil, nil, quickTimeout)
	if err != nil {
		return "", err
	}
	u := strings.TrimSpace(string(res.Stdout))
	if err := CheckUUID(u); err != nil {
		return "", fmt.Errorf("cannot use the LUKS UUID of %s: %w", device, err)
	}
	return u, nil
}

// Dump reads the key slots of device's header: LUKS2 from the JSON metadata, LUKS1 from the
// text dump.
func (c *Cryptsetup) Dump(ctx context.Context, device string) (Header, error) {
	if err := c.validateDevice(device); err != nil {
		return Header{}, err
	}
	res, err := c.exec(ctx, "dump the LUKS header of "+device, dumpJSONArgs(device), nil, nil, quickTimeout)
	if err == nil {
		return parseJSONDump(res.Stdout)
	}
	var ee *sysexec.ExitError
	if !errors.As(err, &ee) || ee.Code != 1 {
		return Header{}, err
	}
	// Exit 1: not LUKS2 (or not LUKS at all): the text dump says which.
	res, err = c.exec(ctx, "dump the LUKS header of "+device, dumpTextArgs(device), nil, nil, quickTimeout)
	if err != nil {
		return Header{}, err
	}
	return parseTextDump(res.Stdout)
}

// TestKey checks key against device's header without opening it; slot -1 tries every slot.
func (c *Cryptsetup) TestKey(ctx context.Context, device string, key []byte, slot int) error {
	if err := c.validateDevice(device); err != nil {
		return err
	}
	if err := checkSlot(slot, true); err != nil {
		return err
	}
	if err := checkKey(key, "key"); err != nil {
		return err
	}
	_, err := c.exec(ctx, "test a key on "+device, testKeyArgs(device, slot), key, nil, keyTimeout)
	return err
}

// Open unlocks device as /dev/mapper/name with key (slot -1 tries every slot).
func (c *Cryptsetup) Open(ctx context.Context, device, name string, key []byte, slot int, readOnly bool) error {
	if err := c.validateDevice(device); err != nil {
		return err
	}
	if err := checkName(name); err != nil {
		return err
	}
	if err := checkSlot(slot, true); err != nil {
		return err
	}
	if err := checkKey(key, "key"); err != nil {
		return err
	}
	_, err := c.exec(ctx, "open "+device+" as "+name, openArgs(device, name, slot, readOnly), key, nil, keyTimeout)
	return err
}

// Close removes the mapping name; deferred removes it when its last user is gone (for a stick
// that was pulled while mounted). A device-mapper device of that name that cryptsetup does not
// take for a mapping is removed too (removeStale).
func (c *Cryptsetup) Close(ctx context.Context, name string, deferred bool) error {
	if err := checkName(name); err != nil {
		return err
	}
	_, err := c.exec(ctx, "close "+name, closeArgs(name, deferred), nil, nil, quickTimeout)
	if errors.Is(err, ErrNoDevice) && !deferred && c.removeStale(ctx, name) == nil {
		return nil
	}
	return err
}

// removeStale removes the device-mapper device name, which cryptsetup called not active. An
// open killed between creating the device and loading its table (the stick was pulled while
// cryptsetup ran, and the daemon killed it) leaves a device with no table: cryptsetup status
// fails (exit 1), close says it is not active (exit 4), and every later open of the drive says
// it already exists (exit 5). It has no device node, so nothing can hold it. An error means
// there was no such device (or dmsetup is missing).
func (c *Cryptsetup) removeStale(ctx context.Context, name string) error {
	if c.dmsetup == "" {
		return errors.New("dmsetup is not installed")
	}
	c.mu.Lock()
	logger := c.logger
	c.mu.Unlock()
	if _, err := c.run.Run(ctx, sysexec.Cmd{Path: c.dmsetup, Args: removeStaleArgs(name), Timeout: quickTimeout}); err != nil {
		return err
	}
	logger.Warn("removed a device-mapper device cryptsetup could not close (left by an interrupted open)", "mapping", name)
	return nil
}

// Active reports whether the mapping name exists (cryptsetup status: 0 active, 4 inactive;
// a device-mapper device it does not take for a mapping, such as one with no table, is an
// error: exit 1).
func (c *Cryptsetup) Active(ctx context.Context, name string) (bool, error) {
	if err := checkName(name); err != nil {
		return false, err
	}
	_, err := c.exec(ctx, "query "+name, statusArgs(name), nil, nil, quickTimeout)
	if errors.Is(err, ErrNoDevice) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, nil
}

// Format makes device a LUKS2 volume with passphrase in slot 0 (argon2id unless
// SetPassphrasePBKDF said otherwise) and returns its UUID. Everything on device is lost.
func (c *Cryptsetup) Format(ctx context.Context, device string, passphrase []byte, label string) (string, error) {
	if err := c.validateDevice(device); err != nil {
		return "", err
	}
	if err := checkKey(passphrase, "passphrase"); err != nil {
		return "", err
	}
	if err := checkLabel(label); err != nil {
		return "", err
	}
	c.mu.Lock()
	p := c.pbkdf
	c.mu.Unlock()
	if _, err := c.exec(ctx, "format "+device, formatArgs(device, label, p), passphrase, nil, keyTimeout); err != nil {
		return "", err
	}
	return c.UUID(ctx, device)
}

// HeaderBackup writes a backup of device's LUKS header to file, an absolute path that must not
// exist yet (cryptsetup creates it, mode 0400). luksHeaderRestore puts such a backup back on a
// stick whose header was damaged. The caller picks a file in a directory of its own: the
// backup holds the keyslots, so it is as sensitive as the stick.
func (c *Cryptsetup) HeaderBackup(ctx context.Context, device, file string) error {
	if err := c.validateDevice(device); err != nil {
		return err
	}
	if !filepath.IsAbs(file) || filepath.Clean(file) != file {
		return fmt.Errorf("cannot back up the LUKS header of %s to %q: not an absolute clean path", device, file)
	}
	_, err := c.exec(ctx, "back up the LUKS header of "+device, headerBackupArgs(device, file), nil, nil, quickTimeout)
	return err
}

// checkLabel allows printable labels of up to 47 bytes (LUKS2 keeps 48 with the NUL).
func checkLabel(label string) error {
	if len(label) > 47 {
		return fmt.Errorf("cannot use label %q: longer than 47 bytes", label)
	}
	for _, r := range label {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("cannot use label %q: it contains a control character", label)
		}
	}
	return nil
}

// AddKey adds newKey in a new slot, authorized by existingKey, and returns the slot number.
// The new key travels on an inherited pipe (fd 3), never a file. fastPBKDF uses FastPBKDF
// (only for random keys of >= 256 bits); otherwise argon2id.
func (c *Cryptsetup) AddKey(ctx context.Context, device string, existingKey, newKey []byte, fastPBKDF bool) (int, error) {
	if err := c.validateDevice(device); err != nil {
		return -1, err
	}
	if err := checkKey(existingKey, "existing key"); err != nil {
		return -1, err
	}
	if err := checkKey(newKey, "new key"); err != nil {
		return -1, err
	}
	before, err := c.Dump(ctx, device)
	if err != nil {
		return -1, err
	}
	p := PBKDF{}
	if fastPBKDF {
		p = FastPBKDF
	}
	r, w, err := os.Pipe()
	if err != nil {
		return -1, fmt.Errorf("cannot add a key to %s: %w", device, err)
	}
	// A key larger than the pipe's buffer blocks the writer until cryptsetup reads it, so it
	// is written concurrently; closing w gives EOF. Once cryptsetup has exited and r is closed
	// here too, a write still blocked fails with EPIPE, so the writer always ends.
	written := make(chan error, 1)
	go func() {
		_, werr := w.Write(newKey)
		if cerr := w.Close(); werr == nil {
			werr = cerr
		}
		written <- werr
	}()
	_, err = c.exec(ctx, "add a key to "+device, addKeyArgs(device, p), existingKey, []*os.File{r}, keyTimeout)
	r.Close()
	werr := <-written
	if err != nil {
		return -1, err
	}
	if werr != nil {
		return -1, fmt.Errorf("cannot add a key to %s: cannot hand over the new key: %w", device, werr)
	}
	after, err := c.Dump(ctx, device)
	if err != nil {
		return -1, err
	}
	var added []int
	for s := range after.Keyslots {
		if _, ok := before.Keyslots[s]; !ok {
			added = append(added, s)
		}
	}
	if len(added) != 1 {
		return -1, fmt.Errorf("cannot tell which key slot of %s was added (new slots: %v)", device, added)
	}
	return added[0], nil
}

// KillSlot wipes key slot slot of device. authKey must open another slot: cryptsetup 2.6
// proceeds without any check when the key file is empty and lets the last slot go (measured),
// so KillSlot refuses the last slot and checks authKey against the remaining slots itself
// before cryptsetup checks it again.
func (c *Cryptsetup) KillSlot(ctx context.Context, device string, slot int, authKey []byte) error {
	if err := c.validateDevice(device); err != nil {
		return err
	}
	if err := checkSlot(slot, false); err != nil {
		return err
	}
	if err := checkKey(authKey, "key"); err != nil {
		return err
	}
	h, err := c.Dump(ctx, device)
	if err != nil {
		return err
	}
	if _, ok := h.Keyslots[slot]; !ok {
		return fmt.Errorf("cannot remove key slot %d of %s: %w", slot, device, ErrNoSlot)
	}
	if len(h.Keyslots) == 1 {
		return fmt.Errorf("cannot remove key slot %d of %s: it is the last one (the volume would be lost)", slot, device)
	}
	opened := false
	for _, other := range h.SlotNumbers() {
		if other == slot {
			continue
		}
		err := c.TestKey(ctx, device, authKey, other)
		if err == nil {
			opened = true
			break
		}
		if !errors.Is(err, ErrBadKey) {
			return err
		}
	}
	if !opened {
		return fmt.Errorf("cannot remove key slot %d of %s: the key opens no other slot: %w", slot, device, ErrBadKey)
	}
	_, err = c.exec(ctx, fmt.Sprintf("remove key slot %d of %s", slot, device), killSlotArgs(device, slot), authKey, nil, keyTimeout)
	return err
}

// ErrNoSlot: the key slot is not in use.
var ErrNoSlot = errors.New("no such key slot")

// maxSlot is LUKS2's highest key slot number (LUKS1 has 0-7).
const maxSlot = 31

func checkSlot(slot int, anyOK bool) error {
	if anyOK && slot == -1 {
		return nil
	}
	if slot < 0 || slot > maxSlot {
		return fmt.Errorf("cannot use key slot %d: want 0-%d", slot, maxSlot)
	}
	return nil
}
