package enroll

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/plugvault/plugvault/service/api"
)

// TestHeaderBackupStaysPrivate: the header backup is made in a new directory of the daemon's
// own (0700), returned, and that directory is removed, whether the backup worked or not.
// Nothing else is written or removed: a file planted where cryptsetup once wrote, and the
// temporary directory's other entries, stay as they were.
func TestHeaderBackupStaysPrivate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		inject func(h *harness)
		want   string // "" for success, else part of the error
	}{
		{"ok", func(h *harness) {}, ""},
		{"cryptsetup fails", func(h *harness) { h.luks.fail["HeaderBackup"] = errInjected }, "cannot make the LUKS header backup"},
		{"too large for the bus", func(h *harness) { h.luks.headerSize = maxHeaderBackup + 1 }, "more than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			tc.inject(h)
			// Someone else's entries in the shared temporary directory.
			victim := filepath.Join(h.tmpDir, "plugvault-header-victim")
			if err := os.WriteFile(victim, []byte("keep"), 0o644); err != nil {
				t.Fatal(err)
			}
			req := enrollReq()
			req.HeaderBackup = true
			res, err := h.e.Enroll(t.Context(), req)
			if tc.want == "" {
				if err != nil || !bytes.Equal(res.HeaderBackup, fakeHeader) {
					t.Fatalf("header backup %q, error %v", res.HeaderBackup, err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tc.want) || res.HeaderBackup != nil {
				t.Fatalf("error %v (header %d bytes), want one saying %q", err, len(res.HeaderBackup), tc.want)
			}
			hb := headerBackupFile(t, h)
			if d := filepath.Dir(hb); filepath.Dir(d) != h.tmpDir || d == victim {
				t.Errorf("the header backup went to %s, want a new directory in %s", hb, h.tmpDir)
			}
			fi := h.luks.headerDir
			if fi == nil || fi.Mode() != os.ModeDir|0o700 || int(fi.Sys().(*syscall.Stat_t).Uid) != os.Geteuid() {
				t.Errorf("cryptsetup wrote into %v, want a directory of ours, 0700", fi)
			}
			if b, err := os.ReadFile(victim); err != nil || string(b) != "keep" {
				t.Errorf("another entry of the temporary directory was touched: %q, %v", b, err)
			}
			if err := os.Remove(victim); err != nil {
				t.Fatal(err)
			}
			h.assertTempDirEmpty(tc.name)
		})
	}
}

// TestEnrollRefusesAReplacedDevice: the stick is pulled and another one takes its name
// (same /dev/sdb and device number, a new disk sequence number), or the name now leads to
// another device, between the check and a step that writes to it: that step and every later
// one is refused, and what was done is rolled back.
func TestEnrollRefusesAReplacedDevice(t *testing.T) {
	for _, tc := range []struct {
		name      string
		when      string // the fake LUKS call before which the device changes
		swap      func(h *harness)
		formatted bool     // whether Format ran before the swap was noticed
		never     []string // LUKS calls that must not happen
	}{
		{"new stick before format", "UUID", func(h *harness) { h.sys.replaceDisk("sdb") }, false, []string{"Format", "AddKey", "Open"}},
		{"other device before format", "UUID", func(h *harness) {
			h.sys.disk("sde", 8, 64, true, "usb", "pci/usb4")
			h.sys.devs["/dev/sdb"] = devNum{8, 64}
		}, false, []string{"Format", "AddKey", "Open"}},
		{"new stick after format", "Format", func(h *harness) { h.sys.replaceDisk("sdb") }, true, []string{"AddKey", "Open"}},
		{"new stick before mkfs", "AddKey", func(h *harness) { h.sys.replaceDisk("sdb") }, true, []string{"Open"}},
		{"new stick before the fingerprint", "Close", func(h *harness) { h.sys.replaceDisk("sdb") }, true, []string{"Identify"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.luks.before = func(method string) {
				if method == tc.when {
					tc.swap(h)
					h.luks.before = nil
				}
			}
			req := enrollReq()
			req.HeaderBackup = true
			res, err := h.e.Enroll(t.Context(), req)
			if !errors.Is(err, api.ErrNotPresent) || !strings.Contains(err.Error(), "changed since it was checked") {
				t.Fatalf("error %v, want a refusal saying the device changed", err)
			}
			if res.UUID != "" || res.HeaderBackup != nil {
				t.Errorf("result %+v after a refusal", res)
			}
			if got := h.luks.called("Format"); got != map[bool]int{false: 0, true: 1}[tc.formatted] {
				t.Errorf("Format ran %d times", got)
			}
			for _, m := range tc.never {
				if h.luks.called(m) != 0 {
					t.Errorf("%s ran on the replaced device: %v", m, h.luks.calls)
				}
			}
			mkfsAfter := slices.Contains(tc.never, "Open") // mkfs runs in the mapping Open makes
			for _, argv := range h.runner.argvs() {
				if mkfsAfter && strings.Contains(argv, "mkfs") {
					t.Errorf("ran %s on the replaced device", argv)
				}
			}
			if h.luks.called("HeaderBackup") != 0 {
				t.Errorf("made a header backup of the replaced device: %v", h.luks.calls)
			}
			h.assertNothingLeft(tc.name)
		})
	}
}

// TestAdoptRefusesAReplacedDevice: a stick swapped after its key was tested gets no new slot.
func TestAdoptRefusesAReplacedDevice(t *testing.T) {
	h := newHarness(t)
	_, key := handPrepared(h, "argon2id")
	h.luks.before = func(method string) {
		if method == "TestKey" {
			h.sys.replaceDisk("sdb")
		}
	}
	_, err := h.e.Adopt(t.Context(), AdoptRequest{Device: "/dev/sdb1", Secret: key, AddKeyfileSlot: true})
	if !errors.Is(err, api.ErrNotPresent) {
		t.Fatalf("error %v, want a refusal saying the device changed", err)
	}
	if h.luks.called("AddKey") != 0 || len(h.luks.slots) != 2 {
		t.Errorf("the replaced device was changed: %v, slots %v", h.luks.calls, h.luks.slots)
	}
	h.assertNothingLeft("adopt")
}

// TestDeviceWithoutDiskSeq: on a kernel without diskseq the device number and sysfs place
// are still pinned.
func TestDeviceWithoutDiskSeq(t *testing.T) {
	h := newHarness(t)
	if err := os.Remove(filepath.Join(h.sys.root, h.sys.diskDir("sdb"), "diskseq")); err != nil {
		t.Fatal(err)
	}
	d, err := h.sys.sys.checkDevice("/dev/sdb", false)
	if err != nil || d.DiskSeq != "" || d.Num != (devNum{8, 16}) {
		t.Fatalf("checked %+v, %v", d, err)
	}
	if err := h.sys.sys.same(d); err != nil {
		t.Errorf("the unchanged device: %v", err)
	}
	h.sys.disk("sde", 8, 64, true, "usb", "pci/usb4")
	h.sys.devs["/dev/sdb"] = devNum{8, 64}
	if err := h.sys.sys.same(d); !errors.Is(err, api.ErrNotPresent) {
		t.Errorf("another device under the same name: %v", err)
	}
}
