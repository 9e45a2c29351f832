package mount

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/config"
)

// DefaultBase is where plugvault mounts drives.
const DefaultBase = "/run/plugvault"

// flags are on every mount: the stick's contents are data, never programs, devices or setuid
// binaries; noatime keeps reads (browsing, verify) from writing.
const flags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_NOATIME

// ErrNotMounted: the path is not a mount point (or not ours).
var ErrNotMounted = errors.New("not mounted")

// Mounter mounts filesystems below its base directory.
type Mounter struct {
	logger *slog.Logger
	base   string
	env    env
	// retries is how often Unmount tries again after EBUSY, with backoff from retryDelay.
	retries    int
	retryDelay time.Duration
}

// env holds the roots the package reads, injectable for tests and a harness.
type env struct {
	procRoot  string // /proc: holders of a busy mount
	mountinfo string // /proc/self/mountinfo
	sysRoot   string // /sys: btrfs device lists
}

var defaultEnv = env{procRoot: "/proc", mountinfo: "/proc/self/mountinfo", sysRoot: "/sys"}

// NewMounter returns a Mounter for DefaultBase.
func NewMounter(logger *slog.Logger) *Mounter {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Mounter{logger: logger, base: DefaultBase, env: defaultEnv, retries: 5, retryDelay: 200 * time.Millisecond}
}

// SetBase sets the base directory (config MountBase). It must be absolute and clean.
func (m *Mounter) SetBase(base string) error {
	if !filepath.IsAbs(base) || filepath.Clean(base) != base || base == "/" {
		return fmt.Errorf("cannot use mount base %q: not an absolute clean path", base)
	}
	m.base = base
	return nil
}

// Base returns the base directory.
func (m *Mounter) Base() string { return m.base }

// baseMode is traversable, not listable (see the package documentation).
const baseMode = 0o711

// ensureBase creates the base directory (baseMode) if missing and refuses one that is a
// symlink, not a directory, or not owned by root; any other mode is set to baseMode.
func (m *Mounter) ensureBase() error {
	err := os.Mkdir(m.base, baseMode)
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("cannot create mount base %s: %w", m.base, err)
	}
	created := err == nil // the umask (plugvaultd runs with 0077) may have taken bits off
	var st unix.Stat_t
	if err := unix.Lstat(m.base, &st); err != nil {
		return fmt.Errorf("cannot use mount base %s: %w", m.base, err)
	}
	switch {
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return fmt.Errorf("cannot use mount base %s: it is a symlink", m.base)
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("cannot use mount base %s: not a directory", m.base)
	case st.Uid != 0:
		return fmt.Errorf("cannot use mount base %s: owned by uid %d, not root", m.base, st.Uid)
	}
	if st.Mode&0o7777 != baseMode {
		if !created {
			m.logger.Warn("setting mount base permissions", "path", m.base, "mode", fmt.Sprintf("%#o", st.Mode&0o7777))
		}
		if err := unix.Fchmodat(unix.AT_FDCWD, m.base, baseMode, 0); err != nil {
			return fmt.Errorf("cannot set the permissions of mount base %s: %w", m.base, err)
		}
	}
	return nil
}

// nameRe is a mount point name below the base: one path element, no dot files.
var nameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// checkTarget accepts only base/<gate>/<name> (see Mount), and with legacy also base/<name>, a
// mount point with no gate: Mount never makes one, Unmount and Detach clean one up.
func (m *Mounter) checkTarget(target string, legacy bool) error {
	gate := filepath.Dir(target)
	ok := filepath.Clean(target) == target && nameRe.MatchString(filepath.Base(target)) &&
		(filepath.Dir(gate) == m.base && nameRe.MatchString(filepath.Base(gate)) || legacy && gate == m.base)
	if !ok {
		return fmt.Errorf("cannot use mount point %q: want %s/<name>/<name>", target, m.base)
	}
	return nil
}

// checkSource accepts a clean absolute path under /dev that is (or links to) a block device.
func checkSource(source string) error {
	if filepath.Clean(source) != source || !strings.HasPrefix(source, "/dev/") {
		return fmt.Errorf("cannot mount %q: not a canonical path under /dev", source)
	}
	if _, err := DeviceNumber(source); err != nil {
		return err
	}
	return nil
}

// mountData validates fstype and the extra options against the one allow-list that
// config.toml is checked against too (config.CheckMountOptions), and returns the data string
// for mount(2).
func mountData(fstype string, extra []string) (string, error) {
	if err := config.CheckMountOptions(fstype, extra); err != nil {
		return "", err
	}
	return strings.Join(extra, ","), nil
}

