package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/plugvault/plugvault/service/api"
)

// diskInfo is what the CLI shows before enroll destroys a disk. It is read unprivileged from
// sysfs and the udev database; it informs the user, and plugvaultd does its own checks.
type diskInfo struct {
	Name       string // kernel name, e.g. sdb
	Vendor     string
	Model      string
	Serial     string
	Bus        string // ID_BUS, e.g. usb
	Removable  bool
	Size       uint64 // bytes
	FSType     string // on the whole disk, if any
	Label      string
	Partition  bool // Name is a partition, not a whole disk
	Partitions []partInfo
}

type partInfo struct {
	Name   string
	Size   uint64
	FSType string
	Label  string
}

// readDiskInfo reads /sys/class/block/NAME and /run/udev/data/bMAJ:MIN.
func (a *app) readDiskInfo(name string) (diskInfo, error) {
	dir := filepath.Join(a.sysRoot, "class", "block", name)
	if _, err := os.Stat(dir); err != nil {
		return diskInfo{}, fmt.Errorf("cannot find %s in %s: %w", name, filepath.Join(a.sysRoot, "class", "block"), err)
	}
	info := diskInfo{Name: name}
	if _, err := os.Stat(filepath.Join(dir, "partition")); err == nil {
		info.Partition = true
	}
	info.Size = readSectors(dir)
	info.Removable = readSysfs(dir, "removable") == "1"
	info.Vendor = readSysfs(dir, "device/vendor")
	info.Model = readSysfs(dir, "device/model")
	props := a.udevProps(dir)
	if v := props["ID_VENDOR"]; v != "" && info.Vendor == "" {
		info.Vendor = v
	}
	if v := props["ID_MODEL"]; v != "" && info.Model == "" {
		info.Model = v
	}
	info.Serial = props["ID_SERIAL_SHORT"]
	info.Bus = props["ID_BUS"]
	info.FSType = props["ID_FS_TYPE"]
	info.Label = props["ID_FS_LABEL"]
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), name) {
			continue
		}
		pdir := filepath.Join(dir, e.Name())
		if _, err := os.Stat(filepath.Join(pdir, "partition")); err != nil {
			continue
		}
		pp := a.udevProps(pdir)
		info.Partitions = append(info.Partitions, partInfo{Name: e.Name(), Size: readSectors(pdir), FSType: pp["ID_FS_TYPE"], Label: pp["ID_FS_LABEL"]})
	}
	return info, nil
}

func readSysfs(dir, file string) string {
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// readSectors reads the size attribute, which counts 512-byte sectors whatever the device's
// block size.
func readSectors(dir string) uint64 {
	n, _ := strconv.ParseUint(readSysfs(dir, "size"), 10, 64)
	return n * 512
}

// udevProps reads the udev database entry of the device in sysfs directory dir (E: lines).
func (a *app) udevProps(dir string) map[string]string {
	props := map[string]string{}
	dev := readSysfs(dir, "dev")
	if dev == "" {
		return props
	}
	f, err := os.Open(filepath.Join(a.udevDataDir, "b"+dev))
	if err != nil {
		return props
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if kv, ok := strings.CutPrefix(sc.Text(), "E:"); ok {
			if k, v, ok := strings.Cut(kv, "="); ok {
				props[k] = v
			}
		}
	}
	return props
}

// describe prints the disk for the confirmation: what will be destroyed.
func (d diskInfo) describe() string {
	var b strings.Builder
	what := strings.TrimSpace(d.Vendor + " " + d.Model)
	if what == "" {
		what = "unknown model"
	}
	fmt.Fprintf(&b, "  %s", what)
	if d.Serial != "" {
		fmt.Fprintf(&b, ", serial %s", d.Serial)
	}
	fmt.Fprintf(&b, ", %s", api.FormatBytes(d.Size))
	if d.Bus != "" {
		fmt.Fprintf(&b, ", %s", strings.ToUpper(d.Bus))
	}
	if d.Removable {
		b.WriteString(", removable")
	}
	b.WriteString("\n")
	if d.FSType != "" {
		fmt.Fprintf(&b, "  whole disk: %s%s\n", d.FSType, quoteLabel(d.Label))
	}
	if len(d.Partitions) == 0 && d.FSType == "" {
		b.WriteString("  no partitions and no filesystem found\n")
	}
	for _, p := range d.Partitions {
		fs := p.FSType
		if fs == "" {
			fs = "unknown content"
		}
		fmt.Fprintf(&b, "  %-10s %10s  %s%s\n", p.Name, api.FormatBytes(p.Size), fs, quoteLabel(p.Label))
	}
	return b.String()
}

func quoteLabel(l string) string {
	if l == "" {
		return ""
	}
	return fmt.Sprintf(" labelled %q", l)
}

// canonicalDevice resolves a device argument (/dev/sdb, /dev/disk/by-id/…) to the device node
// path under devRoot, as plugvaultd wants it.
func (a *app) canonicalDevice(dev string) (string, error) {
	if dev == "" {
		return "", usagef("name the device, for example /dev/sdb")
	}
	p, err := filepath.EvalSymlinks(dev)
	if err != nil {
		return "", fmt.Errorf("cannot find device %s: %w", dev, api.ErrNotFound)
	}
	if p, err = filepath.Abs(p); err != nil {
		return "", fmt.Errorf("cannot resolve %s: %w", dev, err)
	}
	if filepath.Dir(p) != a.devRoot {
		return "", usagef("%s is not a device node in %s", dev, a.devRoot)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return "", fmt.Errorf("cannot find device %s: %w", dev, api.ErrNotFound)
	}
	if a.devRoot == "/dev" && fi.Mode()&os.ModeDevice == 0 {
		return "", usagef("%s is not a block device", dev)
	}
	return p, nil
}
