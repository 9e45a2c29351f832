package udev

import (
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// usbDiskAdd is what udevd broadcast for a USB stick on a Debian 12 machine (udevadm monitor
// --udev --property), with the serial shortened.
var usbDiskAdd = []string{
	"ACTION=add",
	"DEVPATH=/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb",
	"SUBSYSTEM=block",
	"DEVNAME=/dev/sdb",
	"DEVTYPE=disk",
	"DISKSEQ=27",
	"SEQNUM=5291",
	"USEC_INITIALIZED=90312345678",
	"MAJOR=8",
	"MINOR=16",
	"ID_BUS=usb",
	"ID_MODEL=Ultra_Fit",
	"ID_SERIAL=SanDisk_Ultra_Fit_4C530001-0:0",
	"ID_SERIAL_SHORT=4C530001",
	"ID_VENDOR=SanDisk",
	"ID_USB_DRIVER=usb-storage",
	"ID_FS_UUID=2f8c6bd5-7a0e-4c7e-9a55-0c1d3e9f7b21",
	"ID_FS_TYPE=crypto_LUKS",
	"ID_FS_VERSION=2",
	"ID_FS_USAGE=crypto",
	"DEVLINKS=/dev/disk/by-id/usb-SanDisk_Ultra_Fit_4C530001-0:0 /dev/disk/by-uuid/2f8c6bd5-7a0e-4c7e-9a55-0c1d3e9f7b21",
	"TAGS=:systemd:",
	"CURRENT_TAGS=:systemd:",
}

func withProps(base []string, repl ...string) []string {
	out := append([]string(nil), base...)
	for _, r := range repl {
		k, _, _ := strings.Cut(r, "=")
		found := false
		for i, p := range out {
			if strings.HasPrefix(p, k+"=") {
				out[i], found = r, true
			}
		}
		if !found {
			out = append(out, r)
		}
	}
	return out
}

func TestMurmurHash2MatchesLibudev(t *testing.T) {
	// Values from the notes (libudev's string_hash_32), computed independently of this code.
	for s, want := range map[string]uint32{"block": 0xf0031db7, "disk": 0x7bcbc5ee} {
		if got := murmurHash2([]byte(s), 0); got != want {
			t.Errorf("murmurHash2(%q) = %#x, want %#x", s, got, want)
		}
	}
	if hashBlock != 0xf0031db7 {
		t.Fatal("hashBlock constant changed")
	}
}

func TestParseUSBDiskAdd(t *testing.T) {
	ev, err := Parse(buildMessage("block", "disk", usbDiskAdd))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Action != "add" || ev.Subsystem != "block" || ev.DevType != "disk" || ev.DevName != "/dev/sdb" {
		t.Errorf("bad identity: %+v", ev)
	}
	if ev.Major != 8 || ev.Minor != 16 || ev.SeqNum != 5291 {
		t.Errorf("bad numbers: %d:%d seq %d", ev.Major, ev.Minor, ev.SeqNum)
	}
	if ev.DevPath != "/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb" {
		t.Errorf("DevPath = %q", ev.DevPath)
	}
	if ev.Prop("ID_FS_TYPE") != "crypto_LUKS" || ev.Prop("ID_SERIAL_SHORT") != "4C530001" || ev.Prop("NOPE") != "" {
		t.Errorf("bad props: %v", ev.Props)
	}
	if len(ev.Props) != len(usbDiskAdd) {
		t.Errorf("got %d props, want %d", len(ev.Props), len(usbDiskAdd))
	}
}

func TestParseRelativeDevnameIsMadeAbsolute(t *testing.T) {
	ev, err := Parse(buildMessage("block", "disk", withProps(usbDiskAdd, "DEVNAME=sdb")))
	if err != nil {
		t.Fatal(err)
	}
	if ev.DevName != "/dev/sdb" || ev.Prop("DEVNAME") != "/dev/sdb" {
		t.Errorf("DevName = %q, prop %q", ev.DevName, ev.Prop("DEVNAME"))
	}
}

func TestParseRejects(t *testing.T) {
	good := buildMessage("block", "disk", usbDiskAdd)
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	setU32 := func(off int, v uint32) []byte {
		return mutate(func(b []byte) []byte { binary.NativeEndian.PutUint32(b[off:], v); return b })
	}
	cases := map[string][]byte{
		"empty":            nil,
		"short header":     good[:39],
		"kernel message":   []byte("add@/devices/virtual/block/loop0\x00ACTION=add\x00DEVPATH=/devices/virtual/block/loop0\x00SUBSYSTEM=block\x00MAJOR=7\x00MINOR=0\x00SEQNUM=1\x00" + strings.Repeat("\x00", 8)),
		"bad magic":        mutate(func(b []byte) []byte { b[offMagic] ^= 0xff; return b }),
		"bad prefix":       mutate(func(b []byte) []byte { b[0] = 'L'; return b }),
		"props past end":   setU32(offPropertiesLen, uint32(len(good))),
		"props in header":  setU32(offPropertiesOff, 8),
		"header too small": setU32(offHeaderSize, 16),
		"wrap around":      setU32(offPropertiesOff, 0xfffffff0),
		"truncated props":  good[:len(good)-5],
		"no action":        buildMessage("block", "disk", []string{"DEVPATH=/devices/x", "SUBSYSTEM=block", "MAJOR=1", "MINOR=2"}),
		"no major":         buildMessage("block", "disk", []string{"ACTION=add", "DEVPATH=/devices/x", "SUBSYSTEM=block", "MINOR=2"}),
		"bad major":        buildMessage("block", "disk", withProps(usbDiskAdd, "MAJOR=8x")),
		"major overflow":   buildMessage("block", "disk", withProps(usbDiskAdd, "MAJOR=4294967296")),
		"bad seqnum":       buildMessage("block", "disk", withProps(usbDiskAdd, "SEQNUM=-1")),
		"dotdot devpath":   buildMessage("block", "disk", withProps(usbDiskAdd, "DEVPATH=/devices/../etc")),
		"relative devpath": buildMessage("block", "disk", withProps(usbDiskAdd, "DEVPATH=devices/x")),
		"devname escapes":  buildMessage("block", "disk", withProps(usbDiskAdd, "DEVNAME=/dev/../etc/shadow")),
		"devname outside":  buildMessage("block", "disk", withProps(usbDiskAdd, "DEVNAME=/etc/shadow")),
		"no equals":        buildMessage("block", "disk", append(append([]string(nil), usbDiskAdd...), "JUNK")),
		"empty key":        buildMessage("block", "disk", append(append([]string(nil), usbDiskAdd...), "=v")),
		"bad key":          buildMessage("block", "disk", append(append([]string(nil), usbDiskAdd...), "A B=v")),
		"too long":         buildMessage("block", "disk", withProps(usbDiskAdd, "X="+strings.Repeat("a", maxMessageSize))),
	}
	for name, msg := range cases {
		if ev, err := Parse(msg); err == nil {
			t.Errorf("%s: accepted: %+v", name, ev)
		} else if !strings.HasPrefix(err.Error(), "cannot parse udev message") {
			t.Errorf("%s: error %q does not say what failed", name, err)
		}
	}
}

func TestParseDatabase(t *testing.T) {
	db := "S:disk/by-id/usb-SanDisk_Ultra_Fit_4C530001-0:0\nS:disk/by-uuid/2f8c6bd5\nI:90312345678\n" +
		"E:ID_FS_TYPE=crypto_LUKS\nE:ID_FS_UUID=2f8c6bd5-7a0e-4c7e-9a55-0c1d3e9f7b21\nE:ID_MODEL=Ultra Fit=2\nE:EMPTY=\n" +
		"G:systemd\nQ:systemd\nV:1\n"
	props, err := ParseDatabase([]byte(db))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"ID_FS_TYPE": "crypto_LUKS", "ID_FS_UUID": "2f8c6bd5-7a0e-4c7e-9a55-0c1d3e9f7b21", "ID_MODEL": "Ultra Fit=2", "EMPTY": ""}
	if fmt.Sprint(props) != fmt.Sprint(want) {
		t.Errorf("got %v, want %v", props, want)
	}
	for _, bad := range []string{"E:NOEQUALS\n", "E:=v\n", "garbage\n", "E\n", "E:A B=1\n"} {
		if _, err := ParseDatabase([]byte(bad)); err == nil {
			t.Errorf("ParseDatabase(%q) accepted", bad)
		}
	}
}

