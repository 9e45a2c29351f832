package mount

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/apitest"
)

// loopImage makes a filesystem image of fstype and attaches it to a loop device.
func loopImage(t *testing.T, fstype string) string {
	t.Helper()
	mkfs := apitest.RequireTool(t, "mkfs."+fstype)
	losetup := apitest.RequireTool(t, "losetup")
	img := filepath.Join(t.TempDir(), fstype+".img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 128<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.%s: %v: %s", fstype, err, out)
	}
	out, err := exec.Command(losetup, "--find", "--show", img).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command(losetup, "--detach", dev).Run() })
	return dev
}

func rootMounter(t *testing.T) (*Mounter, string) {
	t.Helper()
	apitest.RequireRoot(t)
	m := NewMounter(nil)
	base := filepath.Join(t.TempDir(), "plugvault")
	if err := m.SetBase(base); err != nil {
		t.Fatal(err)
	}
	m.SetRetries(2, 50*time.Millisecond)
	return m, base
}

func mustDev(t *testing.T, p string) uint64 {
	t.Helper()
	d, err := DeviceNumber(p)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestRealMountGuardUnmount(t *testing.T) {
	m, base := rootMounter(t)
	ctx := context.Background()
	btrfsDev, ext4Dev := loopImage(t, "btrfs"), loopImage(t, "ext4")
	bt, et := base+"/bt/drive", base+"/et/drive"
	t.Cleanup(func() { _ = unix.Unmount(bt, unix.MNT_DETACH); _ = unix.Unmount(et, unix.MNT_DETACH) })

	if err := m.Mount(ctx, btrfsDev, bt, "btrfs", false, []string{"compress=zstd"}, 0); err != nil {
		t.Fatal(err)
	}
	if err := m.Mount(ctx, ext4Dev, et, "ext4", true, nil, 0); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(base, &st); err != nil || st.Mode&0o7777 != 0o711 || st.Uid != 0 {
		t.Errorf("base mode %#o uid %d, %v", st.Mode&0o777, st.Uid, err)
	}

	// The flags are on the mounts.
	infos, err := Mounts(base)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 2 || infos[0].Target != bt || infos[0].FSType != "btrfs" || infos[1].Target != et || infos[1].Source != ext4Dev {
		t.Fatalf("Mounts = %+v", infos)
	}
	// btrfs: the mount table has an anonymous 0:N; Mounts resolves the real device.
	if infos[0].Dev != mustDev(t, btrfsDev) || infos[1].Dev != mustDev(t, ext4Dev) {
		t.Errorf("Mounts devices %s %s, want %s %s", devString(infos[0].Dev), devString(infos[1].Dev), devString(mustDev(t, btrfsDev)), devString(mustDev(t, ext4Dev)))
	}
	entries, err := readMountinfo(defaultEnv)
	if err != nil {
		t.Fatal(err)
	}
	be, _ := topmost(entries, bt)
	if be.Major != 0 {
		t.Logf("note: this kernel reports btrfs as %d:%d in mountinfo", be.Major, be.Minor)
	}
	for _, e := range []string{bt, et} {
		en, _ := topmost(entries, e)
		for _, f := range []string{"nosuid", "nodev", "noexec", "noatime"} {
			if !strings.Contains(","+en.Options+",", ","+f+",") {
				t.Errorf("%s lacks %s: %s", e, f, en.Options)
			}
		}
	}
	if en, _ := topmost(entries, et); !strings.HasPrefix(en.Options, "ro,") {
		t.Errorf("the read-only mount is %s", en.Options)
	}

	// Guard accepts our mounts of our devices...
	if err := Guard(bt, mustDev(t, btrfsDev)); err != nil {
		t.Errorf("Guard(btrfs): %v", err)
	}
	if err := Guard(et, mustDev(t, ext4Dev)); err != nil {
		t.Errorf("Guard(ext4): %v", err)
	}
	// ...and refuses a different device, a plain directory and the base itself.
	if err := Guard(bt, mustDev(t, ext4Dev)); err == nil {
		t.Error("Guard accepted the btrfs mount for the ext4 device")
	}
	if err := Guard(et, mustDev(t, btrfsDev)); err == nil {
		t.Error("Guard accepted the ext4 mount for the btrfs device")
	}
	plain := base + "/plain"
	if err := os.Mkdir(plain, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Guard(plain, mustDev(t, ext4Dev)); !errors.Is(err, ErrNotMounted) {
		t.Errorf("Guard(plain directory) = %v", err)
	}
	if err := Guard(bt+"/sub", mustDev(t, btrfsDev)); err == nil {
		t.Error("Guard accepted a path inside the mount")
	}
	// Mounting twice on the same point is refused.
	if err := m.Mount(ctx, btrfsDev, bt, "btrfs", false, nil, 0); !errors.Is(err, api.ErrBusy) {
		t.Errorf("second mount on %s: %v", bt, err)
	}

	// Busy: a child with its cwd inside the mount.
	holder := exec.Command("sleep", "600")
	holder.Dir = bt
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer holder.Process.Kill()
	err = m.Unmount(ctx, bt)
	var be2 *BusyError
	if !errors.As(err, &be2) || !errors.Is(err, api.ErrBusy) {
		t.Fatalf("Unmount of a busy mount: %v", err)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("pid %d (sleep: cwd)", holder.Process.Pid)) {
		t.Errorf("the error does not name the holder: %v", err)
	}
	if err := Guard(bt, mustDev(t, btrfsDev)); err != nil {
		t.Errorf("still mounted after a failed unmount, Guard: %v", err)
	}
	// A cancelled caller stops the retries.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := m.Unmount(cctx, bt); !errors.Is(err, context.Canceled) {
		t.Errorf("Unmount with a cancelled context: %v", err)
	}
	_ = holder.Process.Kill()
	_ = holder.Wait()

	// After the holder exits it unmounts, and the mount point is gone.
	if err := m.Unmount(ctx, bt); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(bt); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("mount point left behind: %v", err)
	}
	if err := Guard(bt, mustDev(t, btrfsDev)); err == nil {
		t.Error("Guard accepted an unmounted path")
	}
	// Unmounting again is not an error.
	if err := m.Unmount(ctx, bt); err != nil {
		t.Errorf("second Unmount: %v", err)
	}

	// Detach (lazy) as the last resort, with an open file holding the ext4 mount.
	f, err := os.Open(et)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := m.Unmount(ctx, et); !errors.Is(err, api.ErrBusy) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Errorf("Unmount with an open fd: %v", err)
	}
	if err := m.Detach(et); err != nil {
		t.Fatal(err)
	}
	if infos, _ := Mounts(base); len(infos) != 0 {
		t.Errorf("mounts left after detach: %+v", infos)
	}
}

