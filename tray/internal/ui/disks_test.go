package ui

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeBlock makes a sysfs block entry and its udev database entry.
func fakeBlock(t *testing.T, sys, udev, path, uevent, size, data string, partition bool) {
	t.Helper()
	dir := filepath.Join(sys, path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"uevent": uevent, "size": size}
	if partition {
		files["partition"] = "1\n"
	}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	props := udevProps("", dir)
	if err := os.WriteFile(filepath.Join(udev, "b"+props["MAJOR"]+":"+props["MINOR"]), []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestListUSBDisks(t *testing.T) {
	sys, udev := t.TempDir(), t.TempDir()
	fakeBlock(t, sys, udev, "sdb", "MAJOR=8\nMINOR=16\nDEVTYPE=disk\n", "31277232\n",
		"E:ID_BUS=usb\nE:ID_VENDOR=SanDisk\nE:ID_MODEL=Ultra_Fit\nE:ID_SERIAL_SHORT=4C53\n", false)
	fakeBlock(t, sys, udev, "sdb/sdb1", "MAJOR=8\nMINOR=17\nDEVTYPE=partition\n", "31275008\n",
		"E:ID_BUS=usb\nE:ID_FS_TYPE=vfat\nE:ID_FS_LABEL=PHOTOS\n", true)
	fakeBlock(t, sys, udev, "sda", "MAJOR=8\nMINOR=0\nDEVTYPE=disk\n", "1000\n", "E:ID_BUS=ata\n", false)
	fakeBlock(t, sys, udev, "sdc", "MAJOR=8\nMINOR=32\nDEVTYPE=disk\n", "2048\n", "E:ID_BUS=usb\nE:ID_FS_TYPE=crypto_LUKS\n", false)
	disks := listUSBDisks(sys, udev)
	if len(disks) != 2 {
		t.Fatalf("disks %+v, want sdb and sdc (sda is not USB)", disks)
	}
	b := disks[0]
	if b.Dev != "/dev/sdb" || b.Model != "Ultra Fit" || b.Vendor != "SanDisk" || b.Serial != "4C53" || b.Size != 31277232*512 {
		t.Errorf("sdb = %+v", b)
	}
	if len(b.Parts) != 1 || b.Parts[0] != (diskPart{Dev: "/dev/sdb1", Size: 31275008 * 512, FSType: "vfat", Label: "PHOTOS"}) {
		t.Errorf("sdb's partitions %+v", b.Parts)
	}
	if b.adoptTarget() != "/dev/sdb" || disks[1].adoptTarget() != "/dev/sdc" || disks[1].FSType != "crypto_LUKS" {
		t.Errorf("adopt targets %q %q", b.adoptTarget(), disks[1].adoptTarget())
	}
}

func TestEraseText(t *testing.T) {
	d := usbDisk{Dev: "/dev/sdb", Size: 16e9, Parts: []diskPart{{Dev: "/dev/sdb1", Size: 16e9, FSType: "vfat", Label: "PHOTOS"}}}
	if got := eraseText(d); !strings.Contains(got, "Everything on /dev/sdb will be erased") || !strings.Contains(got, "/dev/sdb1") ||
		!strings.Contains(got, "vfat") || !strings.Contains(got, "PHOTOS") {
		t.Errorf("eraseText = %q: it must name the partition, its filesystem and label", got)
	}
	if got := eraseText(usbDisk{Dev: "/dev/sdc"}); !strings.Contains(got, "looks empty") {
		t.Errorf("eraseText(empty) = %q", got)
	}
}
