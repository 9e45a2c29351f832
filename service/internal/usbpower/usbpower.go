package usbpower

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/mount"
)

// Errors callers may branch on.
var (
	// ErrNotSupported: the disk is neither SCSI-attached nor on USB; nothing was done.
	ErrNotSupported = errors.New("power off is not supported for this disk")
	// ErrNoPowerControl: the disk was detached (SCSI device deleted) and is safe to remove,
	// but the kernel offers no way to switch its USB port off.
	ErrNoPowerControl = errors.New("the disk was detached but its USB port cannot be switched off")
)

// InUseError says why a disk was not powered off: something still uses it or one of its
// partitions. It wraps api.ErrBusy.
type InUseError struct {
	Disk string   // "sdb"
	Uses []string // "sdb2 is mounted at /media/alice/STICK", "sdb1 is still in use by dm-3"
}

func (e *InUseError) Error() string {
	return fmt.Sprintf("cannot power off %s: %s", e.Disk, strings.Join(e.Uses, ", "))
}

// Unwrap makes errors.Is(err, api.ErrBusy) true.
func (e *InUseError) Unwrap() error { return api.ErrBusy }

// InUse lists what uses the disk (so a caller can word it without importing this package).
func (e *InUseError) InUse() []string { return e.Uses }

// Roots are the filesystem roots PowerOff reads and writes.
type Roots struct {
	Sys       string // "/sys"
	Dev       string // "/dev"
	Mountinfo string // "/proc/self/mountinfo"
}

// DefaultRoots are the real roots.
var DefaultRoots = Roots{Sys: "/sys", Dev: "/dev", Mountinfo: "/proc/self/mountinfo"}

// PowerOff syncs, detaches and powers off the disk whose udev DEVPATH is devPath (the whole
// disk, e.g. /devices/.../block/sdb). See the package comment for the steps.
func PowerOff(ctx context.Context, devPath string) error {
	return PowerOffAt(ctx, DefaultRoots, devPath)
}

// PowerOffAt is PowerOff below other roots.
func PowerOffAt(ctx context.Context, roots Roots, devPath string) error {
	if !strings.HasPrefix(devPath, "/devices/") || filepath.Clean(devPath) != devPath || strings.Contains(devPath, "..") {
		return fmt.Errorf("cannot power off %q: not a sysfs device path", devPath)
	}
	dir := filepath.Join(roots.Sys, devPath)
	uevent, err := readUevent(dir)
	if err != nil {
		return fmt.Errorf("cannot power off %s: %w", devPath, err)
	}
	if uevent["DEVTYPE"] != "disk" {
		return fmt.Errorf("cannot power off %s: it is a %q, not a whole disk", devPath, uevent["DEVTYPE"])
	}
	name := uevent["DEVNAME"]
	if name == "" || strings.Contains(name, "..") || strings.HasPrefix(name, "/") {
		return fmt.Errorf("cannot power off %s: bad DEVNAME %q", devPath, name)
	}

	parts, err := partitions(dir)
	if err != nil {
		return fmt.Errorf("cannot power off %s: %w", devPath, err)
	}
	// A device-mapper mapping (our LUKS mapping, LVM, ...) on the disk or a partition would
	// lose data if the disk went away under it.
	for _, d := range append([]string{dir}, parts...) {
		if h := holders(d); len(h) > 0 {
			return &InUseError{Disk: name, Uses: []string{fmt.Sprintf("%s is still in use by %s", filepath.Base(d), strings.Join(h, ", "))}}
		}
	}

	// Find both targets before changing anything.
	deleteAttr := filepath.Join(dir, "device", "delete")
	hasSCSI := exists(deleteAttr)
	usbDev, err := usbDeviceOf(roots.Sys, dir)
	if err != nil {
		return fmt.Errorf("cannot power off %s: %w", devPath, err)
	}
	if !hasSCSI && usbDev == "" {
		return fmt.Errorf("cannot power off %s: %w", devPath, ErrNotSupported)
	}
	// A filesystem mounted straight from the disk or another partition (a second
	// partition of the stick that the desktop mounted, say) would lose data as well.
	if m, err := mountedFrom(roots, append([]string{dir}, parts...)); err != nil {
		return fmt.Errorf("cannot power off %s: %w", devPath, err)
	} else if len(m) > 0 {
		return &InUseError{Disk: name, Uses: m}
	}

	// Each partition has its own block device cache; flush them and then the disk.
	for _, p := range parts {
		u, err := readUevent(p)
		if err != nil {
			return fmt.Errorf("cannot power off %s: %w", devPath, err)
		}
		if pn := u["DEVNAME"]; pn != "" && !strings.Contains(pn, "..") && !strings.HasPrefix(pn, "/") {
			if err := syncDevice(filepath.Join(roots.Dev, pn)); err != nil {
				return fmt.Errorf("cannot power off %s: %w", devPath, err)
			}
		}
	}
	if err := syncDevice(filepath.Join(roots.Dev, name)); err != nil {
		return fmt.Errorf("cannot power off %s: %w", devPath, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if hasSCSI {
		if err := writeAttr(deleteAttr); err != nil {
			return fmt.Errorf("cannot power off %s: cannot delete the SCSI device: %w", devPath, err)
		}
	}
	if usbDev == "" {
		return nil // detached; not on USB, so there is no port to switch off
	}
	switch {
	case exists(filepath.Join(usbDev, "remove")):
		err = writeAttr(filepath.Join(usbDev, "remove"))
	case exists(filepath.Join(usbDev, "port", "disable")):
		err = writeAttr(filepath.Join(usbDev, "port", "disable"))
	default:
		return fmt.Errorf("cannot power off %s: %w", devPath, ErrNoPowerControl)
	}
	if err != nil {
		return fmt.Errorf("cannot power off %s: cannot remove USB device %s: %w", devPath, filepath.Base(usbDev), err)
	}
	return nil
}

// usbDeviceOf walks up from a disk's sysfs directory to the nearest ancestor that is a USB
// device (subsystem "usb", DEVTYPE=usb_device; interfaces are DEVTYPE=usb_interface). It
// returns "" if the disk is not on USB.
func usbDeviceOf(sysRoot, dir string) (string, error) {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", err
	}
	devices, err := filepath.EvalSymlinks(filepath.Join(sysRoot, "devices"))
	if err != nil {
		return "", err
	}
	for p := filepath.Dir(real); strings.HasPrefix(p, devices+"/"); p = filepath.Dir(p) {
		sub, err := os.Readlink(filepath.Join(p, "subsystem"))
		if err != nil || filepath.Base(sub) != "usb" {
			continue
		}
		u, err := readUevent(p)
		if err != nil {
			return "", err
		}
		if u["DEVTYPE"] == "usb_device" {
			return p, nil
		}
	}
	return "", nil
}

func readUevent(dir string) (map[string]string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "uevent"))
	if err != nil {
		return nil, err
	}
	m := make(map[string]string)
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m, nil
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// syncDevice flushes the disk's block device: its page cache and the drive's write cache.
func syncDevice(node string) error {
	fd, err := unix.Open(node, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("cannot open %s to sync it: %w", node, err)
	}
	defer unix.Close(fd)
	if err := unix.Fsync(fd); err != nil {
		return fmt.Errorf("cannot sync %s: %w", node, err)
	}
	return nil
}

