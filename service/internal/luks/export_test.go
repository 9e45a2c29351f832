package luks

import (
	"fmt"
	"os"
	"strings"

	"github.com/plugvault/plugvault/service/internal/sysexec"
)

// NewAt is New with a given tool path (for fake runners).
var NewAt = newAt

// AllowImageFiles makes c accept regular files under dir as devices, so header operations can
// be tested on image files (the host has no device-mapper and tests need no loop device for
// headers). The shape checks stay the production ones; only the "block device under /dev"
// part is replaced, and only in this test binary.
func AllowImageFiles(c *Cryptsetup, dir string) {
	c.validateDevice = func(p string) error {
		if err := checkDevicePath(p, dir); err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil || !fi.Mode().IsRegular() {
			return fmt.Errorf("cannot use image %s: not a regular file", p)
		}
		return nil
	}
}

var _ sysexec.Runner = sysexec.Exec{}

func stringsReader(s string) *strings.Reader { return strings.NewReader(s) }