// Mount mounts source (a block device, e.g. /dev/mapper/plugvault-<uuid>) on target
// (base/<gate>/<name>) with nosuid,nodev,noexec,noatime, read-only if asked. After mounting it
// checks Guard, and undoes the mount if that fails.
//
// The gate directory base/<gate> is what keeps everybody but root and the user uid out of the
// mount (a mount point's own mode is hidden by what is mounted on it, so the check has to be
// one level up): it is root's, mode 0700, with a POSIX ACL that lets uid search and list it
// (uid 0: no ACL, root only), as udisks does for /run/media/<user>. Nobody else can so much as
// enter the mount, and so nobody else can keep it busy. The target below it is created 0700.
// Both are root's, so no user can swap them for a symlink.
func (m *Mounter) Mount(ctx context.Context, source, target, fstype string, readOnly bool, extra []string, uid uint32) error {
	data, err := mountData(fstype, extra)
	if err != nil {
		return err
	}
	if err := m.checkTarget(target, false); err != nil {
		return err
	}
	if err := checkSource(source); err != nil {
		return err
	}
	dev, err := DeviceNumber(source)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := m.ensureBase(); err != nil {
		return err
	}
	if err := m.prepareGate(filepath.Dir(target), uid); err != nil {
		return err
	}
	if err := m.prepareTarget(target); err != nil {
		return err
	}
	fl := uintptr(flags)
	if readOnly {
		fl |= unix.MS_RDONLY
	}
	if err := unix.Mount(source, target, fstype, fl, data); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("cannot mount %s on %s: %w", source, target, api.ErrBusy)
		}
		return fmt.Errorf("cannot mount %s on %s: %w", source, target, err)
	}
	if err := guard(m.env, target, dev); err != nil {
		_ = unix.Unmount(target, unix.UMOUNT_NOFOLLOW)
		return fmt.Errorf("cannot mount %s on %s: the mount is not what was asked for: %w", source, target, err)
	}
	m.logger.Info("mounted", "source", source, "target", target, "fstype", fstype, "readonly", readOnly)
	return nil
}

