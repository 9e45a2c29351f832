package enroll

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/mount"
	"github.com/plugvault/plugvault/service/internal/udev"
)

// System is where the machine's view of its block devices is read from. The zero value is
// filled with the real paths by New; tests point it at a fake tree.
type System struct {
	SysRoot     string // "/sys"
	UdevDataDir string // "/run/udev/data"
	MountInfo   string // "/proc/self/mountinfo"
	Swaps       string // "/proc/swaps"
	// DevNumber returns the device number of a block device node (st_rdev); it fails for
	// anything that is not a block device.
	DevNumber func(path string) (devNum, error)
}

// devNum is a block device number.
type devNum struct{ Major, Minor uint32 }

func (d devNum) String() string { return fmt.Sprintf("%d:%d", d.Major, d.Minor) }

func parseDevNum(s string) (devNum, bool) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return devNum{}, false
	}
	ma, err1 := strconv.ParseUint(a, 10, 32)
	mi, err2 := strconv.ParseUint(b, 10, 32)
	if err1 != nil || err2 != nil {
		return devNum{}, false
	}
	return devNum{uint32(ma), uint32(mi)}, true
}

// statDevNum is the real DevNumber.
func statDevNum(path string) (devNum, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return devNum{}, fmt.Errorf("cannot find %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return devNum{}, fmt.Errorf("%s is not a block device: %w", path, api.ErrInvalidArgument)
	}
	return devNum{unix.Major(st.Rdev), unix.Minor(st.Rdev)}, nil
}

// blockDev is a block device as sysfs shows it when it was checked.
type blockDev struct {
	Path      string // the device node the caller named
	Name      string // kernel name (sdb, sdb1)
	Num       devNum // the device number Path had
	SysDir    string // resolved sysfs directory
	DiskDir   string // sysfs directory of the whole disk (SysDir for a disk)
	Partition bool
	// DiskSeq is the whole disk's sequence number (sysfs diskseq, Linux 5.15 and later): the
	// kernel never gives it to another disk, even one that gets the same name and device
	// number after the first was pulled. "" when the kernel has none.
	DiskSeq string
}

// sysDir resolves /sys/dev/block/MAJ:MIN to the device's sysfs directory.
func (s System) sysDir(n devNum) (string, error) {
	p, err := filepath.EvalSymlinks(filepath.Join(s.SysRoot, "dev", "block", n.String()))
	if err != nil {
		return "", fmt.Errorf("cannot find block device %s in sysfs: %w", n, err)
	}
	return p, nil
}

func readAttr(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func isPartition(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "partition"))
	return err == nil
}

// udevProps reads the udev database entry of the device whose sysfs directory is dir (none:
// no properties).
func (s System) udevProps(dir string) map[string]string {
	data, err := os.ReadFile(filepath.Join(s.UdevDataDir, "b"+readAttr(dir, "dev")))
	if err != nil {
		return map[string]string{}
	}
	props, err := udev.ParseDatabase(data)
	if err != nil {
		return map[string]string{}
	}
	return props
}

// disksUnder returns the sysfs directories of the whole disks that device n is built on:
// itself for a disk, its disk for a partition, and the disks of its slaves for device-mapper,
// LVM, RAID and loop-free stacks.
func (s System) disksUnder(n devNum, depth int) []string {
	dir, err := s.sysDir(n)
	if err != nil || depth > 16 {
		return nil
	}
	slaves, _ := os.ReadDir(filepath.Join(dir, "slaves"))
	if len(slaves) > 0 {
		var out []string
		for _, sl := range slaves {
			if sn, ok := parseDevNum(readAttr(filepath.Join(dir, "slaves", sl.Name()), "dev")); ok {
				out = append(out, s.disksUnder(sn, depth+1)...)
			}
		}
		return out
	}
	if isPartition(dir) {
		return []string{filepath.Dir(dir)}
	}
	return []string{dir}
}

// mountEntry is one line of mountinfo.
type mountEntry struct {
	Dev    devNum
	Target string
	Source string
}

func (s System) mounts() ([]mountEntry, error) {
	data, err := os.ReadFile(s.MountInfo)
	if err != nil {
		return nil, fmt.Errorf("cannot read the mount table: %w", err)
	}
	entries, err := mount.ParseMountinfo(data)
	if err != nil {
		return nil, fmt.Errorf("cannot read the mount table: %w", err)
	}
	out := make([]mountEntry, len(entries))
	for i, e := range entries {
		out[i] = mountEntry{Dev: devNum{e.Major, e.Minor}, Target: e.MountPoint, Source: e.Source}
	}
	return out, nil
}

