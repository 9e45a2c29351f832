package enroll

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/config"
	"github.com/plugvault/plugvault/service/internal/drive"
)

func TestCheckDevice(t *testing.T) {
	for _, tc := range []struct {
		name           string
		setup          func(f *fakeSys)
		device         string
		allowPartition bool
		want           error // nil = accepted
		msg            string
	}{
		{"usb stick", nil, "/dev/sdb", false, nil, ""},
		{"partition of a usb stick for adopt", nil, "/dev/sdb1", true, nil, ""},
		{"partition for enroll", nil, "/dev/sdb1", false, api.ErrInvalidArgument, "is a partition"},
		{"fixed sata disk", nil, "/dev/sdc", false, api.ErrInvalidArgument, "not a removable USB disk"},
		{"system disk behind device-mapper", nil, "/dev/sda", false, api.ErrInvalidArgument, "holds the running system"},
		{"system disk with btrfs root", func(f *fakeSys) {
			f.devs["/dev/sdd2"] = devNum{8, 50}
			f.write("mountinfo", "22 1 0:31 / / rw - btrfs /dev/sdd2 rw\n")
		}, "/dev/sdd", false, api.ErrInvalidArgument, "holds the running system"},
		{"mounted partition", func(f *fakeSys) {
			f.write("mountinfo", "22 1 254:0 / / rw - ext4 /dev/mapper/root rw\n40 22 8:17 / /media/me/MY\\040STICK rw,nosuid - vfat /dev/sdb1 rw\n")
		}, "/dev/sdb", false, api.ErrBusy, "sdb1 is mounted on /media/me/MY STICK"},
		{"held by a mapping", func(f *fakeSys) { f.dm("dm-3", 254, 3, "sdb/sdb1", "/dev/mapper/luks-x") }, "/dev/sdb", false, api.ErrBusy, "held by dm-3"},
		{"active swap", func(f *fakeSys) {
			f.write("swaps", "Filename Type Size Used Priority\n/dev/sdb1 partition 1048572 0 -2\n")
		}, "/dev/sdb", false, api.ErrBusy, "active swap"},
		{"not canonical", nil, "/dev/../dev/sdb", false, api.ErrInvalidArgument, "canonical"},
		{"outside /dev", nil, "/tmp/sdb", false, api.ErrInvalidArgument, "canonical"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeSys(t)
			if tc.setup != nil {
				tc.setup(f)
			}
			d, err := f.sys.checkDevice(tc.device, tc.allowPartition)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if d.Path != tc.device || d.Partition != (tc.device == "/dev/sdb1") {
					t.Errorf("device %+v", d)
				}
				return
			}
			if !errors.Is(err, tc.want) || !strings.Contains(fmt.Sprint(err), tc.msg) {
				t.Errorf("error %v, want one wrapping %v saying %q", err, tc.want, tc.msg)
			}
		})
	}
}

func enrollReq() Request {
	return Request{Device: "/dev/sdb", Passphrase: []byte("correct horse"), Name: "blue", Label: "BLUE", Filesystem: "btrfs"}
}

