package usbpower

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/apitest"
)

const (
	usbDevPath  = "/devices/pci0000:00/0000:00:14.0/usb2/2-1"
	scsiDevPath = usbDevPath + "/2-1:1.0/host6/target6:0:0/6:0:0:0"
	diskDevPath = scsiDevPath + "/block/sdb"
)

type tree struct {
	roots Roots
	t     *testing.T
}

func (tr tree) write(rel, s string) {
	tr.t.Helper()
	p := filepath.Join(tr.roots.Sys, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		tr.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		tr.t.Fatal(err)
	}
}

func (tr tree) link(target, rel string) {
	tr.t.Helper()
	p := filepath.Join(tr.roots.Sys, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		tr.t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		tr.t.Fatal(err)
	}
}

// mountinfoRoot is a mount table with nothing on the stick.
const mountinfoRoot = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n" +
	"25 22 0:22 / /run rw,nosuid shared:5 - tmpfs tmpfs rw,mode=755\n"

func (tr tree) mountinfo(s string) {
	tr.t.Helper()
	if err := os.WriteFile(tr.roots.Mountinfo, []byte(s), 0o644); err != nil {
		tr.t.Fatal(err)
	}
}

func (tr tree) read(rel string) string {
	tr.t.Helper()
	b, err := os.ReadFile(filepath.Join(tr.roots.Sys, rel))
	if err != nil {
		tr.t.Fatal(err)
	}
	return string(b)
}

