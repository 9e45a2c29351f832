package mount

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// TestMain lets the test binary run Guard as another user (see TestRootGuardAsUser).
func TestMain(m *testing.M) {
	if target := os.Getenv("PLUGVAULT_TEST_GUARD_TARGET"); target != "" {
		dev, _ := strconv.ParseUint(os.Getenv("PLUGVAULT_TEST_GUARD_DEV"), 10, 64)
		if err := Guard(target, dev); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestRootGuardAsUser runs Guard as an unprivileged user, as the engine child does, on btrfs
// and ext4 mounted by the Mounter below a 0711 base whose ancestors are only searchable: it
// passes for the right device and refuses another one.
func TestRootGuardAsUser(t *testing.T) {
	const nobody = 65534
	for _, fstype := range []string{"btrfs", "ext4"} {
		t.Run(fstype, func(t *testing.T) {
			m, base := rootMounter(t)
			dev := loopImage(t, fstype)
			for d := filepath.Dir(base); d != "/tmp" && d != "/"; d = filepath.Dir(d) {
				if err := os.Chmod(d, 0o711); err != nil {
					t.Fatal(err)
				}
			}
			target := base + "/drive"
			if err := m.Mount(context.Background(), dev, target, fstype, false, nil); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = m.Unmount(context.Background(), target) })
			exe, err := os.Executable()
			if err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(exe)
			if err != nil {
				t.Fatal(err)
			}
			bin := filepath.Join(filepath.Dir(base), "mount.test")
			if err := os.WriteFile(bin, data, 0o755); err != nil {
				t.Fatal(err)
			}
			guardAs := func(d uint64) (string, error) {
				cmd := exec.Command(bin)
				cmd.Dir = "/"
				cmd.Env = []string{"PLUGVAULT_TEST_GUARD_TARGET=" + target, "PLUGVAULT_TEST_GUARD_DEV=" + strconv.FormatUint(d, 10)}
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
				out, err := cmd.CombinedOutput()
				return string(out), err
			}
			if out, err := guardAs(mustDev(t, dev)); err != nil {
				t.Errorf("Guard as uid %d: %v: %s", nobody, err, out)
			}
			if _, err := guardAs(mustDev(t, dev) + 1); err == nil {
				t.Errorf("Guard as uid %d accepted another device", nobody)
			}
		})
	}
}