func TestEnroll(t *testing.T) {
	h := newHarness(t)
	req := enrollReq()
	req.HeaderBackup = true
	req.Caller = drive.Caller{UID: 1000, GID: 1000, User: "alice", Home: "/home/alice"}
	res, err := h.e.Enroll(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	// The header backup comes back to the caller; nothing of it stays on this side.
	if !bytes.Equal(res.HeaderBackup, fakeHeader) {
		t.Errorf("header backup %q, want what cryptsetup wrote, %q", res.HeaderBackup, fakeHeader)
	}
	h.assertTempDirEmpty("enroll")
	if res.UUID != testUUID {
		t.Errorf("uuid %q, want the one Format made", res.UUID)
	}
	// LUKS: passphrase in slot 0, the random key in its own fast slot, opened with that slot.
	wantCalls := []string{
		"UUID[/dev/sdb]", // is it an enrolled drive already?
		"Format[/dev/sdb correct horse BLUE]",
		"AddKey[/dev/sdb 64 true]",
		"Open[/dev/sdb plugvault-" + testUUID + " 1 false]",
		"Close[plugvault-" + testUUID + " false]",
		"HeaderBackup[/dev/sdb]",
		"Identify[/dev/sdb]", // its fingerprint is recorded with the drive
	}
	if !slices.Equal(h.luks.calls, wantCalls) {
		t.Errorf("LUKS calls\n%q\nwant\n%q", h.luks.calls, wantCalls)
	}
	key, err := os.ReadFile(h.keyPath())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(key, h.luks.slots[1]) || len(key) != keyLen || bytes.Equal(key, make([]byte, keyLen)) {
		t.Errorf("the keyfile holds %x, the slot takes %x", key, h.luks.slots[1])
	}
	assertMode(t, h.keyPath(), 0o400)
	assertMode(t, h.keyDir, 0o700|os.ModeDir)
	// The udev rule is in force before the mapping for mkfs is opened (found in the VM: without
	// it the new mapping and filesystem reached udev without UDISKS_IGNORE).
	wantRuns := []string{
		"/usr/sbin/udevadm control --reload",
		"/usr/sbin/mkfs.btrfs --force --label BLUE -- /dev/mapper/plugvault-" + testUUID,
		"/usr/sbin/udevadm trigger --action=change -- /dev/sdb",
	}
	got := h.runner.argvs()
	// The header backup is made in a private directory made for it.
	hb := headerBackupFile(t, h)
	if d := filepath.Dir(hb); filepath.Dir(d) != h.tmpDir || !strings.HasPrefix(filepath.Base(d), "plugvault-header-") {
		t.Errorf("the header backup was made in %s, want a new directory in %s", d, h.tmpDir)
	}
	if !slices.Equal(got, wantRuns) {
		t.Errorf("tools run\n%q\nwant\n%q", got, wantRuns)
	}
	rule, err := os.ReadFile(h.rulePath())
	if err != nil {
		t.Fatal(err)
	}
	wantRule := `# plugvault backup drive, LUKS UUID 5e1f0c3a-8b2d-4c6e-9f10-a1b2c3d4e5f6.
# Installed by plugvaultd when the drive was enrolled, removed by "plugvault forget".
# Desktop automounters (udisks) ignore the drive and its unlocked mapping: plugvaultd
# unlocks, mounts and locks it.
SUBSYSTEM=="block", ENV{ID_FS_UUID}=="5e1f0c3a-8b2d-4c6e-9f10-a1b2c3d4e5f6", ENV{UDISKS_IGNORE}="1"
SUBSYSTEM=="block", ENV{DM_NAME}=="plugvault-5e1f0c3a-8b2d-4c6e-9f10-a1b2c3d4e5f6", ENV{UDISKS_IGNORE}="1"
`
	if string(rule) != wantRule {
		t.Errorf("udev rule\n%s\nwant\n%s", rule, wantRule)
	}
	assertMode(t, h.rulePath(), 0o644)
	want := config.Drive{Name: "blue", LuksUUID: testUUID, Fingerprint: fakeFingerprint, KeySlot: 1}
	if len(h.cfg.drives) != 1 || !driveEqual(h.cfg.drives[0], want) || !driveEqual(h.reg.drives[testUUID], want) {
		t.Errorf("config %+v, registry %+v; want %+v", h.cfg.drives, h.reg.drives, want)
	}
	if len(h.luks.opened) != 0 {
		t.Errorf("mapping left open: %v", h.luks.opened)
	}
	entries, _ := os.ReadDir(h.keyDir)
	if len(entries) != 1 {
		t.Errorf("the key directory holds %d entries, want only the keyfile", len(entries))
	}
}

// headerBackupFile returns the file the fake LUKS.HeaderBackup was told to write.
func headerBackupFile(t *testing.T, h *harness) string {
	t.Helper()
	h.luks.mu.Lock()
	defer h.luks.mu.Unlock()
	if h.luks.headerFile == "" {
		t.Fatalf("no header backup was made: %q", h.luks.calls)
	}
	return h.luks.headerFile
}

func driveEqual(a, b config.Drive) bool {
	return a.Name == b.Name && a.LuksUUID == b.LuksUUID && a.KeySlot == b.KeySlot && a.Keyfile == b.Keyfile
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != want {
		t.Errorf("%s has mode %v, want %v", path, fi.Mode(), want)
	}
	if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != os.Geteuid() {
		t.Errorf("%s is owned by uid %d, want %d", path, st.Uid, os.Geteuid())
	}
}

func TestEnrollDefaultsAndExt4(t *testing.T) {
	h := newHarness(t)
	req := enrollReq()
	req.Name, req.Label, req.Filesystem = "", "", "ext4"
	if _, err := h.e.Enroll(t.Context(), req); err != nil {
		t.Fatal(err)
	}
	if got := h.runner.argvs()[1]; got != "/usr/sbin/mkfs.ext4 -F -q -L plugvault -- /dev/mapper/plugvault-"+testUUID {
		t.Errorf("mkfs: %s", got)
	}
	if h.cfg.drives[0].Name != "plugvault" {
		t.Errorf("default name %q, want the label", h.cfg.drives[0].Name)
	}
}

func TestEnrollRefusesBeforeTouchingAnything(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(r *Request, h *harness)
		want   error
	}{
		{"system disk", func(r *Request, h *harness) { r.Device = "/dev/sda" }, api.ErrInvalidArgument},
		{"non-USB disk", func(r *Request, h *harness) { r.Device = "/dev/sdc" }, api.ErrInvalidArgument},
		{"partition", func(r *Request, h *harness) { r.Device = "/dev/sdb1" }, api.ErrInvalidArgument},
		{"mounted", func(r *Request, h *harness) {
			h.sys.write("mountinfo", "40 1 8:17 / /media/x rw - vfat /dev/sdb1 rw\n")
		}, api.ErrBusy},
		{"xfs", func(r *Request, h *harness) { r.Filesystem = "xfs" }, api.ErrInvalidArgument},
		{"label like an option", func(r *Request, h *harness) { r.Label = "-f" }, api.ErrInvalidArgument},
		{"name with a newline", func(r *Request, h *harness) { r.Name = "a\nb" }, api.ErrInvalidArgument},
		{"empty passphrase", func(r *Request, h *harness) { r.Passphrase = nil }, api.ErrInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			req := enrollReq()
			tc.mutate(&req, h)
			_, err := h.e.Enroll(t.Context(), req)
			if !errors.Is(err, tc.want) {
				t.Errorf("error %v, want %v", err, tc.want)
			}
			if len(h.luks.calls) != 0 || len(h.runner.runs) != 0 {
				t.Errorf("refused, but ran %v %v", h.luks.calls, h.runner.runs)
			}
			h.assertNothingLeft(tc.name)
		})
	}
}

