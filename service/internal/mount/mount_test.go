package mount

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/plugvault/plugvault/service/api/apitest"
)

func TestMountData(t *testing.T) {
	for _, ok := range []struct {
		fs    string
		extra []string
		want  string
	}{
		{"btrfs", nil, ""},
		{"btrfs", []string{"compress=zstd:3", "ssd_spread"}, "compress=zstd:3,ssd_spread"},
		{"ext4", []string{"data=journal", "commit=30"}, "data=journal,commit=30"},
		{"xfs", []string{"discard"}, "discard"},
	} {
		got, err := mountData(ok.fs, ok.extra)
		if err != nil || got != ok.want {
			t.Errorf("mountData(%s, %v) = %q, %v", ok.fs, ok.extra, got, err)
		}
	}
	for _, bad := range []struct {
		fs    string
		extra []string
	}{
		{"vfat", nil}, {"ntfs3", nil}, {"", nil}, {"BTRFS", nil},
		{"btrfs", []string{"suid"}}, {"btrfs", []string{"exec"}}, {"btrfs", []string{"dev"}},
		{"btrfs", []string{"subvol=/etc"}}, {"btrfs", []string{"device=/dev/sda"}},
		{"ext4", []string{"compress=zstd"}}, {"ext4", []string{"commit=30,suid"}},
		{"ext4", []string{"errors=panic"}}, {"xfs", []string{""}}, {"btrfs", []string{"space_cache=v2"}},
	} {
		if _, err := mountData(bad.fs, bad.extra); err == nil {
			t.Errorf("mountData(%q, %q) accepted", bad.fs, bad.extra)
		}
	}
}

func TestTargetMustBeTwoLevelsBelowBase(t *testing.T) {
	m := NewMounter(nil)
	if err := m.SetBase("/run/plugvault"); err != nil {
		t.Fatal(err)
	}
	const uuid = "2f8c6bd5-7a0e-4c7e-9a55-0c1d3e9f7b21"
	if err := m.checkTarget("/run/plugvault/"+uuid+"/drive", false); err != nil {
		t.Error(err)
	}
	// One level below (no gate): only cleaning up accepts it.
	if err := m.checkTarget("/run/plugvault/"+uuid, true); err != nil {
		t.Error(err)
	}
	if err := m.checkTarget("/run/plugvault/"+uuid, false); err == nil {
		t.Error("a mount point without a gate was accepted for mounting")
	}
	for _, bad := range []string{"/run/plugvault", "/run/plugvault/", "/run/plugvault/a/b/c", "/run/plugvault/../etc", "/run/plugvault/.hidden/x",
		"/run/plugvault/a/.x", "/tmp/x/y", "run/plugvault/x/y", "/run/plugvault/-x/y", "/run/plugvault/a b/y", "/run/plugvault/a/../b"} {
		for _, legacy := range []bool{false, true} {
			if err := m.checkTarget(bad, legacy); err == nil {
				t.Errorf("checkTarget(%q, %v) accepted", bad, legacy)
			}
		}
	}
	for _, bad := range []string{"", "relative", "/", "/run/plugvault/"} {
		if err := m.SetBase(bad); err == nil {
			t.Errorf("SetBase(%q) accepted", bad)
		}
	}
}

// The gate's ACL lets exactly one user search and list it: user::rwx, user:<uid>:r-x,
// group::---, mask::r-x, other::--- (the layout of linux/posix_acl_xattr.h).
func TestUserACL(t *testing.T) {
	want := []byte{2, 0, 0, 0,
		1, 0, 7, 0, 0xff, 0xff, 0xff, 0xff,
		2, 0, 5, 0, 0xe8, 0x03, 0, 0,
		4, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
		0x10, 0, 5, 0, 0xff, 0xff, 0xff, 0xff,
		0x20, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}
	if got := userACL(1000); !bytes.Equal(got, want) {
		t.Errorf("userACL(1000) = %v, want %v", got, want)
	}
}

func TestMountRefusesBeforeTouchingAnything(t *testing.T) {
	m := NewMounter(nil)
	base := t.TempDir() + "/base"
	if err := m.SetBase(base); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, c := range []struct{ source, fs string }{
		{"/etc/passwd", "ext4"}, {"/dev/null", "ext4"}, {"/dev/../etc/passwd", "ext4"}, {"/dev/sdz9", "ext4"}, {"/dev/loop0", "vfat"},
	} {
		if err := m.Mount(ctx, c.source, base+"/g/x", c.fs, false, nil, 1000); err == nil {
			t.Errorf("Mount(%s, %s) accepted", c.source, c.fs)
		}
	}
	if _, err := os.Stat(base); err == nil {
		t.Error("the base was created for a refused mount")
	}
	if err := m.Unmount(ctx, "/etc"); err == nil || !strings.Contains(err.Error(), "cannot use mount point") {
		t.Errorf("Unmount outside the base: %v", err)
	}
}

// TestFreshBaseUnderRestrictiveUmask: plugvaultd runs with UMask=0077, so the base it creates
// at every boot comes out 0700; it is made 0711 without warning about it (the warning is for a
// base someone else left with other permissions).
func TestFreshBaseUnderRestrictiveUmask(t *testing.T) {
	apitest.RequireRoot(t)
	var logs strings.Builder
	m := NewMounter(slog.New(slog.NewTextHandler(&logs, nil)))
	base := t.TempDir() + "/base"
	if err := m.SetBase(base); err != nil {
		t.Fatal(err)
	}
	old := unix.Umask(0o077)
	err := m.ensureBase()
	unix.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(base); err != nil || fi.Mode().Perm() != baseMode {
		t.Errorf("base mode %v, %v; want %#o", fi.Mode(), err, baseMode)
	}
	if logs.Len() != 0 {
		t.Errorf("creating the base logged %q", logs.String())
	}
}
