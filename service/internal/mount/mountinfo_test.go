package mount

import (
	"strings"
	"testing"
)

// sampleMountinfo is from this kind of machine, with a btrfs stick mounted under the base, a
// path with a space, and a second mount stacked on the same mount point.
const sampleMountinfo = `22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
25 22 0:23 / /run rw,nosuid,nodev,noexec,relatime shared:5 - tmpfs tmpfs rw,size=401500k,mode=755
47 25 0:41 / /run/plugvault/2f8c6bd5 rw,nosuid,nodev,noexec,noatime shared:30 - btrfs /dev/mapper/plugvault-2f8c6bd5-7a0e-4c7e-9a55-0c1d3e9f7b21 rw,space_cache=v2,subvolid=5,subvol=/
48 25 7:1 / /run/plugvault/with\040space rw,nosuid,nodev,noexec,noatime - ext4 /dev/loop1 rw
49 47 7:2 / /run/plugvault/2f8c6bd5 rw - ext4 /dev/loop2 rw
50 22 254:1 /home/u /mnt/bind rw,relatime - ext4 /dev/vda1 rw
`

func TestParseMountinfo(t *testing.T) {
	es, err := ParseMountinfo([]byte(sampleMountinfo))
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 7 {
		t.Fatalf("got %d entries", len(es))
	}
	b := es[3]
	if b.ID != 47 || b.Parent != 25 || b.Major != 0 || b.Minor != 41 || b.Root != "/" || b.MountPoint != "/run/plugvault/2f8c6bd5" ||
		b.FSType != "btrfs" || b.Source != "/dev/mapper/plugvault-2f8c6bd5-7a0e-4c7e-9a55-0c1d3e9f7b21" || !strings.Contains(b.SuperOptions, "subvolid=5") ||
		b.Options != "rw,nosuid,nodev,noexec,noatime" {
		t.Errorf("btrfs entry %+v", b)
	}
	if es[4].MountPoint != "/run/plugvault/with space" || es[4].Dev() != 7<<8|1 {
		t.Errorf("escaped entry %+v dev %#x", es[4], es[4].Dev())
	}
	if es[6].Root != "/home/u" {
		t.Errorf("bind entry %+v", es[6])
	}
	top, ok := topmost(es, "/run/plugvault/2f8c6bd5")
	if !ok || top.ID != 49 {
		t.Errorf("topmost = %+v: the later mount on the same point hides the earlier", top)
	}
	if _, ok := topmost(es, "/run/plugvault"); ok {
		t.Error("the base is not a mount point")
	}
}

func TestParseMountinfoRejects(t *testing.T) {
	for _, bad := range []string{
		"22 1 254:1 / / rw,relatime shared:1 ext4 /dev/vda1 rw", // no separator
		"22 1 254:1 / / rw - ext4 /dev/vda1",                    // too few after -
		"22 1 254:1 / / rw - ext4 /dev/vda1 rw extra",           // too many after -
		"x 1 254:1 / / rw - ext4 /dev/vda1 rw",                  // bad id
		"22 1 254 / / rw - ext4 /dev/vda1 rw",                   // bad device
		"22 1 254:1 / relative rw - ext4 /dev/vda1 rw",          // relative mount point
		"22 1 254:1 / /a\\04 rw - ext4 /dev/vda1 rw",            // short escape
		"22 1 254:1 / /a\\999 rw - ext4 /dev/vda1 rw",           // bad octal
		"22 1 254:1 / / rw -  /dev/vda1 rw",                     // empty type
		"22 1 4294967296:1 / / rw - ext4 /dev/vda1 rw",          // major overflow
	} {
		if es, err := ParseMountinfo([]byte(bad + "\n")); err == nil {
			t.Errorf("accepted %q: %+v", bad, es)
		}
	}
}

// FuzzParseMountinfo runs its seeds (the sample, and testdata/fuzz/FuzzParseMountinfo) in every
// go test run. Accepted entries must have absolute mount points and a type.
func FuzzParseMountinfo(f *testing.F) {
	f.Add([]byte(sampleMountinfo))
	f.Fuzz(func(t *testing.T, data []byte) {
		es, err := ParseMountinfo(data)
		if err != nil {
			return
		}
		for _, e := range es {
			if !strings.HasPrefix(e.MountPoint, "/") || e.FSType == "" {
				t.Fatalf("accepted %+v", e)
			}
		}
	})
}