func TestEnrollRollsBackEachStep(t *testing.T) {
	for _, tc := range []struct {
		step   string
		inject func(h *harness)
	}{
		{"format", func(h *harness) { h.luks.fail["Format"] = errInjected }},
		{"add key", func(h *harness) { h.luks.fail["AddKey"] = errInjected }},
		{"store key", func(h *harness) {
			// The key directory's place is taken by a file.
			if err := os.MkdirAll(filepath.Dir(h.keyDir), 0o755); err != nil {
				h.t.Fatal(err)
			}
			if err := os.WriteFile(h.keyDir, nil, 0o600); err != nil {
				h.t.Fatal(err)
			}
		}},
		{"open", func(h *harness) { h.luks.fail["Open"] = errInjected }},
		{"mkfs", func(h *harness) { h.runner.fail["mkfs.btrfs"] = errInjected }},
		{"close", func(h *harness) { h.luks.fail["Close"] = errInjected }},
		{"header backup", func(h *harness) { h.luks.fail["HeaderBackup"] = errInjected }},
		{"udev reload", func(h *harness) { h.runner.fail["udevadm control"] = errInjected }},
		{"config", func(h *harness) { h.cfg.failAppend = errInjected }},
		{"registry", func(h *harness) { h.reg.failAdd = errInjected }},
	} {
		t.Run(tc.step, func(t *testing.T) {
			h := newHarness(t)
			tc.inject(h)
			req := enrollReq()
			req.HeaderBackup = true
			_, err := h.e.Enroll(t.Context(), req)
			if err == nil {
				t.Fatal("enroll succeeded despite the failure")
			}
			if !strings.HasPrefix(err.Error(), "cannot ") {
				t.Errorf("error %q does not read \"cannot …\"", err)
			}
			if tc.step != "store key" && !errors.Is(err, errInjected) {
				t.Errorf("error %v does not carry the cause", err)
			}
			if tc.step == "close" {
				delete(h.luks.opened, "plugvault-"+testUUID) // the fake failed to close it: nothing to check
			}
			h.assertNothingLeft(tc.step)
			if tc.step != "format" && !strings.Contains(err.Error(), "formatted but not registered") {
				t.Errorf("error %q does not say the stick is formatted", err)
			}
			for _, argv := range h.runner.argvs() {
				if strings.Contains(argv, "trigger") {
					t.Errorf("a udev event was replayed for a drive that is not registered: %s", argv)
				}
			}
		})
	}
}

