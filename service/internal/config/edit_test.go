package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/plugvault/plugvault/service/internal/config"
)

const commented = `# Our backup drives. Ask Alice before changing anything.
version = 1
reminder_days = 3 # weekly rotation

# The blue one lives in the drawer.
[[drive]]
name = "blue"
luks_uuid = "` + uuidA + `"
sources = ["/home/alice"]
run_as = "alice"
# mount_options = ["compress=zstd"]  (not yet)
[drive.retention]
weekly_weeks = 52

# End of drives.
`

func TestAppendAndRemoveKeepComments(t *testing.T) {
	fakeUsers(t)
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte(commented), 0o600); err != nil {
		t.Fatal(err)
	}
	red := config.Drive{
		Name:         `red "spare" \ grün`,
		LuksUUID:     uuidB,
		KeySlot:      1,
		Sources:      []string{"/srv", "/home/alice/Documents"},
		Excludes:     []string{"*.iso"},
		RunAs:        "root",
		MountOptions: []string{"compress=zstd:3", "ssd"},
		Retention:    config.Retention{KeepAllHours: 48},
	}
	if err := config.AppendDrive(path, red); err != nil {
		t.Fatalf("AppendDrive: %v", err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(data), commented) {
		t.Fatalf("AppendDrive changed the existing text:\n%s", data)
	}
	c, err := config.Load(path)
	if err != nil {
		t.Fatalf("Load after AppendDrive: %v", err)
	}
	if len(c.Drives) != 2 || !reflect.DeepEqual(c.Drives[1], red) {
		t.Fatalf("after AppendDrive the drives are %+v, want the second to be %+v", c.Drives, red)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("mode after AppendDrive = %v, want 0644", fi.Mode().Perm())
	}
	if os.Geteuid() == 0 && fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("owner after AppendDrive as root = %d, want 0", fi.Sys().(*syscall.Stat_t).Uid)
	}

	// Removing what was added gives back the file byte for byte.
	if err := config.RemoveDrive(path, uuidB); err != nil {
		t.Fatalf("RemoveDrive: %v", err)
	}
	if data, _ := os.ReadFile(path); string(data) != commented {
		t.Fatalf("append then remove is not a round trip:\n%s\nwant:\n%s", data, commented)
	}

	// Removing the original drive keeps the other comments, drops its own.
	if err := config.RemoveDrive(path, uuidA); err != nil {
		t.Fatalf("RemoveDrive: %v", err)
	}
	want := `# Our backup drives. Ask Alice before changing anything.
version = 1
reminder_days = 3 # weekly rotation

# End of drives.
`
	if data, _ := os.ReadFile(path); string(data) != want {
		t.Fatalf("after removing the first drive:\n%s\nwant:\n%s", data, want)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}
}

func TestRemoveMiddleDrive(t *testing.T) {
	fakeUsers(t)
	path := filepath.Join(t.TempDir(), "config.toml")
	const third = "1f0e9d8c-7b6a-4958-8372-6a5b4c3d2e1f"
	file := "version = 1\n\n" +
		"# first\n[[drive]]\nname = \"1\"\nluks_uuid = \"" + uuidA + "\"\n\n" +
		"# second\n[[drive]]\nname = \"2\"\nluks_uuid = \"" + uuidB + "\"\n[drive.retention]\ndaily_days = 3\n\n" +
		"# third\n[[drive]]\nname = \"3\"\nluks_uuid = \"" + third + "\"\n"
	if err := os.WriteFile(path, []byte(file), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := config.RemoveDrive(path, uuidB); err != nil {
		t.Fatal(err)
	}
	want := "version = 1\n\n" +
		"# first\n[[drive]]\nname = \"1\"\nluks_uuid = \"" + uuidA + "\"\n\n" +
		"# third\n[[drive]]\nname = \"3\"\nluks_uuid = \"" + third + "\"\n"
	if data, _ := os.ReadFile(path); string(data) != want {
		t.Fatalf("after RemoveDrive:\n%s\nwant:\n%s", data, want)
	}
}

func TestAppendCreatesFile(t *testing.T) {
	fakeUsers(t)
	path := filepath.Join(t.TempDir(), "etc", "config.toml")
	d := config.Drive{Name: "a", LuksUUID: uuidA, KeySlot: -1}
	if err := config.AppendDrive(path, d); err != nil {
		t.Fatalf("AppendDrive to a missing file: %v", err)
	}
	c, err := config.Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := config.Defaults()
	want.Drives = []config.Drive{d}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("loaded %+v, want %+v", c, want)
	}
}

