package packaging

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/plugvault/plugvault/service/api/apitest"
)

const module = "github.com/plugvault/plugvault"

// mayImportExec are the only non-test packages that may import os/exec: sysexec is the one
// place plugvault runs programs (argv built by pure functions, fixed env, process groups), the
// others are test support that starts dbus-daemon and is never linked into a shipped binary.
var mayImportExec = []string{
	module + "/service/internal/sysexec",
	module + "/service/api/apitest",
	module + "/service/internal/testbus",
	// The tray cannot import service/internal (it is unprivileged); it runs exactly one
	// program, the desktop's xdg-open, through this small package, and its test helpers start
	// Xvfb and dbus-daemon.
	module + "/tray/internal/opener",
	module + "/tray/internal/traytest",
	// The VM harness drives QEMU, mmdebstrap and cryptsetup on the test host, and its guest
	// agent runs commands inside the guest: test tooling, never installed.
	module + "/service/e2e",
	module + "/service/e2e/guestagent",
}

// unprivilegedRoots are the binaries users run: they talk to plugvaultd only through
// service/api and must never link the daemon's internals (which assume root).
var unprivilegedRoots = []string{"./service/cmd/plugvault", "./tray/..."}

// goList runs `go list` in the module root and returns one line per package: the import path
// followed by the package's non-test imports.
// overlay, if not "", is a go build -overlay file that adds files for the test's negative
// cases without touching the source tree.
func goList(t *testing.T, overlay string, args ...string) map[string][]string {
	t.Helper()
	gobin := apitest.RequireTool(t, "go")
	flags := []string{"list", "-e", "-f", "{{.ImportPath}} {{join .Imports \" \"}}{{if .Error}} ERROR:{{.Error}}{{end}}"}
	if overlay != "" {
		flags = append(flags, "-overlay", overlay)
	}
	cmd := exec.Command(gobin, append(flags, args...)...)
	cmd.Dir = repoRoot(t)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %v: %v\n%s", args, err, stderr.String())
	}
	pkgs := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		pkgs[fields[0]] = fields[1:]
	}
	return pkgs
}

// internalsLinkedBy returns the violations of the rule that the CLI and the tray never link
// service/internal/..., one message each.
func internalsLinkedBy(t *testing.T, overlay string) (violations []string, checked int) {
	t.Helper()
	root := repoRoot(t)
	for _, pattern := range unprivilegedRoots {
		dir := filepath.Join(root, strings.TrimSuffix(pattern, "/..."))
		if _, err := os.Stat(dir); err != nil {
			// The CLI is written by another stream; until it exists there is nothing to check.
			t.Logf("%s does not exist yet: nothing to check", pattern)
			continue
		}
		for pkg, imports := range goList(t, overlay, "-deps", pattern) {
			for _, imp := range imports {
				// A package go list cannot load (for the tray: the compiler's own "use of
				// internal package" error) still lists its imports; the build reports the
				// error itself.
				if strings.HasPrefix(imp, "ERROR:") {
					break
				}
				if strings.HasPrefix(imp, module+"/service/internal/") {
					violations = append(violations, pattern+" links "+imp+" (imported by "+pkg+")")
				}
			}
		}
		checked++
	}
	return violations, checked
}

// execImporters returns the non-test packages that import os/exec without being allowed to.
func execImporters(t *testing.T, overlay string) (violations []string, packages int) {
	t.Helper()
	pkgs := goList(t, overlay, "./...")
	for pkg, imports := range pkgs {
		if slices.Contains(imports, "os/exec") && !slices.Contains(mayImportExec, pkg) {
			violations = append(violations, pkg)
		}
	}
	return violations, len(pkgs)
}

// TestUnprivilegedBinariesDoNotLinkInternals backs the compiler's internal/ rule, which does
// not cover service/cmd/plugvault (it sits under service/), with a check of the whole
// dependency graph, as tailscale's tstest/deptest does.
func TestUnprivilegedBinariesDoNotLinkInternals(t *testing.T) {
	violations, checked := internalsLinkedBy(t, "")
	if checked == 0 {
		t.Fatal("none of the unprivileged binaries exist: the test checked nothing")
	}
	for _, v := range violations {
		t.Errorf("%s: the CLI and the tray may only use service/api", v)
	}
}

func TestOnlySysexecImportsOsExec(t *testing.T) {
	violations, n := execImporters(t, "")
	if n < 3 {
		t.Fatalf("go list ./... found %d packages: the check would prove nothing", n)
	}
	for _, v := range violations {
		t.Errorf("%s imports os/exec: run programs through service/internal/sysexec", v)
	}
}

// TestDependencyChecksSeeViolations keeps both checks honest: with a file added through a
// go list overlay that breaks each rule, each check reports it.
func TestDependencyChecksSeeViolations(t *testing.T) {
	root := repoRoot(t)
	dir := t.TempDir()
	add := map[string]string{
		filepath.Join(root, "tray", "cmd", "plugvault-tray", "zz_violation.go"): "package main\n\nimport _ \"" + module + "/service/internal/config\"\n",
		filepath.Join(root, "service", "api", "zz_violation.go"):                "package api\n\nimport _ \"os/exec\"\n",
	}
	replace := map[string]string{}
	i := 0
	for dst, src := range add {
		f := filepath.Join(dir, strconv.Itoa(i)+".go")
		if err := os.WriteFile(f, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		replace[dst] = f
		i++
	}
	overlay := filepath.Join(dir, "overlay.json")
	data, err := json.Marshal(map[string]any{"Replace": replace})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(overlay, data, 0o644); err != nil {
		t.Fatal(err)
	}
	violations, _ := internalsLinkedBy(t, overlay)
	want := "./tray/... links " + module + "/service/internal/config (imported by " + module + "/tray/cmd/plugvault-tray)"
	if !slices.Contains(violations, want) {
		t.Errorf("the link check missed a tray import of service/internal/config; it found %q", violations)
	}
	execs, _ := execImporters(t, overlay)
	if !slices.Contains(execs, module+"/service/api") {
		t.Errorf("the os/exec check missed service/api importing it; it found %q", execs)
	}
}