func TestEnrollOneAtATime(t *testing.T) {
	h := newHarness(t)
	h.e.mu.Lock() // another enrollment is running
	_, err := h.e.Enroll(t.Context(), enrollReq())
	h.e.mu.Unlock()
	if !errors.Is(err, api.ErrBusy) {
		t.Errorf("error %v, want ErrBusy", err)
	}
}

// handPrepared sets up the fake device as `cryptsetup luksFormat` + `luksAddKey` leave it:
// a passphrase in slot 0 and a keyfile in slot 1, both argon2id (or keyPBKDF).
func handPrepared(h *harness, keyPBKDF string) (pass, key []byte) {
	pass, key = []byte("hand passphrase"), []byte("hand keyfile\n\x00\xff")
	h.luks.slots = map[int][]byte{0: pass, 1: key}
	h.luks.pbkdf = map[int]string{0: "argon2id", 1: keyPBKDF}
	return pass, key
}

func TestAdopt(t *testing.T) {
	for _, tc := range []struct {
		name      string
		keyPBKDF  string
		isPass    bool
		addSlot   bool
		wantSlot  int
		wantKey   string // "secret", "new" or "none"
		wantAdded bool
	}{
		{"keyfile as is", "argon2id", false, false, 1, "secret", false},
		{"slow keyfile slot gets a fast one", "argon2id", false, true, 2, "new", true},
		{"fast keyfile slot is kept", "pbkdf2", false, true, 1, "secret", false},
		{"passphrase only", "argon2id", true, false, -1, "none", false},
		{"passphrase plus a new keyfile slot", "argon2id", true, true, 2, "new", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			pass, key := handPrepared(h, tc.keyPBKDF)
			secret := key
			if tc.isPass {
				secret = pass
			}
			uuid, err := h.e.Adopt(t.Context(), AdoptRequest{Device: "/dev/sdb1", Secret: bytes.Clone(secret),
				SecretIsPassphrase: tc.isPass, AddKeyfileSlot: tc.addSlot, Name: "hand"})
			if err != nil {
				t.Fatal(err)
			}
			if uuid != testUUID || h.luks.called("Format") != 0 {
				t.Errorf("uuid %s; Format called %d times (adopt never formats)", uuid, h.luks.called("Format"))
			}
			if (h.luks.called("AddKey") == 1) != tc.wantAdded {
				t.Errorf("AddKey called %d times", h.luks.called("AddKey"))
			}
			stored, err := os.ReadFile(h.keyPath())
			switch tc.wantKey {
			case "none":
				if err == nil {
					t.Errorf("a passphrase-only drive got a keyfile")
				}
			case "secret":
				if !bytes.Equal(stored, key) {
					t.Errorf("stored %q, want the keyfile's bytes", stored)
				}
				assertMode(t, h.keyPath(), 0o400)
			case "new":
				if len(stored) != keyLen || !bytes.Equal(stored, h.luks.slots[tc.wantSlot]) || h.luks.pbkdf[tc.wantSlot] != "pbkdf2" {
					t.Errorf("stored %x; slot %d takes %x (%s)", stored, tc.wantSlot, h.luks.slots[tc.wantSlot], h.luks.pbkdf[tc.wantSlot])
				}
				assertMode(t, h.keyPath(), 0o400)
			}
			want := config.Drive{Name: "hand", LuksUUID: testUUID, Fingerprint: fakeFingerprint, KeySlot: tc.wantSlot}
			if len(h.cfg.drives) != 1 || !driveEqual(h.cfg.drives[0], want) || !driveEqual(h.reg.drives[testUUID], want) {
				t.Errorf("config %+v registry %+v; want %+v", h.cfg.drives, h.reg.drives, want)
			}
			if !exists(h.rulePath()) {
				t.Error("no udev rule")
			}
		})
	}
}

