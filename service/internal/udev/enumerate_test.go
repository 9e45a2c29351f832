package udev

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/plugvault/plugvault/service/api/apitest"
)

// fakeTree builds a sysfs and udev database tree like a machine with a USB stick (sdb with one
// partition, both processed by udevd), a loop device udevd has not processed yet, and a
// /sys/class/block entry whose device vanished.
func fakeTree(t *testing.T) (sysRoot, dbDir string) {
	t.Helper()
	root := t.TempDir()
	sysRoot = filepath.Join(root, "sys")
	dbDir = filepath.Join(root, "run", "udev", "data")
	write := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, name string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, name); err != nil {
			t.Fatal(err)
		}
	}
	usb := "devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb"
	write(filepath.Join(sysRoot, usb, "uevent"), "MAJOR=8\nMINOR=16\nDEVNAME=sdb\nDEVTYPE=disk\nDISKSEQ=27\n")
	write(filepath.Join(sysRoot, usb, "sdb1", "uevent"), "MAJOR=8\nMINOR=17\nDEVNAME=sdb1\nDEVTYPE=partition\nPARTN=1\n")
	write(filepath.Join(sysRoot, "devices/virtual/block/loop0/uevent"), "MAJOR=7\nMINOR=0\nDEVNAME=loop0\nDEVTYPE=disk\n")
	link("../../"+usb, filepath.Join(sysRoot, "class/block/sdb"))
	link("../../"+usb+"/sdb1", filepath.Join(sysRoot, "class/block/sdb1"))
	link("../../devices/virtual/block/loop0", filepath.Join(sysRoot, "class/block/loop0"))
	link("../../devices/virtual/block/gone", filepath.Join(sysRoot, "class/block/gone"))
	write(filepath.Join(dbDir, "b8:16"), "S:disk/by-id/usb-SanDisk_Ultra_Fit_4C530001-0:0\nI:903\nE:ID_BUS=usb\nE:ID_SERIAL_SHORT=4C530001\nE:ID_FS_TYPE=crypto_LUKS\nE:MAJOR=99\nG:systemd\n")
	write(filepath.Join(dbDir, "b8:17"), "I:904\nE:ID_FS_TYPE=btrfs\nE:ID_PART_ENTRY_NUMBER=1\n")
	return sysRoot, dbDir
}

func TestEnumerateFakeTree(t *testing.T) {
	sysRoot, dbDir := fakeTree(t)
	evs, err := Enumerate(context.Background(), sysRoot, dbDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 {
		t.Fatalf("want sdb and sdb1 (loop0 has no db entry, gone is gone), got %+v", evs)
	}
	disk, part := evs[0], evs[1]
	if disk.DevPath != "/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb" ||
		disk.Action != "add" || disk.Subsystem != "block" || disk.DevType != "disk" || disk.DevName != "/dev/sdb" ||
		disk.Major != 8 || disk.Minor != 16 || disk.SeqNum != 0 {
		t.Errorf("bad disk event: %+v", disk)
	}
	if disk.Prop("ID_FS_TYPE") != "crypto_LUKS" || disk.Prop("ID_SERIAL_SHORT") != "4C530001" || disk.Prop("DISKSEQ") != "27" {
		t.Errorf("bad disk props: %v", disk.Props)
	}
	if disk.Prop("MAJOR") != "8" {
		t.Errorf("the db file must not override the kernel's MAJOR: %v", disk.Props)
	}
	if part.DevPath != disk.DevPath+"/sdb1" || part.DevType != "partition" || part.DevName != "/dev/sdb1" || part.Prop("ID_FS_TYPE") != "btrfs" {
		t.Errorf("bad partition event: %+v", part)
	}
}

func TestEnumerateErrors(t *testing.T) {
	sysRoot, dbDir := fakeTree(t)
	if _, err := Enumerate(context.Background(), filepath.Join(sysRoot, "nope"), dbDir); err == nil {
		t.Error("a missing sysfs must be an error")
	}
	if err := os.WriteFile(filepath.Join(dbDir, "b8:16"), []byte("junk\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Enumerate(context.Background(), sysRoot, dbDir); err == nil {
		t.Error("a corrupt db file must be an error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Enumerate(ctx, sysRoot, dbDir); err == nil {
		t.Error("a cancelled context must stop enumeration")
	}
}

func TestEnumerateRealSysfs(t *testing.T) {
	// The host has /sys but (no udevd) no database: every device is skipped, without error.
	_, err := os.Stat("/sys/class/block/loop0")
	apitest.Require(t, err == nil, "needs sysfs with loop0")
	dbDir := t.TempDir()
	evs, err := Enumerate(context.Background(), "/sys", dbDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 0 {
		t.Errorf("devices without db entries were reported: %+v", evs)
	}
	// With a db entry for loop0 (7:0), it appears with the kernel's identity.
	if err := os.WriteFile(filepath.Join(dbDir, "b7:0"), []byte("E:ID_FS_TYPE=\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	evs, err = Enumerate(context.Background(), "/sys", dbDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].DevName != "/dev/loop0" || evs[0].DevPath != "/devices/virtual/block/loop0" {
		t.Errorf("got %+v", evs)
	}
}