// unescapeMount undoes the octal escapes (\040 for a space) that /proc/swaps shares with
// mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// checkDevice refuses device unless it is a removable USB disk (or, with allowPartition, a
// partition of one) that is not mounted, not in use and does not hold the running system.
// Refusals of the kind of device wrap api.ErrInvalidArgument; "in use" wraps api.ErrBusy.
func (s System) checkDevice(device string, allowPartition bool) (blockDev, error) {
	if !filepath.IsAbs(device) || filepath.Clean(device) != device || !strings.HasPrefix(device, "/dev/") {
		return blockDev{}, fmt.Errorf("%q is not a canonical device path under /dev: %w", device, api.ErrInvalidArgument)
	}
	n, err := s.DevNumber(device)
	if err != nil {
		return blockDev{}, err
	}
	dir, err := s.sysDir(n)
	if err != nil {
		return blockDev{}, err
	}
	d := blockDev{Path: device, Name: filepath.Base(dir), Num: n, SysDir: dir, DiskDir: dir, Partition: isPartition(dir)}
	if d.Partition {
		if !allowPartition {
			return d, fmt.Errorf("%s is a partition; name the whole disk: %w", device, api.ErrInvalidArgument)
		}
		d.DiskDir = filepath.Dir(dir)
	}
	d.DiskSeq = readAttr(d.DiskDir, "diskseq")
	if readAttr(d.DiskDir, "removable") != "1" && s.udevProps(d.DiskDir)["ID_BUS"] != "usb" {
		return d, fmt.Errorf("%s is not a removable USB disk: %w", device, api.ErrInvalidArgument)
	}

	// Every block device on this disk: the disk and its partitions.
	own := map[devNum]string{}
	addOwn := func(dir string) {
		if n, ok := parseDevNum(readAttr(dir, "dev")); ok {
			own[n] = filepath.Base(dir)
		}
	}
	addOwn(d.DiskDir)
	entries, _ := os.ReadDir(d.DiskDir)
	for _, e := range entries {
		if p := filepath.Join(d.DiskDir, e.Name()); isPartition(p) {
			addOwn(p)
		}
	}

	mounts, err := s.mounts()
	if err != nil {
		return d, err
	}
	// The running system first, for a precise message: the disks under / (through
	// device-mapper and friends), found by device number or, for btrfs and other filesystems
	// with anonymous device numbers, by the mount source.
	for _, m := range mounts {
		if m.Target != "/" {
			continue
		}
		nums := []devNum{m.Dev}
		if strings.HasPrefix(m.Source, "/dev/") {
			if sn, err := s.DevNumber(m.Source); err == nil {
				nums = append(nums, sn)
			}
		}
		for _, num := range nums {
			for _, disk := range s.disksUnder(num, 0) {
				if disk == d.DiskDir {
					return d, fmt.Errorf("%s holds the running system: %w", device, api.ErrInvalidArgument)
				}
			}
		}
	}
	for _, m := range mounts {
		if name, ok := own[m.Dev]; ok {
			return d, fmt.Errorf("%s is in use: %s is mounted on %s: %w", device, name, m.Target, api.ErrBusy)
		}
		if strings.HasPrefix(m.Source, "/dev/") {
			if sn, err := s.DevNumber(m.Source); err == nil {
				if name, ok := own[sn]; ok {
					return d, fmt.Errorf("%s is in use: %s is mounted on %s: %w", device, name, m.Target, api.ErrBusy)
				}
			}
		}
	}
	for num, name := range own {
		dir, err := s.sysDir(num)
		if err != nil {
			continue
		}
		holders, err := os.ReadDir(filepath.Join(dir, "holders"))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return d, fmt.Errorf("cannot check whether %s is in use: %w", name, err)
		}
		if len(holders) > 0 {
			return d, fmt.Errorf("%s is in use: %s is held by %s (an open LUKS mapping, LVM or RAID): %w", device, name, holders[0].Name(), api.ErrBusy)
		}
	}
	if err := s.checkSwap(device, own); err != nil {
		return d, err
	}
	return d, nil
}

// checkSwap refuses a disk with an active swap partition.
func (s System) checkSwap(device string, own map[devNum]string) error {
	f, err := os.Open(s.Swaps)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // no swap support at all
		}
		return fmt.Errorf("cannot read the swap table: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for first := true; sc.Scan(); first = false {
		fields := strings.Fields(sc.Text())
		if first || len(fields) < 2 || !strings.HasPrefix(fields[0], "/dev/") {
			continue // header line, or a swap file (its filesystem is checked as a mount)
		}
		if sn, err := s.DevNumber(unescapeMount(fields[0])); err == nil {
			if name, ok := own[sn]; ok {
				return fmt.Errorf("%s is in use: %s is active swap: %w", device, name, api.ErrBusy)
			}
		}
	}
	return sc.Err()
}

// same refuses when the device that d.Path names now is not the one that was checked: its
// device number, its place in sysfs or its disk sequence number changed (a stick was pulled
// and another one took its name). Wraps api.ErrNotPresent.
//
// Why the path is checked again rather than the device held open: an exclusive open
// (O_EXCL) would make cryptsetup's own exclusive open and device-mapper's claim fail, and a
// plain open buys nothing, because the cryptsetup CLI opens a path (a /proc/self/fd link
// reopens the device node, that is the device number, which the new stick may have taken).
// So every destructive step is preceded by this check, and a changed device stops the
// enrollment before anything else is written to it.
func (s System) same(d blockDev) error {
	changed := func(what string) error {
		return fmt.Errorf("%s changed since it was checked (%s); was the drive replaced? Nothing more was written to it: %w", d.Path, what, api.ErrNotPresent)
	}
	n, err := s.DevNumber(d.Path)
	if err != nil {
		return changed(err.Error())
	}
	if n != d.Num {
		return changed(fmt.Sprintf("device number %s, was %s", n, d.Num))
	}
	dir, err := s.sysDir(n)
	if err != nil || dir != d.SysDir {
		return changed("it is another device in sysfs")
	}
	if seq := readAttr(d.DiskDir, "diskseq"); seq != d.DiskSeq {
		return changed(fmt.Sprintf("disk sequence number %q, was %q", seq, d.DiskSeq))
	}
	return nil
}

// recheck runs the whole check of d again (still not mounted, not in use, not the system
// disk) and refuses unless it finds the very device that was checked (see same).
func (s System) recheck(d blockDev) error {
	if _, err := s.checkDevice(d.Path, d.Partition); err != nil {
		return err
	}
	return s.same(d)
}