// The seed's recipe: luksFormat with cryptsetup's defaults (argon2id), then a 1 MiB keyfile
// (dd bs=1M count=1) added with luksAddKey, so its slot is argon2id too. It is adopted in one
// step; the slow slot gets a fast one beside it. A 1 MiB keyfile in a cheap slot is kept whole.
func TestAdoptMebibyteKeyfile(t *testing.T) {
	big := bytes.Repeat([]byte{7, 0, '\n'}, (1<<20)/3+1)[:1<<20]
	for _, tc := range []struct {
		pbkdf     string
		wantAdded bool
	}{{"argon2id", true}, {"pbkdf2", false}} {
		t.Run(tc.pbkdf, func(t *testing.T) {
			h := newHarness(t)
			handPrepared(h, tc.pbkdf)
			h.luks.slots[1] = big
			uuid, err := h.e.Adopt(t.Context(), AdoptRequest{Device: "/dev/sdb1", Secret: bytes.Clone(big), AddKeyfileSlot: true})
			if err != nil {
				t.Fatal(err)
			}
			stored, err := os.ReadFile(filepath.Join(h.keyDir, uuid+".key"))
			if err != nil {
				t.Fatal(err)
			}
			if added := h.luks.called("AddKey") == 1; added != tc.wantAdded {
				t.Errorf("AddKey called %d times", h.luks.called("AddKey"))
			}
			slot := h.cfg.drives[0].KeySlot
			if tc.wantAdded && (len(stored) != keyLen || h.luks.pbkdf[slot] != "pbkdf2" || !bytes.Equal(h.luks.slots[slot], stored)) {
				t.Errorf("stored %d bytes for slot %d (%s)", len(stored), slot, h.luks.pbkdf[slot])
			}
			if !tc.wantAdded && (!bytes.Equal(stored, big) || slot != 1) {
				t.Errorf("stored %d bytes for slot %d, want the 1 MiB keyfile for slot 1", len(stored), slot)
			}
		})
	}
}

