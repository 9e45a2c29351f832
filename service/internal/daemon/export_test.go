package daemon

import "testing"

// SetDevRoot makes validDevice accept devices under dir instead of /dev for one test.
func SetDevRoot(t *testing.T, dir string) {
	old := devRoot
	devRoot = dir
	t.Cleanup(func() { devRoot = old })
}

// ValidDevice exposes validDevice.
var ValidDevice = validDevice
