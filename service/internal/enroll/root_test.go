package enroll

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/apitest"
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
	if _, err := statDevNum(img); !errors.Is(err, api.ErrInvalidArgument) {
		t.Errorf("a regular file passed as a block device: %v", err)
	}
}