func TestAdoptRefusals(t *testing.T) {
	t.Run("wrong keyfile", func(t *testing.T) {
		h := newHarness(t)
		handPrepared(h, "argon2id")
		_, err := h.e.Adopt(t.Context(), AdoptRequest{Device: "/dev/sdb1", Secret: []byte("wrong")})
		if !errors.Is(err, api.ErrBadPassphrase) {
			t.Errorf("error %v", err)
		}
		h.assertNothingLeft("wrong keyfile")
	})
	t.Run("wrong passphrase", func(t *testing.T) {
		h := newHarness(t)
		handPrepared(h, "argon2id")
		_, err := h.e.Adopt(t.Context(), AdoptRequest{Device: "/dev/sdb1", Secret: []byte("wrong"), SecretIsPassphrase: true})
		if !errors.Is(err, api.ErrBadPassphrase) {
			t.Errorf("error %v", err)
		}
		h.assertNothingLeft("wrong passphrase")
	})
	t.Run("hostile uuid in the header", func(t *testing.T) {
		h := newHarness(t)
		_, key := handPrepared(h, "argon2id")
		h.luks.uuid = "../../../etc/shadow"
		_, err := h.e.Adopt(t.Context(), AdoptRequest{Device: "/dev/sdb1", Secret: key})
		if !errors.Is(err, api.ErrInvalidArgument) {
			t.Errorf("error %v", err)
		}
		if len(h.runner.runs) != 0 || exists(filepath.Join(h.keyDir, "..", "..", "..", "etc")) {
			t.Error("acted on a hostile UUID")
		}
	})
	t.Run("already enrolled", func(t *testing.T) {
		h := newHarness(t)
		_, key := handPrepared(h, "argon2id")
		h.cfg.drives = []config.Drive{{Name: "old", LuksUUID: testUUID}}
		_, err := h.e.Adopt(t.Context(), AdoptRequest{Device: "/dev/sdb1", Secret: key})
		if !errors.Is(err, api.ErrInvalidArgument) || !strings.Contains(err.Error(), "already enrolled") {
			t.Errorf("error %v", err)
		}
	})
	t.Run("fixed disk", func(t *testing.T) {
		h := newHarness(t)
		_, key := handPrepared(h, "argon2id")
		_, err := h.e.Adopt(t.Context(), AdoptRequest{Device: "/dev/sdc", Secret: key})
		if !errors.Is(err, api.ErrInvalidArgument) || len(h.luks.calls) != 0 {
			t.Errorf("error %v, calls %v", err, h.luks.calls)
		}
	})
}

func TestAdoptRollsBack(t *testing.T) {
	for _, tc := range []struct {
		step   string
		inject func(h *harness)
	}{
		{"add key", func(h *harness) { h.luks.fail["AddKey"] = errInjected }},
		{"udev reload", func(h *harness) { h.runner.fail["udevadm control"] = errInjected }},
		{"config", func(h *harness) { h.cfg.failAppend = errInjected }},
		{"registry", func(h *harness) { h.reg.failAdd = errInjected }},
	} {
		t.Run(tc.step, func(t *testing.T) {
			h := newHarness(t)
			_, key := handPrepared(h, "argon2id")
			tc.inject(h)
			_, err := h.e.Adopt(t.Context(), AdoptRequest{Device: "/dev/sdb1", Secret: key, AddKeyfileSlot: true})
			if !errors.Is(err, errInjected) {
				t.Fatalf("error %v", err)
			}
			h.assertNothingLeft(tc.step)
			// The slot added for plugvault is gone again; the user's own slots are untouched.
			if len(h.luks.slots) != 2 || !bytes.Equal(h.luks.slots[1], key) {
				t.Errorf("keyslots after rollback: %v", h.luks.slots)
			}
		})
	}
}

// enrolled returns a harness with one enrolled drive (as Enroll leaves it).
func enrolled(t *testing.T) *harness {
	t.Helper()
	h := newHarness(t)
	if _, err := h.e.Enroll(t.Context(), enrollReq()); err != nil {
		t.Fatal(err)
	}
	h.runner.runs = nil
	h.luks.calls = nil
	return h
}

