package metrics_test

import (
	"github.com/plugvault/plugvault/service/internal/logging"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/plugvault/plugvault/service/api/apitest"
)

// TestCatalog: the journal catalog the package installs defines every MESSAGE_ID plugvaultd
// sends, and journalctl accepts it (built into a database under a scratch root).
func TestCatalog(t *testing.T) {
	journalctl := apitest.RequireTool(t, "journalctl")
	src, err := filepath.Abs("../../systemd/plugvault.catalog")
	if err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	dir := filepath.Join(root, "usr/lib/systemd/catalog")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "plugvault.catalog"), text, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(journalctl, "--root="+root, "--update-catalog").CombinedOutput(); err != nil {
		t.Fatalf("journalctl --update-catalog: %v\n%s", err, out)
	}
	out, err := exec.Command(journalctl, "--root="+root, "--list-catalog").CombinedOutput()
	if err != nil {
		t.Fatalf("journalctl --list-catalog: %v\n%s", err, out)
	}
	for _, id := range []string{logging.MessageBackupCompleted, logging.MessageBackupFailed, logging.MessageImpostor, logging.MessageOverdue} {
		if !strings.Contains(string(out), id+" plugvault: ") {
			t.Errorf("the catalog does not define %s:\n%s", id, out)
		}
	}
}
