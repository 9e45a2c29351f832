package daemon

import (
	"os"
	"path/filepath"
	"testing"
)

// SetDevRoot makes validDevice accept block devices under dir instead of /dev for one test.
func SetDevRoot(t *testing.T, dir string) {
	setDevices(t, &deviceRules{root: dir, isBlock: devices.Load().isBlock})
}

// FakeBlockDevice makes validDevice look for devices in a temporary directory, where regular
// files count as block devices, and returns one such "device" (a clean path, not a symlink).
// Bus tests use it so they do not depend on the host having a block device they may name.
func FakeBlockDevice(t *testing.T) string {
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dev := filepath.Join(dir, "sdz")
	if err := os.WriteFile(dev, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	setDevices(t, &deviceRules{root: dir, isBlock: func(fi os.FileInfo) bool { return fi.Mode().IsRegular() }})
	return dev
}

func setDevices(t *testing.T, r *deviceRules) {
	old := devices.Load()
	devices.Store(r)
	t.Cleanup(func() { devices.Store(old) })
}

// ValidDevice exposes validDevice.
var ValidDevice = validDevice

// MayCancel exposes mayCancel.
var MayCancel = mayCancel

// ProgressStatus exposes progressStatus.
var ProgressStatus = progressStatus
