package mount

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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
// and ext4 mounted by the Mounter for that user below a 0711 base whose ancestors are only
// searchable: it passes for the right device and refuses another one. Any other user cannot
// even reach the mount (so cannot keep it busy by sitting in it).
func TestRootGuardAsUser(t *testing.T) {
	const nobody, other = 65534, 65533
	for _, fstype := range []string{"btrfs", "ext4"} {
		t.Run(fstype, func(t *testing.T) {
			m, base := rootMounter(t)
			dev := loopImage(t, fstype)
			for d := filepath.Dir(base); d != "/tmp" && d != "/"; d = filepath.Dir(d) {
				if err := os.Chmod(d, 0o711); err != nil {
					t.Fatal(err)
				}
			}
			target := base + "/6e1f0c0a-7d2b-4c55-9a8e-0f1e2d3c4b5a/drive"
			if err := m.Mount(context.Background(), dev, target, fstype, false, nil, nobody); err != nil {
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
			guardAs := func(d uint64, uid ...uint32) (string, error) {
				as := uint32(nobody)
				if len(uid) > 0 {
					as = uid[0]
				}
				cmd := exec.Command(bin)
				cmd.Dir = "/"
				cmd.Env = []string{"PLUGVAULT_TEST_GUARD_TARGET=" + target, "PLUGVAULT_TEST_GUARD_DEV=" + strconv.FormatUint(d, 10)}
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: as, Gid: as, Groups: []uint32{}}}
				out, err := cmd.CombinedOutput()
				return string(out), err
			}
			if out, err := guardAs(mustDev(t, dev)); err != nil {
				t.Errorf("Guard as uid %d: %v: %s", nobody, err, out)
			}
			if _, err := guardAs(mustDev(t, dev) + 1); err == nil {
				t.Errorf("Guard as uid %d accepted another device", nobody)
			}
			if out, err := guardAs(mustDev(t, dev), other); err == nil || !strings.Contains(out, "permission denied") {
				t.Errorf("uid %d reached the mount of uid %d: %v: %s", other, nobody, err, out)
			}
		})
	}
}