// writeAttr writes "1" to a sysfs attribute (never following a symlink at the last element).
func writeAttr(p string) error {
	fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	_, werr := unix.Write(fd, []byte("1"))
	cerr := unix.Close(fd)
	if werr != nil {
		return werr
	}
	return cerr
}

// partitions returns the sysfs directories of the disk's partitions (subdirectories whose
// uevent says DEVTYPE=partition).
func partitions(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var parts []string
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if u, err := readUevent(p); err == nil && u["DEVTYPE"] == "partition" {
			parts = append(parts, p)
		}
	}
	return parts, nil
}

// mountedFrom lists the mounts of the given disk and partition directories (sysfs), as
// "sdb2 is mounted at /media/x". A mount is matched by the device number of its superblock
// (major:minor in mountinfo) or by its source being the device node: btrfs reports an
// anonymous device number there, never the block device's.
func mountedFrom(roots Roots, dirs []string) ([]string, error) {
	b, err := os.ReadFile(roots.Mountinfo)
	if err != nil {
		return nil, fmt.Errorf("cannot read the mount table: %w", err)
	}
	entries, err := mount.ParseMountinfo(b)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, d := range dirs {
		u, err := readUevent(d)
		if err != nil {
			return nil, err
		}
		name := u["DEVNAME"]
		maj, err1 := strconv.ParseUint(u["MAJOR"], 10, 32)
		min, err2 := strconv.ParseUint(u["MINOR"], 10, 32)
		if name == "" || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("cannot tell which device %s is", filepath.Base(d))
		}
		for _, e := range entries {
			if uint64(e.Major) == maj && uint64(e.Minor) == min || e.Source == "/dev/"+name {
				out = append(out, fmt.Sprintf("%s is mounted at %s", name, e.MountPoint))
			}
		}
	}
	return out, nil
}

// holders lists the block devices stacked on a disk or partition (sysfs "holders").
func holders(dir string) []string {
	ents, err := os.ReadDir(filepath.Join(dir, "holders"))
	if err != nil {
		return nil
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	return names
}