// prepareGate creates the gate directory 0700 (or accepts an existing root-owned directory,
// not a symlink), sets its mode to 0700 and its ACL to let uid in (none for root).
func (m *Mounter) prepareGate(gate string, uid uint32) error {
	if err := os.Mkdir(gate, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("cannot create %s: %w", gate, err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(gate, &st); err != nil {
		return fmt.Errorf("cannot use %s: %w", gate, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Uid != 0 {
		return fmt.Errorf("cannot use %s: not a root-owned directory", gate)
	}
	if err := unix.Fchmodat(unix.AT_FDCWD, gate, 0o700, 0); err != nil {
		return fmt.Errorf("cannot set the permissions of %s: %w", gate, err)
	}
	if uid == 0 {
		if err := unix.Lremovexattr(gate, aclXattr); err != nil && !errors.Is(err, unix.ENODATA) && !errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("cannot remove the ACL of %s: %w", gate, err)
		}
		return nil
	}
	if err := unix.Lsetxattr(gate, aclXattr, userACL(uid), 0); err != nil {
		return fmt.Errorf("cannot let uid %d reach %s (does the filesystem of the mount base support POSIX ACLs?): %w", uid, gate, err)
	}
	return nil
}

// aclXattr holds a file's access ACL in the kernel's binary format (linux/posix_acl_xattr.h).
const aclXattr = "system.posix_acl_access"

// userACL is the access ACL "user::rwx, user:<uid>:r-x, group::---, mask::r-x, other::---":
// a little-endian version (2), then (tag u16, perm u16, id u32) entries sorted by tag.
func userACL(uid uint32) []byte {
	const (
		tagUserObj  = 0x01
		tagUser     = 0x02
		tagGroupObj = 0x04
		tagMask     = 0x10
		tagOther    = 0x20
		undefinedID = 0xffffffff
	)
	entries := []struct {
		tag, perm uint16
		id        uint32
	}{
		{tagUserObj, 7, undefinedID},
		{tagUser, 5, uid},
		{tagGroupObj, 0, undefinedID},
		{tagMask, 5, undefinedID},
		{tagOther, 0, undefinedID},
	}
	b := binary.LittleEndian.AppendUint32(nil, 2)
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint16(b, e.tag)
		b = binary.LittleEndian.AppendUint16(b, e.perm)
		b = binary.LittleEndian.AppendUint32(b, e.id)
	}
	return b
}

// prepareTarget creates target 0700, or accepts an existing root-owned directory (not a
// symlink) that is not already a mount point.
func (m *Mounter) prepareTarget(target string) error {
	if err := os.Mkdir(target, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("cannot create mount point %s: %w", target, err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(target, &st); err != nil {
		return fmt.Errorf("cannot use mount point %s: %w", target, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Uid != 0 {
		return fmt.Errorf("cannot use mount point %s: not a root-owned directory", target)
	}
	entries, err := m.readMountinfo()
	if err != nil {
		return err
	}
	if e, ok := topmost(entries, target); ok {
		return fmt.Errorf("cannot mount on %s: %s is already mounted there: %w", target, e.Source, api.ErrBusy)
	}
	return nil
}

func (m *Mounter) readMountinfo() ([]Entry, error) { return readMountinfo(m.env) }

func readMountinfo(e env) ([]Entry, error) {
	b, err := os.ReadFile(e.mountinfo)
	if err != nil {
		return nil, fmt.Errorf("cannot read the mount table: %w", err)
	}
	return ParseMountinfo(b)
}

// BusyError is returned by Unmount when the filesystem stays busy: it names who holds it.
type BusyError struct {
	Target  string
	Holders []Holder
}

func (e *BusyError) Error() string {
	msg := fmt.Sprintf("cannot unmount %s: it is busy", e.Target)
	if len(e.Holders) == 0 {
		return msg + " (no process found holding it; a bind mount or the kernel may)"
	}
	parts := make([]string, len(e.Holders))
	for i, h := range e.Holders {
		parts[i] = h.String()
	}
	return msg + ", used by " + strings.Join(parts, ", ")
}

// Unwrap makes errors.Is(err, api.ErrBusy) true.
func (e *BusyError) Unwrap() error { return api.ErrBusy }

// Unmount unmounts target (base/<name>) and removes the empty mount point. When the
// filesystem is busy it retries with backoff; if it stays busy the error is a *BusyError naming
// the processes that hold it (errors.Is(err, api.ErrBusy)). A target that is not mounted is not
// an error. It never unmounts lazily: see Detach.
func (m *Mounter) Unmount(ctx context.Context, target string) error {
	if err := m.checkTarget(target, true); err != nil {
		return err
	}
	delay := m.retryDelay
	for attempt := 0; ; attempt++ {
		err := unix.Unmount(target, unix.UMOUNT_NOFOLLOW)
		switch {
		case err == nil:
			m.logger.Info("unmounted", "target", target)
			m.removeMountPoint(target)
			return nil
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			// Not a mount point (or gone): make sure it really is not mounted.
			entries, rerr := m.readMountinfo()
			if rerr != nil {
				return rerr
			}
			if _, ok := topmost(entries, target); ok {
				return fmt.Errorf("cannot unmount %s: %w", target, err)
			}
			m.removeMountPoint(target)
			return nil
		case errors.Is(err, unix.EBUSY):
			if attempt >= m.retries {
				holders, herr := findHolders(m.env.procRoot, target)
				if herr != nil {
					m.logger.Warn("cannot list the processes holding a mount", "target", target, "error", herr)
				}
				return &BusyError{Target: target, Holders: holders}
			}
		default:
			return fmt.Errorf("cannot unmount %s: %w", target, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cannot unmount %s: %w", target, ctx.Err())
		case <-time.After(delay):
		}
		delay *= 2
	}
}

// Detach is the last resort when a stick was pulled or a holder will not let go: a lazy
// unmount (MNT_DETACH) that hides the mount now and lets the kernel drop it when its last user
// is gone. It logs the holders, because the mapping stays busy until they exit.
func (m *Mounter) Detach(target string) error {
	if err := m.checkTarget(target, true); err != nil {
		return err
	}
	holders, _ := findHolders(m.env.procRoot, target)
	if err := unix.Unmount(target, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil {
		if errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("cannot detach %s: %w", target, ErrNotMounted)
		}
		return fmt.Errorf("cannot detach %s: %w", target, err)
	}
	m.logger.Warn("lazily unmounted a busy filesystem", "target", target, "holders", fmt.Sprint(holders))
	m.removeMountPoint(target)
	return nil
}

// removeMountPoint removes the (now empty) mount point directory and its gate. A non-empty
// directory is left alone: something wrote into it while it was not mounted, and that is not
// ours to delete.
func (m *Mounter) removeMountPoint(target string) {
	if err := unix.Rmdir(target); err != nil && !errors.Is(err, syscall.ENOENT) {
		m.logger.Warn("cannot remove mount point", "target", target, "error", err)
		return
	}
	if gate := filepath.Dir(target); gate != m.base {
		if err := unix.Rmdir(gate); err != nil && !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ENOTEMPTY) {
			m.logger.Warn("cannot remove mount point", "target", gate, "error", err)
		}
	}
}
