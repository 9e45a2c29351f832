package ui

import (
	"bufio"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// usbDisk is a whole USB disk as sysfs and the udev database describe it to any user; the
// daemon checks everything again before it formats or adopts anything.
type usbDisk struct {
	Dev    string // /dev/sdX
	Vendor string
	Model  string
	Serial string
	Size   uint64 // bytes
	Parts  []diskPart
	FSType string // what is on the whole disk (no partition table), e.g. crypto_LUKS
	Label  string
}

// diskPart is a partition of a usbDisk.
type diskPart struct {
	Dev    string
	Size   uint64
	FSType string
	Label  string
}

// listUSBDisks lists the whole disks under sysRoot (/sys/class/block) that udev (udevRoot,
// /run/udev/data) says are on the USB bus, with their partitions, sorted by device name.
func listUSBDisks(sysRoot, udevRoot string) []usbDisk {
	entries, err := os.ReadDir(sysRoot)
	if err != nil {
		return nil
	}
	var disks []usbDisk
	for _, e := range entries {
		name := e.Name()
		dir := filepath.Join(sysRoot, name)
		if exists(filepath.Join(dir, "partition")) {
			continue
		}
		props := udevProps(udevRoot, dir)
		if props["ID_BUS"] != "usb" || props["DEVTYPE"] == "partition" {
			continue
		}
		d := usbDisk{Dev: "/dev/" + name, Vendor: props["ID_VENDOR"], Model: props["ID_MODEL"], Serial: props["ID_SERIAL_SHORT"],
			Size: sectors(dir), FSType: props["ID_FS_TYPE"], Label: props["ID_FS_LABEL"]}
		d.Vendor = strings.ReplaceAll(d.Vendor, "_", " ")
		d.Model = strings.ReplaceAll(d.Model, "_", " ")
		parts, _ := os.ReadDir(dir)
		for _, p := range parts {
			pdir := filepath.Join(dir, p.Name())
			if !strings.HasPrefix(p.Name(), name) || !exists(filepath.Join(pdir, "partition")) {
				continue
			}
			pp := udevProps(udevRoot, pdir)
			d.Parts = append(d.Parts, diskPart{Dev: "/dev/" + p.Name(), Size: sectors(pdir), FSType: pp["ID_FS_TYPE"], Label: pp["ID_FS_LABEL"]})
		}
		sort.Slice(d.Parts, func(i, j int) bool { return d.Parts[i].Dev < d.Parts[j].Dev })
		disks = append(disks, d)
	}
	sort.Slice(disks, func(i, j int) bool { return disks[i].Dev < disks[j].Dev })
	return disks
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// sectors reads a block device's size (sysfs counts 512-byte sectors).
func sectors(dir string) uint64 {
	b, err := os.ReadFile(filepath.Join(dir, "size"))
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return n * 512
}

// udevProps reads the device's uevent (MAJOR, MINOR, DEVTYPE) and its udev database entry
// (E:KEY=VALUE lines of /run/udev/data/bMAJOR:MINOR).
func udevProps(udevRoot, dir string) map[string]string {
	props := map[string]string{}
	read := func(path, prefix string) {
		f, err := os.Open(path)
		if err != nil {
			return
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line, ok := strings.CutPrefix(sc.Text(), prefix)
			if !ok {
				continue
			}
			if k, v, ok := strings.Cut(line, "="); ok {
				props[k] = v
			}
		}
	}
	read(filepath.Join(dir, "uevent"), "")
	if props["MAJOR"] != "" {
		read(filepath.Join(udevRoot, "b"+props["MAJOR"]+":"+props["MINOR"]), "E:")
	}
	return props
}

// adoptTarget is the device a hand-prepared drive is adopted from: its LUKS partition, or the
// whole disk.
func (d usbDisk) adoptTarget() string {
	for _, p := range d.Parts {
		if p.FSType == "crypto_LUKS" {
			return p.Dev
		}
	}
	return d.Dev
}
