package enroll

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/apitest"
	"github.com/plugvault/plugvault/service/internal/luks"
	"github.com/plugvault/plugvault/service/internal/sysexec"
)

// TestRealSysfs runs the device checks against this machine's own /sys, /proc and /dev: a loop
// device resolves through /sys/dev/block to a whole disk that is neither removable nor on USB,
// so it is refused; a regular file is not taken for a block device.
func TestRealSysfs(t *testing.T) {
	apitest.RequireRoot(t)
	losetup := apitest.RequireTool(t, "losetup")
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, make([]byte, 8<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(losetup, "--find", "--show", img).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command(losetup, "--detach", loop).Run() })

	e, err := New(Deps{LUKS: newFakeLUKS(), Keyslots: newFakeLUKS().keyslots, Registry: &fakeRegistry{},
		LoadConfig: (&fakeConfig{}).load, AppendDrive: (&fakeConfig{}).append, RemoveDrive: (&fakeConfig{}).remove,
		Runner: &fakeRunner{}})
	if err != nil {
		t.Fatal(err)
	}
	d, err := e.d.System.checkDevice(loop, false)
	if !errors.Is(err, api.ErrInvalidArgument) || !strings.Contains(err.Error(), "not a removable USB disk") {
		t.Errorf("%s: %v, want a refusal as not a removable USB disk", loop, err)
	}
	if d.Name != filepath.Base(loop) || d.Partition {
		t.Errorf("sysfs resolved %s to %+v", loop, d)
	}
	// The device is pinned by its number and the kernel's disk sequence number.
	if b, err := os.ReadFile("/sys/class/block/" + filepath.Base(loop) + "/diskseq"); err == nil {
		if d.DiskSeq == "" || d.DiskSeq != strings.TrimSpace(string(b)) {
			t.Errorf("diskseq %q, sysfs says %q", d.DiskSeq, b)
		}
	}
	if n, err := statDevNum(loop); err != nil || n != d.Num {
		t.Errorf("device number %v, stat says %v (%v)", d.Num, n, err)
	}
	if err := e.d.System.same(d); err != nil {
		t.Errorf("the same loop device: %v", err)
	}
	if _, err := statDevNum(img); !errors.Is(err, api.ErrInvalidArgument) {
		t.Errorf("a regular file passed as a block device: %v", err)
	}
}

// TestRealHeaderBackup makes a header backup of a LUKS2 loop device with the real cryptsetup
// (luks.Cryptsetup): the bytes that come back are the device's header area (what
// luksHeaderRestore puts back), they fit a D-Bus reply, and the private directory is gone
// afterwards.
func TestRealHeaderBackup(t *testing.T) {
	apitest.RequireRoot(t)
	cryptsetup := apitest.RequireTool(t, "cryptsetup")
	losetup := apitest.RequireTool(t, "losetup")
	img := filepath.Join(t.TempDir(), "stick.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 40<<20); err != nil {
		t.Fatal(err)
	}
	format := exec.Command(cryptsetup, "luksFormat", "--batch-mode", "--type=luks2",
		"--pbkdf=pbkdf2", "--pbkdf-force-iterations=1000", "--key-file=-", img)
	format.Stdin = strings.NewReader("pw")
	if out, err := format.CombinedOutput(); err != nil {
		t.Fatalf("luksFormat: %v\n%s", err, out)
	}
	out, err := exec.Command(losetup, "--find", "--show", img).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command(losetup, "--detach", loop).Run() })
	cs, err := luks.New(sysexec.Exec{})
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	e, err := New(Deps{LUKS: cs, Keyslots: newFakeLUKS().keyslots, Registry: &fakeRegistry{},
		LoadConfig: (&fakeConfig{}).load, AppendDrive: (&fakeConfig{}).append, RemoveDrive: (&fakeConfig{}).remove,
		Runner: sysexec.Exec{}, TempDir: tmp})
	if err != nil {
		t.Fatal(err)
	}
	header, err := e.headerBackup(t.Context(), loop)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if len(header) == 0 || len(header) > maxHeaderBackup || !bytes.Equal(header, dev[:len(header)]) {
		t.Errorf("the header backup (%d bytes) is not the image's header area", len(header))
	}
	if !bytes.HasPrefix(header, []byte("LUKS\xba\xbe")) {
		t.Errorf("the header backup starts with %q, want the LUKS magic", header[:6])
	}
	t.Logf("a default LUKS2 header backup is %d bytes", len(header))
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Errorf("left in the temporary directory: %v", entries)
	}
}