// seedMessages are the realistic udevd messages of the fuzz corpus.
func seedMessages() map[string][]byte {
	part := withProps(usbDiskAdd,
		"DEVPATH=/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb/sdb1",
		"DEVNAME=/dev/sdb1", "DEVTYPE=partition", "MINOR=17", "PARTN=1", "ID_PART_ENTRY_NUMBER=1", "SEQNUM=5292")
	return map[string][]byte{
		"usb-disk-add":      buildMessage("block", "disk", usbDiskAdd),
		"usb-part-add":      buildMessage("block", "partition", part),
		"usb-disk-change":   buildMessage("block", "disk", withProps(usbDiskAdd, "ACTION=change", "SEQNUM=5301", "DISK_MEDIA_CHANGE=1")),
		"usb-disk-remove":   buildMessage("block", "disk", withProps(usbDiskAdd, "ACTION=remove", "SEQNUM=5310")),
		"blank-stick-add":   buildMessage("block", "disk", []string{"ACTION=add", "DEVPATH=/devices/pci0000:00/0000:00:04.0/usb1/1-1/1-1:1.0/host2/target2:0:0/2:0:0:0/block/sda", "SUBSYSTEM=block", "DEVNAME=/dev/sda", "DEVTYPE=disk", "SEQNUM=1201", "MAJOR=8", "MINOR=0", "ID_BUS=usb", "ID_VENDOR=QEMU", "ID_MODEL=QEMU_HARDDISK", "ID_SERIAL_SHORT=stick1"}),
		"dm-mapping-add":    buildMessage("block", "disk", []string{"ACTION=add", "DEVPATH=/devices/virtual/block/dm-0", "SUBSYSTEM=block", "DEVNAME=/dev/dm-0", "DEVTYPE=disk", "SEQNUM=5400", "MAJOR=254", "MINOR=0", "DM_NAME=plugvault-2f8c6bd5-7a0e-4c7e-9a55-0c1d3e9f7b21", "DM_UUID=CRYPT-LUKS2-2f8c6bd57a0e4c7e9a550c1d3e9f7b21-plugvault-2f8c6bd5-7a0e-4c7e-9a55-0c1d3e9f7b21", "ID_FS_TYPE=btrfs"}),
		"usb-device-add":    buildMessage("usb", "usb_device", []string{"ACTION=add", "DEVPATH=/devices/pci0000:00/0000:00:14.0/usb2/2-1", "SUBSYSTEM=usb", "DEVNAME=/dev/bus/usb/002/005", "DEVTYPE=usb_device", "PRODUCT=781/5583/100", "SEQNUM=5280", "MAJOR=189", "MINOR=132"}),
		"header-only-short": buildMessage("block", "disk", nil)[:headerSize],
	}
}

