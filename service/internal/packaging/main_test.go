package packaging

import (
	"os"
	"path/filepath"
	"testing"
)

// TestMain doubles as the unprivileged helper of TestBusPolicy: the test re-executes its own
// binary as uid 65534 with helperEnv set.
func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(busHelper())
	}
	os.Exit(m.Run())
}

// repoRoot is the module root (the directory holding go.mod), found from the package
// directory the test runs in.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("cannot find the module root (go.mod) above the test's directory")
		}
		dir = parent
	}
}