func TestForget(t *testing.T) {
	h := enrolled(t)
	if err := h.e.Forget(t.Context(), testUUID, false); err != nil {
		t.Fatal(err)
	}
	h.assertNothingLeft("forget")
	if got := h.runner.argvs(); !slices.Equal(got, []string{"/usr/sbin/udevadm control --reload"}) {
		t.Errorf("tools run: %q", got)
	}
	if len(h.luks.slots) != 2 || h.luks.called("KillSlot") != 0 {
		t.Errorf("forget without remove_keyslot touched the header: %v", h.luks.calls)
	}
	if err := h.e.Forget(t.Context(), testUUID, false); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("forgetting twice: %v", err)
	}
}

func TestForgetRemovesTheKeyslot(t *testing.T) {
	h := enrolled(t)
	key, _ := os.ReadFile(h.keyPath())
	if err := h.e.Forget(t.Context(), testUUID, true); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.luks.slots[1]; ok || len(h.luks.slots) != 1 || h.luks.slotOf(key) >= 0 {
		t.Errorf("keyslots left: %v", h.luks.slots)
	}
	if !bytes.Equal(h.luks.slots[0], []byte("correct horse")) {
		t.Error("the passphrase slot is gone")
	}
	h.assertNothingLeft("forget --remove-keyslot")
}

func TestForgetRefusesOrRestores(t *testing.T) {
	t.Run("last keyslot", func(t *testing.T) {
		h := enrolled(t)
		delete(h.luks.slots, 0) // only the keyfile slot opens the drive
		err := h.e.Forget(t.Context(), testUUID, true)
		if !errors.Is(err, api.ErrInvalidArgument) || !strings.Contains(err.Error(), "only keyslot") {
			t.Errorf("error %v", err)
		}
		assertStillEnrolled(t, h)
	})
	t.Run("not present", func(t *testing.T) {
		h := enrolled(t)
		h.e.d.DeviceByUUID = func(string) (string, error) { return "", fmt.Errorf("not plugged in: %w", api.ErrNotPresent) }
		if err := h.e.Forget(t.Context(), testUUID, true); !errors.Is(err, api.ErrNotPresent) {
			t.Errorf("error %v", err)
		}
		assertStillEnrolled(t, h)
	})
	t.Run("registry busy", func(t *testing.T) {
		h := enrolled(t)
		h.reg.failRemove = fmt.Errorf("cannot forget a drive while it backs up: %w", api.ErrBusy)
		if err := h.e.Forget(t.Context(), testUUID, false); !errors.Is(err, api.ErrBusy) {
			t.Errorf("error %v", err)
		}
		h.reg.failRemove = nil
		assertStillEnrolled(t, h)
	})
	t.Run("config write fails", func(t *testing.T) {
		h := enrolled(t)
		h.cfg.failRemove = errInjected
		if err := h.e.Forget(t.Context(), testUUID, false); !errors.Is(err, errInjected) {
			t.Errorf("error %v", err)
		}
		assertStillEnrolled(t, h)
	})
	t.Run("kill slot fails", func(t *testing.T) {
		h := enrolled(t)
		h.luks.fail["KillSlot"] = errInjected
		if err := h.e.Forget(t.Context(), testUUID, true); !errors.Is(err, errInjected) {
			t.Errorf("error %v", err)
		}
		assertStillEnrolled(t, h)
	})
	t.Run("keyfile outside the key directory is kept", func(t *testing.T) {
		h := enrolled(t)
		own := filepath.Join(t.TempDir(), "admin.key")
		if err := os.WriteFile(own, []byte("k"), 0o400); err != nil {
			t.Fatal(err)
		}
		h.cfg.drives[0].Keyfile = own
		if err := h.e.Forget(t.Context(), testUUID, false); err != nil {
			t.Fatal(err)
		}
		if !exists(own) {
			t.Error("forget deleted a keyfile outside the key directory")
		}
	})
}

