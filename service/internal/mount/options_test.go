package mount

import (
	"strings"
	"testing"

	"github.com/plugvault/plugvault/service/internal/config"
)

// checkConfigAccepts reports whether plugvaultd --check-config (config.Validate) accepts opt
// in a drive's mount_options.
func checkConfigAccepts(t *testing.T, opt string) bool {
	t.Helper()
	c := config.Defaults()
	c.Drives = []config.Drive{{Name: "a", LuksUUID: "2f8c6bd5-7a0e-4c7e-9a55-0c1d3e9f7b21", KeySlot: -1, MountOptions: []string{opt}}}
	err := c.Validate()
	return err == nil || !strings.Contains(err.Error(), "mount_options")
}

// FuzzMountOptionsAgreeWithConfig: a mount option that --check-config accepts is one the mount
// code accepts for at least one filesystem plugvault mounts, and one it refuses is accepted
// for none; so an option that passes --check-config cannot fail at every mount.
func FuzzMountOptionsAgreeWithConfig(f *testing.F) {
	for _, opt := range []string{
		"ssd_spread", "ssd", "nossd", "compress", "compress=zstd", "compress=zstd:15", "compress=zstd:16",
		"compress-force=lzo", "compress=lzo:1", "compress=zlib:9", "compress=no", "discard", "discard=async",
		"discard=sync", "nodiscard", "autodefrag", "noautodefrag", "commit=1", "commit=300", "commit=301",
		"commit=0", "commit=07", "flushoncommit", "data=ordered", "data=journal", "data=writeback",
		"journal_checksum", "barrier", "barrier=1", "barrier=0", "nobarrier", "auto_da_alloc", "inode64",
		"logbufs=2", "logbufs=9", "space_cache=v2", "errors=remount-ro", "subvol=/", "suid", "exec", "dev",
		"ro", "rw", "relatime", "user", "", "=", "ssd,suid", " ssd", "ssd_spread=1",
	} {
		f.Add(opt)
	}
	f.Fuzz(func(t *testing.T, opt string) {
		mountable := []string{}
		for _, fs := range config.Filesystems {
			if data, err := mountData(fs, []string{opt}); err == nil {
				if data != opt {
					t.Fatalf("mountData(%s, %q) passes %q to mount(2)", fs, opt, data)
				}
				mountable = append(mountable, fs)
			}
		}
		if accepted := checkConfigAccepts(t, opt); accepted != (len(mountable) > 0) {
			t.Fatalf("--check-config accepts %q: %v; the mount code accepts it for %v", opt, accepted, mountable)
		}
	})
}

// ssd_spread is on btrfs' allow-list: --check-config accepts it and a btrfs mount passes it on.
func TestSSDSpreadMountsOnBtrfs(t *testing.T) {
	if !checkConfigAccepts(t, "ssd_spread") {
		t.Error("--check-config refuses ssd_spread")
	}
	if data, err := mountData("btrfs", []string{"ssd_spread"}); err != nil || data != "ssd_spread" {
		t.Errorf("mountData(btrfs, ssd_spread) = %q, %v", data, err)
	}
}
