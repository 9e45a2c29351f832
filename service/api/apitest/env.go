package apitest

// This file decides whether a test that needs something from the machine (root, a tool, a bus
// daemon) runs. On a laptop a missing need skips the test; under CI=true it fails it, because a
// test that should have run in CI and skipped hides a regression. It lives here, next to the
// private bus, so that the service's tests and the tray's (which may not import
// service/internal) share one rule.

import (
	"os"
	"path/filepath"
	"testing"
)

// InCI reports whether the tests run under CI (CI=true).
func InCI() bool { return os.Getenv("CI") == "true" }

// Require skips t with why when ok is false, or fails it under CI.
func Require(t testing.TB, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	if InCI() {
		t.Fatalf("CI=true and this test cannot run: %s", why)
	}
	t.Skip(why)
}

// RequireRoot gates the root level: real mounts, loop devices and cryptsetup on files. It needs
// PLUGVAULT_TEST_ROOT=1 and euid 0, so a developer never runs it by accident.
func RequireRoot(t testing.TB) {
	t.Helper()
	Require(t, os.Getenv("PLUGVAULT_TEST_ROOT") == "1", "set PLUGVAULT_TEST_ROOT=1 (as root) to run root-level tests")
	Require(t, os.Geteuid() == 0, "root-level tests need euid 0")
}

// RequireTool gates on a program being installed and returns its path.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	for _, dir := range filepath.SplitList(os.Getenv("PATH") + ":/usr/sbin:/sbin") {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	Require(t, false, name+" is not installed")
	return ""
}
