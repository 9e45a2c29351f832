package main

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies keeps the CLI a thin client: it may import the standard library (but not
// os/exec: plugvault runs no programs), the D-Bus contract, godbus (the contract's types) and
// x/sys/unix (terminal echo), and must never link service/internal (privileged code) or the
// GUI libraries. Test files are not checked (they use the test-support packages).
func TestDependencies(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go is not in PATH: %v", err)
	}
	out, err := exec.Command(goTool, "list", "-json=ImportPath,Imports,Deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkg struct {
		ImportPath string
		Imports    []string
		Deps       []string
	}
	if err := json.Unmarshal(out, &pkg); err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{
		"github.com/plugvault/plugvault/service/api": true,
		"github.com/godbus/dbus/v5":                  true,
		"golang.org/x/sys/unix":                      true,
	}
	for _, imp := range pkg.Imports {
		stdlib := !strings.Contains(strings.Split(imp, "/")[0], ".")
		if imp == "os/exec" || !stdlib && !allowed[imp] {
			t.Errorf("%s imports %s", pkg.ImportPath, imp)
		}
	}
	for _, dep := range pkg.Deps {
		if strings.Contains(dep, "/service/internal/") || strings.HasSuffix(dep, "/service/internal") ||
			strings.HasPrefix(dep, "fyne.io/") || strings.Contains(dep, "/apitest") {
			t.Errorf("%s links %s", pkg.ImportPath, dep)
		}
	}
	if len(pkg.Deps) == 0 {
		t.Error("go list reported no dependencies at all")
	}
}
