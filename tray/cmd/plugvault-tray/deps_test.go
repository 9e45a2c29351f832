package main

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// TestTrayNeverLinksServiceInternals: the tray is an unprivileged client of the D-Bus contract
// (service/api) only. Neither the binary nor any tray package, tests included, may import
// service/internal/...; test support (apitest, traytest) must not reach the binary.
func TestTrayNeverLinksServiceInternals(t *testing.T) {
	const mod = "github.com/plugvault/plugvault/"
	list := func(args ...string) []string {
		t.Helper()
		out, err := exec.Command("go", append([]string{"list", "-deps", "-json=ImportPath"}, args...)...).Output()
		if err != nil {
			t.Fatalf("go list %v: %v", args, err)
		}
		var pkgs []string
		dec := json.NewDecoder(strings.NewReader(string(out)))
		for dec.More() {
			var p struct{ ImportPath string }
			if err := dec.Decode(&p); err != nil {
				t.Fatal(err)
			}
			pkgs = append(pkgs, p.ImportPath)
		}
		if len(pkgs) == 0 {
			t.Fatalf("go list %v listed nothing", args)
		}
		return pkgs
	}
	for _, p := range list("-test", mod+"tray/...") {
		if strings.HasPrefix(p, mod+"service/internal/") {
			t.Errorf("a tray package imports %s", p)
		}
	}
	seenAPI := false
	for _, p := range list(mod + "tray/cmd/plugvault-tray") {
		seenAPI = seenAPI || p == mod+"service/api"
		if strings.HasPrefix(p, mod+"service/internal/") || strings.HasSuffix(p, "/apitest") || strings.HasSuffix(p, "/traytest") || p == "testing" {
			t.Errorf("plugvault-tray links %s", p)
		}
	}
	if !seenAPI {
		t.Error("plugvault-tray does not link service/api: the dependency list is wrong")
	}
}
