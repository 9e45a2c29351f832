package mount

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DeviceNumber returns the device number (st_rdev) of a block device node; symlinks such as
// /dev/mapper/<name> -> ../dm-0 are followed.
func DeviceNumber(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("cannot use %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return 0, fmt.Errorf("cannot use %s: not a block device", path)
	}
	return st.Rdev, nil
}

// Guard returns nil only if target is, right now, the root of a mount of the block device
// dev (see DeviceNumber). The backup engine calls it before every batch of writes, so nothing
// is ever written into an empty mount point on the internal disk after a stick is pulled.
// The caller needs search permission on the base (0711) and the gate (see Mount) and read
// permission on the root
// directory of the mounted filesystem, which it opens.
func Guard(target string, dev uint64) error { return guard(defaultEnv, target, dev) }

func guard(e env, target string, dev uint64) error {
	if !filepath.IsAbs(target) || filepath.Clean(target) != target {
		return fmt.Errorf("cannot check %q: not an absolute clean path", target)
	}
	entries, err := readMountinfo(e)
	if err != nil {
		return err
	}
	entry, ok := topmost(entries, target)
	if !ok {
		return fmt.Errorf("%s is %w", target, ErrNotMounted)
	}
	if entry.Root != "/" {
		return fmt.Errorf("%s is a mount of %s inside its filesystem, not of its root", target, entry.Root)
	}
	// What the path resolves to right now: the open directory pins the filesystem for the
	// checks below.
	fd, err := unix.Open(target, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("cannot check %s: %w", target, err)
	}
	defer unix.Close(fd)
	if entry.FSType == "btrfs" {
		devs, err := btrfsDevices(e.sysRoot, fd)
		if err != nil {
			return fmt.Errorf("cannot check %s: %w", target, err)
		}
		if len(devs) != 1 || devs[0] != dev {
			return fmt.Errorf("%s is a btrfs on device(s) %s, not on %s", target, devList(devs), devString(dev))
		}
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("cannot check %s: %w", target, err)
	}
	if st.Dev != entry.Dev() {
		return fmt.Errorf("%s resolves to device %s, but the mount table says %s", target, devString(st.Dev), devString(entry.Dev()))
	}
	if entry.Dev() != dev {
		return fmt.Errorf("%s is a mount of %s (%s), not of %s", target, entry.Source, devString(entry.Dev()), devString(dev))
	}
	return nil
}

func devString(d uint64) string { return fmt.Sprintf("%d:%d", unix.Major(d), unix.Minor(d)) }

func devList(ds []uint64) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = devString(d)
	}
	return "[" + strings.Join(s, " ") + "]"
}

// btrfsFSInfoArgs is struct btrfs_ioctl_fs_info_args (linux/btrfs.h), 1024 bytes.
type btrfsFSInfoArgs struct {
	MaxID      uint64
	NumDevices uint64
	FSID       [16]byte
	_          [1024 - 32]byte
}

// btrfsIocFSInfo is _IOR(BTRFS_IOCTL_MAGIC=0x94, 31, struct btrfs_ioctl_fs_info_args).
const btrfsIocFSInfo = 2<<30 | 1024<<16 | 0x94<<8 | 31

// btrfsDevices returns the device numbers of the btrfs that fd lives on: its fsid from
// BTRFS_IOC_FS_INFO, then sysRoot/fs/btrfs/<fsid>/devices/<name>/dev.
func btrfsDevices(sysRoot string, fd int) ([]uint64, error) {
	var args btrfsFSInfoArgs
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), btrfsIocFSInfo, uintptr(unsafe.Pointer(&args))); errno != 0 {
		return nil, fmt.Errorf("cannot read btrfs filesystem info: %w", errno)
	}
	fsid := formatUUID(args.FSID)
	dir := filepath.Join(sysRoot, "fs", "btrfs", fsid, "devices")
	devs, err := readBtrfsDevices(dir)
	if err != nil {
		return nil, err
	}
	if uint64(len(devs)) != args.NumDevices {
		return nil, fmt.Errorf("btrfs %s lists %d devices in sysfs but has %d", fsid, len(devs), args.NumDevices)
	}
	return devs, nil
}

// readBtrfsDevices reads the "dev" attribute (major:minor) of every entry of a btrfs devices
// directory in sysfs.
func readBtrfsDevices(dir string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("cannot list btrfs devices: %w", err)
	}
	var devs []uint64
	for _, ent := range ents {
		b, err := os.ReadFile(filepath.Join(dir, ent.Name(), "dev"))
		if err != nil {
			return nil, fmt.Errorf("cannot read btrfs device %s: %w", ent.Name(), err)
		}
		d, err := parseDevNumber(strings.TrimSpace(string(b)))
		if err != nil {
			return nil, fmt.Errorf("cannot read btrfs device %s: %w", ent.Name(), err)
		}
		devs = append(devs, d)
	}
	return devs, nil
}

func parseDevNumber(s string) (uint64, error) {
	maj, min, ok := strings.Cut(s, ":")
	ma, err1 := strconv.ParseUint(maj, 10, 32)
	mi, err2 := strconv.ParseUint(min, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad device number %q", s)
	}
	return unix.Mkdev(uint32(ma), uint32(mi)), nil
}

func formatUUID(b [16]byte) string {
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// Info describes a mount found by Mounts.
type Info struct {
	Target string
	Source string
	FSType string
	// Dev is the backing block device's number. For btrfs it is read from the filesystem's
	// device list (single-device filesystems); if that fails it is the anonymous number from
	// the mount table.
	Dev uint64
}

// Mounts lists the mounts at or below base, in mount order, for reconciliation after a
// restart.
func Mounts(base string) ([]Info, error) { return mounts(defaultEnv, base) }

func mounts(e env, base string) ([]Info, error) {
	if !filepath.IsAbs(base) || filepath.Clean(base) != base {
		return nil, fmt.Errorf("cannot list mounts below %q: not an absolute clean path", base)
	}
	entries, err := readMountinfo(e)
	if err != nil {
		return nil, err
	}
	var out []Info
	for _, en := range entries {
		if en.MountPoint != base && !strings.HasPrefix(en.MountPoint, base+"/") {
			continue
		}
		info := Info{Target: en.MountPoint, Source: en.Source, FSType: en.FSType, Dev: en.Dev()}
		if en.FSType == "btrfs" {
			if d, err := btrfsDeviceOf(e, en.MountPoint); err == nil {
				info.Dev = d
			}
		}
		out = append(out, info)
	}
	return out, nil
}

func btrfsDeviceOf(e env, target string) (uint64, error) {
	fd, err := unix.Open(target, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	devs, err := btrfsDevices(e.sysRoot, fd)
	if err != nil {
		return 0, err
	}
	if len(devs) != 1 {
		return 0, errors.New("not a single-device btrfs")
	}
	return devs[0], nil
}