func TestRealBaseChecks(t *testing.T) {
	m, base := rootMounter(t)
	ctx := context.Background()
	dev := loopImage(t, "ext4")

	// A symlink base is refused.
	real := filepath.Join(filepath.Dir(base), "elsewhere")
	if err := os.Mkdir(real, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, base); err != nil {
		t.Fatal(err)
	}
	if err := m.Mount(ctx, dev, base+"/g/x", "ext4", false, nil, 0); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Errorf("symlink base: %v", err)
	}
	if err := os.Remove(base); err != nil {
		t.Fatal(err)
	}
	// A base owned by someone else is refused.
	if err := os.Mkdir(base, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(base, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := m.Mount(ctx, dev, base+"/g/x", "ext4", false, nil, 0); err == nil || !strings.Contains(err.Error(), "not root") {
		t.Errorf("foreign base: %v", err)
	}
	// A lax root-owned base is set to 0711 (traversable, not listable) and used.
	if err := os.Chown(base, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(base+"/g/x", unix.MNT_DETACH) })
	if err := m.Mount(ctx, dev, base+"/g/x", "ext4", false, nil, 0); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(base); err != nil || fi.Mode().Perm() != 0o711 {
		t.Errorf("base mode %v, %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(base + "/g/x"); err != nil || !fi.IsDir() {
		t.Errorf("mount point: %v", err)
	}
	if err := m.Unmount(ctx, base+"/g/x"); err != nil {
		t.Fatal(err)
	}
}