var writeSeeds = flag.Bool("write-seeds", false, "rewrite testdata/fuzz seed corpora from seedMessages")

// TestWriteSeeds regenerates the seed corpus with -write-seeds; otherwise it checks that the
// committed corpus still matches what the encoder produces.
func TestWriteSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzParse")
	for name, msg := range seedMessages() {
		want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", msg)
		file := filepath.Join(dir, name)
		if *writeSeeds {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(file, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(file)
		if err != nil {
			t.Fatalf("%v (run go test -run TestWriteSeeds -write-seeds)", err)
		}
		if string(got) != want {
			t.Errorf("seed %s is stale (run go test -run TestWriteSeeds -write-seeds)", name)
		}
	}
}

// FuzzParse runs the seeds under testdata/fuzz/FuzzParse in every go test run and explores
// with -fuzz=FuzzParse. Parse must never panic, and what it accepts must be well-formed.
func FuzzParse(f *testing.F) {
	for _, msg := range seedMessages() {
		f.Add(msg)
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		ev, err := Parse(msg)
		if err != nil {
			return
		}
		if ev.Action == "" || ev.Subsystem == "" || !strings.HasPrefix(ev.DevPath, "/") || strings.Contains(ev.DevPath, "/../") {
			t.Fatalf("accepted a malformed event: %+v", ev)
		}
		if ev.DevName != "" && (!strings.HasPrefix(ev.DevName, "/dev/") || strings.Contains(ev.DevName, "..")) {
			t.Fatalf("accepted DevName %q", ev.DevName)
		}
		if ev.Props["ACTION"] != ev.Action || ev.Props["DEVPATH"] != ev.DevPath {
			t.Fatalf("typed fields disagree with props: %+v", ev)
		}
		// What was accepted re-encodes to something that parses to the same event.
		var props []string
		for k, v := range ev.Props {
			props = append(props, k+"="+v)
		}
		ev2, err := Parse(buildMessage(ev.Subsystem, ev.DevType, props))
		if err != nil || fmt.Sprint(ev2) != fmt.Sprint(ev) {
			t.Fatalf("re-encoded event differs: %v\n%+v\n%+v", err, ev, ev2)
		}
	})
}

// FuzzParseDatabase runs its seeds (testdata/fuzz/FuzzParseDatabase) in every go test run.
func FuzzParseDatabase(f *testing.F) {
	f.Add([]byte("S:disk/by-uuid/2f8c6bd5\nI:90312345678\nE:ID_FS_TYPE=crypto_LUKS\nE:ID_FS_UUID=2f8c6bd5-7a0e-4c7e-9a55-0c1d3e9f7b21\nG:systemd\nQ:systemd\nV:1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		props, err := ParseDatabase(data)
		if err != nil {
			return
		}
		for k, v := range props {
			if k == "" || strings.Contains(k, "=") || strings.Contains(k+v, "\n") {
				t.Fatalf("accepted property %q=%q", k, v)
			}
			if !strings.Contains(string(data), "E:"+k+"="+v) {
				t.Fatalf("property %q=%q is not in the input", k, v)
			}
		}
	})
}
