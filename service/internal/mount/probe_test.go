package mount

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/plugvault/plugvault/service/api/apitest"
)

// TestProbeFSTypeRealImages formats image files with the real mkfs tools and checks the probe
// recognises each, and refuses an unformatted one.
func TestProbeFSTypeRealImages(t *testing.T) {
	dir := t.TempDir()
	for _, fs := range []struct{ fstype, tool string }{{"btrfs", "mkfs.btrfs"}, {"ext4", "mkfs.ext4"}, {"xfs", "mkfs.xfs"}} {
		tool := apitest.RequireTool(t, fs.tool)
		img := filepath.Join(dir, fs.fstype+".img")
		if err := os.WriteFile(img, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(img, 320<<20); err != nil {
			t.Fatal(err)
		}
		args := []string{"-q", img}
		if fs.fstype == "ext4" {
			args = []string{"-q", "-F", img}
		}
		if out, err := exec.Command(tool, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", fs.tool, err, out)
		}
		got, err := ProbeFSType(img)
		if err != nil || got != fs.fstype {
			t.Errorf("ProbeFSType(%s image) = %q, %v", fs.fstype, got, err)
		}
	}
	blank := filepath.Join(dir, "blank.img")
	if err := os.WriteFile(blank, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := ProbeFSType(blank); err == nil {
		t.Errorf("ProbeFSType(blank) = %q, want an error", got)
	}
	if _, err := ProbeFSType(dir); err == nil {
		t.Error("ProbeFSType must refuse a directory")
	}
}