// fakeUSBStick lays out sysfs for a USB stick as Linux does: the USB device 2-1 with its
// interface 2-1:1.0, the usb-storage SCSI host, the SCSI device 6:0:0:0 with "delete", and
// the disk sdb with a partition; plus /dev/sdb. withRemove/withPort choose which USB power
// attributes the "kernel" offers.
func fakeUSBStick(t *testing.T, withRemove, withPort bool) tree {
	root := t.TempDir()
	tr := tree{roots: Roots{Sys: filepath.Join(root, "sys"), Dev: filepath.Join(root, "dev"), Mountinfo: filepath.Join(root, "mountinfo")}, t: t}
	tr.mountinfo(mountinfoRoot)
	if err := os.MkdirAll(filepath.Join(tr.roots.Sys, "bus/usb"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(tr.roots.Sys, "bus/scsi"), 0o755); err != nil {
		t.Fatal(err)
	}
	tr.write(usbDevPath+"/uevent", "MAJOR=189\nMINOR=132\nDEVNAME=bus/usb/002/005\nDEVTYPE=usb_device\nDRIVER=usb\nPRODUCT=781/5583/100\n")
	tr.link("../../../../../bus/usb", usbDevPath+"/subsystem")
	if withRemove {
		tr.write(usbDevPath+"/remove", "")
	}
	if withPort {
		tr.write("/devices/pci0000:00/0000:00:14.0/usb2/2-0:1.0/usb2-port1/disable", "")
		tr.link("../2-0:1.0/usb2-port1", usbDevPath+"/port")
	}
	tr.write(usbDevPath+"/2-1:1.0/uevent", "DEVTYPE=usb_interface\nDRIVER=usb-storage\n")
	tr.link("../../../../../../bus/usb", usbDevPath+"/2-1:1.0/subsystem")
	tr.write(scsiDevPath+"/uevent", "DEVTYPE=scsi_device\nDRIVER=sd\n")
	tr.write(scsiDevPath+"/delete", "")
	tr.link("../../../../../../../../../bus/scsi", scsiDevPath+"/subsystem")
	tr.write(diskDevPath+"/uevent", "MAJOR=8\nMINOR=16\nDEVNAME=sdb\nDEVTYPE=disk\n")
	tr.link("../../../6:0:0:0", diskDevPath+"/device")
	tr.write(diskDevPath+"/sdb1/uevent", "MAJOR=8\nMINOR=17\nDEVNAME=sdb1\nDEVTYPE=partition\n")
	if err := os.MkdirAll(tr.roots.Dev, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"sdb", "sdb1"} {
		if err := os.WriteFile(filepath.Join(tr.roots.Dev, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return tr
}

func TestPowerOffDeletesSCSIAndRemovesUSBDevice(t *testing.T) {
	tr := fakeUSBStick(t, true, true)
	if err := PowerOffAt(context.Background(), tr.roots, diskDevPath); err != nil {
		t.Fatal(err)
	}
	if got := tr.read(scsiDevPath + "/delete"); got != "1" {
		t.Errorf("SCSI delete got %q", got)
	}
	if got := tr.read(usbDevPath + "/remove"); got != "1" {
		t.Errorf("USB remove got %q", got)
	}
	if got := tr.read("/devices/pci0000:00/0000:00:14.0/usb2/2-0:1.0/usb2-port1/disable"); got != "" {
		t.Errorf("the port was disabled although remove exists: %q", got)
	}
}

func TestPowerOffFallsBackToPortDisable(t *testing.T) {
	tr := fakeUSBStick(t, false, true)
	if err := PowerOffAt(context.Background(), tr.roots, diskDevPath); err != nil {
		t.Fatal(err)
	}
	if got := tr.read("/devices/pci0000:00/0000:00:14.0/usb2/2-0:1.0/usb2-port1/disable"); got != "1" {
		t.Errorf("port disable got %q", got)
	}
	if got := tr.read(scsiDevPath + "/delete"); got != "1" {
		t.Errorf("SCSI delete got %q", got)
	}
}

func TestPowerOffWithoutPowerControl(t *testing.T) {
	tr := fakeUSBStick(t, false, false)
	err := PowerOffAt(context.Background(), tr.roots, diskDevPath)
	if !errors.Is(err, ErrNoPowerControl) {
		t.Fatalf("want ErrNoPowerControl, got %v", err)
	}
	if got := tr.read(scsiDevPath + "/delete"); got != "1" {
		t.Errorf("the disk must still be detached: delete got %q", got)
	}
}

func TestPowerOffRefusals(t *testing.T) {
	tr := fakeUSBStick(t, true, false)
	ctx := context.Background()
	for _, bad := range []string{"", "sdb", "/block/sdb", "/devices/../etc", diskDevPath + "/", diskDevPath + "/sdb1", "/devices/nope/block/sdz"} {
		if err := PowerOffAt(ctx, tr.roots, bad); err == nil {
			t.Errorf("PowerOffAt(%q) accepted", bad)
		}
	}
	// A virtual disk (no SCSI device, no USB ancestor) is not supported, and nothing is written.
	tr.write("/devices/virtual/block/loop0/uevent", "MAJOR=7\nMINOR=0\nDEVNAME=loop0\nDEVTYPE=disk\n")
	if err := PowerOffAt(ctx, tr.roots, "/devices/virtual/block/loop0"); !errors.Is(err, ErrNotSupported) {
		t.Errorf("loop0: %v", err)
	}
	if got := tr.read(scsiDevPath+"/delete") + tr.read(usbDevPath+"/remove"); got != "" {
		t.Errorf("something was written: %q", got)
	}
	// A missing device node fails before anything is detached.
	if err := os.Remove(filepath.Join(tr.roots.Dev, "sdb")); err != nil {
		t.Fatal(err)
	}
	if err := PowerOffAt(ctx, tr.roots, diskDevPath); err == nil {
		t.Error("no device node: accepted")
	}
	if got := tr.read(scsiDevPath + "/delete"); got != "" {
		t.Errorf("detached although the sync failed: %q", got)
	}
}

func TestPowerOffRealLoopIsNotSupported(t *testing.T) {
	// On the real sysfs a loop device has neither a SCSI device nor a USB parent: refused
	// before anything is touched.
	_, err := os.Stat("/sys/devices/virtual/block/loop0/uevent")
	apitest.Require(t, err == nil, "needs loop0 in sysfs")
	if err := PowerOff(context.Background(), "/devices/virtual/block/loop0"); !errors.Is(err, ErrNotSupported) {
		t.Errorf("loop0: %v", err)
	}
}

func TestPowerOffRefusesADiskInUse(t *testing.T) {
	tr := fakeUSBStick(t, true, true)
	// The LUKS mapping dm-0 is still open on sdb1.
	tr.write("/devices/virtual/block/dm-0/uevent", "MAJOR=254\nMINOR=0\nDEVNAME=dm-0\nDEVTYPE=disk\n")
	tr.link("../../../../../../../../../../../virtual/block/dm-0", diskDevPath+"/sdb1/holders/dm-0")
	err := PowerOffAt(context.Background(), tr.roots, diskDevPath)
	if !errors.Is(err, api.ErrBusy) || !strings.Contains(err.Error(), "sdb1 is still in use by dm-0") {
		t.Fatalf("want busy naming dm-0, got %v", err)
	}
	if got := tr.read(scsiDevPath+"/delete") + tr.read(usbDevPath+"/remove"); got != "" {
		t.Errorf("something was written: %q", got)
	}
	// A missing partition node makes the sync fail before anything is detached.
	if err := os.Remove(filepath.Join(tr.roots.Sys, diskDevPath, "sdb1/holders/dm-0")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(tr.roots.Dev, "sdb1")); err != nil {
		t.Fatal(err)
	}
	if err := PowerOffAt(context.Background(), tr.roots, diskDevPath); err == nil || !strings.Contains(err.Error(), "sdb1") {
		t.Errorf("no sdb1 node: %v", err)
	}
	if got := tr.read(scsiDevPath + "/delete"); got != "" {
		t.Errorf("detached although a partition could not be synced: %q", got)
	}
}

// A filesystem mounted from another partition of the stick (or from the disk itself) keeps it
// powered: the error names the partition and where it is mounted, and nothing is detached.
// btrfs shows an anonymous device number in mountinfo, so the source counts too.
func TestPowerOffRefusesWhileAnotherPartitionIsMounted(t *testing.T) {
	for _, c := range []struct{ name, line, want string }{
		{"partition by number", "40 25 8:17 / /media/alice/STICK rw,nosuid - vfat /dev/sdb1 rw", "sdb1 is mounted at /media/alice/STICK"},
		{"btrfs by source", "41 25 0:57 / /mnt/b rw - btrfs /dev/sdb1 rw", "sdb1 is mounted at /mnt/b"},
		{"whole disk", "42 25 8:16 / /mnt/disk rw - ext4 /dev/sdb rw", "sdb is mounted at /mnt/disk"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr := fakeUSBStick(t, true, true)
			tr.mountinfo(mountinfoRoot + c.line + "\n")
			err := PowerOffAt(context.Background(), tr.roots, diskDevPath)
			if !errors.Is(err, api.ErrBusy) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want busy saying %q, got %v", c.want, err)
			}
			if got := tr.read(scsiDevPath+"/delete") + tr.read(usbDevPath+"/remove"); got != "" {
				t.Errorf("something was written: %q", got)
			}
		})
	}
	// Another disk's mounts do not matter.
	tr := fakeUSBStick(t, true, true)
	tr.mountinfo(mountinfoRoot + "43 25 8:33 / /mnt/other rw - ext4 /dev/sdc1 rw\n")
	if err := PowerOffAt(context.Background(), tr.roots, diskDevPath); err != nil {
		t.Fatalf("a mount of another disk stopped the power off: %v", err)
	}
	// An unreadable mount table is no licence to power off.
	tr = fakeUSBStick(t, true, true)
	if err := os.Remove(tr.roots.Mountinfo); err != nil {
		t.Fatal(err)
	}
	if err := PowerOffAt(context.Background(), tr.roots, diskDevPath); err == nil {
		t.Fatal("powered off without reading the mount table")
	}
	if got := tr.read(scsiDevPath + "/delete"); got != "" {
		t.Errorf("detached without reading the mount table: %q", got)
	}
}