func assertStillEnrolled(t *testing.T, h *harness) {
	t.Helper()
	if len(h.cfg.drives) != 1 || len(h.reg.drives) != 1 || !exists(h.keyPath()) || !exists(h.rulePath()) || len(h.luks.slots) < 1 {
		t.Errorf("the drive is not intact: config %v registry %v key %v rule %v slots %v",
			h.cfg.drives, h.reg.drives, exists(h.keyPath()), exists(h.rulePath()), h.luks.slots)
	}
}

func TestKeyDirIsMadePrivate(t *testing.T) {
	h := newHarness(t)
	if err := os.MkdirAll(h.keyDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(h.keyDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := h.e.Enroll(t.Context(), enrollReq()); err != nil {
		t.Fatal(err)
	}
	assertMode(t, h.keyDir, 0o700|os.ModeDir)

	h2 := newHarness(t)
	target := t.TempDir()
	if err := os.MkdirAll(filepath.Dir(h2.keyDir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, h2.keyDir); err != nil {
		t.Fatal(err)
	}
	if _, err := h2.e.Enroll(t.Context(), enrollReq()); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Errorf("a symlinked key directory was used: %v", err)
	}
	if entries, _ := os.ReadDir(target); len(entries) != 0 {
		t.Errorf("a key was written through the symlink")
	}
}

func TestMkfsArgsRejectOptionLikeLabels(t *testing.T) {
	for _, l := range []string{"-f", "", "a b", "seventeen-chars-x", "a\n"} {
		if _, err := mkfsArgs("btrfs", l, "/dev/mapper/x"); err == nil {
			t.Errorf("label %q accepted", l)
		}
	}
	if _, err := mkfsArgs("xfs", "ok", "/dev/mapper/x"); err == nil {
		t.Error("xfs accepted")
	}
}

func TestEnrollRefusesAnEnrolledDrive(t *testing.T) {
	h := enrolled(t)
	_, err := h.e.Enroll(t.Context(), enrollReq())
	if !errors.Is(err, api.ErrInvalidArgument) || !strings.Contains(err.Error(), "forget the drive first") {
		t.Errorf("error %v", err)
	}
	if h.luks.called("Format") != 0 {
		t.Error("an enrolled drive was formatted again")
	}
	assertStillEnrolled(t, h)
}

func TestEnrollSurvivesAFailedEventReplay(t *testing.T) {
	h := newHarness(t)
	h.runner.fail["udevadm trigger"] = errInjected
	if _, err := h.e.Enroll(t.Context(), enrollReq()); err != nil {
		t.Fatalf("a failed udevadm trigger failed the enrollment: %v", err)
	}
	if len(h.reg.drives) != 1 || !exists(h.rulePath()) || !exists(h.keyPath()) {
		t.Error("the drive is not fully enrolled")
	}
}

func TestNewDriveDefaultsToTheCallersHome(t *testing.T) {
	for _, c := range []struct {
		name    string
		caller  drive.Caller
		runAs   string
		sources []string
	}{
		{"user", drive.Caller{UID: 1000, User: "alice", Home: "/home/alice/"}, "alice", []string{"/home/alice"}},
		{"root", drive.Caller{UID: 0, User: "root", Home: "/root"}, "", nil},
		{"no home", drive.Caller{UID: 1001, User: "svc", Home: "/"}, "", nil},
		{"relative home", drive.Caller{UID: 1002, User: "odd", Home: "home/odd"}, "", nil},
	} {
		d := newDrive("blue", "11111111-2222-3333-4444-555555555555", 1, c.caller)
		if d.RunAs != c.runAs || !slices.Equal(d.Sources, c.sources) || d.KeySlot != 1 || d.Name != "blue" {
			t.Errorf("%s: newDrive = %+v, want run_as %q sources %v", c.name, d, c.runAs, c.sources)
		}
	}
}