func TestAppendRefusesInvalidResult(t *testing.T) {
	fakeUsers(t)
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte(commented), 0o644); err != nil {
		t.Fatal(err)
	}
	dup := config.Drive{Name: "other", LuksUUID: uuidA, KeySlot: -1}
	err := config.AppendDrive(path, dup)
	want := `cannot add drive "other" to ` + path + ":\n" +
		path + `:19:1: drive "other": luks_uuid: also the luks_uuid of drive #1; each drive appears once`
	if err == nil || err.Error() != want {
		t.Fatalf("AppendDrive of a duplicate = %v\nwant:\n%s", err, want)
	}
	if data, _ := os.ReadFile(path); string(data) != commented {
		t.Fatalf("a refused AppendDrive changed the file:\n%s", data)
	}
}

func TestRemoveUnknownDrive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := config.RemoveDrive(path, uuidB); !errors.Is(err, config.ErrNoDrive) {
		t.Fatalf("RemoveDrive on a missing file = %v, want ErrNoDrive", err)
	}
	if err := os.WriteFile(path, []byte(commented), 0o644); err != nil {
		t.Fatal(err)
	}
	err := config.RemoveDrive(path, uuidB)
	want := "cannot remove drive " + uuidB + " from " + path + ": no [[drive]] has this luks_uuid: no such drive"
	if err == nil || err.Error() != want || !errors.Is(err, config.ErrNoDrive) {
		t.Fatalf("RemoveDrive of an unknown drive = %v, want %s", err, want)
	}
}

func TestEditRefusesSymlink(t *testing.T) {
	fakeUsers(t)
	dir := t.TempDir()
	real := filepath.Join(dir, "real.toml")
	if err := os.WriteFile(real, []byte(commented), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "config.toml")
	if err := os.Symlink(real, path); err != nil {
		t.Fatal(err)
	}
	want := "cannot update configuration " + path + ": it is a symbolic link, which plugvault never replaces; edit the file it points to"
	if err := config.AppendDrive(path, config.Drive{Name: "x", LuksUUID: uuidB, KeySlot: -1}); err == nil || err.Error() != want {
		t.Fatalf("AppendDrive through a symlink = %v, want %s", err, want)
	}
	if err := config.RemoveDrive(path, uuidA); err == nil || err.Error() != want {
		t.Fatalf("RemoveDrive through a symlink = %v, want %s", err, want)
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the symlink was replaced")
	}
}

func TestSetFingerprintKeepsTheRest(t *testing.T) {
	fakeUsers(t)
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte(commented), 0o600); err != nil {
		t.Fatal(err)
	}
	red := config.Drive{Name: "red", LuksUUID: uuidB, KeySlot: -1}
	if err := config.AppendDrive(path, red); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	fp1 := "v1:" + strings.Repeat("ab", 32)
	fp2 := "v1:" + strings.Repeat("cd", 32)
	if err := config.SetFingerprint(path, uuidA, fp1); err != nil {
		t.Fatalf("SetFingerprint: %v", err)
	}
	data, _ := os.ReadFile(path)
	wantText := strings.Replace(string(before), `luks_uuid = "`+uuidA+`"`+"\n", `luks_uuid = "`+uuidA+`"`+"\nfingerprint = \""+fp1+"\"\n", 1)
	if string(data) != wantText {
		t.Fatalf("after SetFingerprint:\n%s\nwant:\n%s", data, wantText)
	}
	// Replacing it changes that line only.
	if err := config.SetFingerprint(path, uuidA, fp2); err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(path)
	if want := strings.Replace(wantText, fp1, fp2, 1); string(data) != want {
		t.Fatalf("after the second SetFingerprint:\n%s\nwant:\n%s", data, want)
	}
	c, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Drives[0].Fingerprint != fp2 || c.Drives[1].Fingerprint != "" {
		t.Errorf("fingerprints %q, %q; want %q and none", c.Drives[0].Fingerprint, c.Drives[1].Fingerprint, fp2)
	}
	if err := config.SetFingerprint(path, "00000000-0000-4000-8000-000000000000", fp1); !errors.Is(err, config.ErrNoDrive) {
		t.Errorf("unknown drive: %v, want ErrNoDrive", err)
	}
	// A malformed fingerprint is never written.
	if err := config.SetFingerprint(path, uuidB, "v1:nope"); err == nil {
		t.Error("a malformed fingerprint was written")
	}
	if after, _ := os.ReadFile(path); string(after) != string(data) {
		t.Error("a refused SetFingerprint changed the file")
	}
}
