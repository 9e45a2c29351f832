package luks

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/sysexec"
)

// recordingRunner stands in for sysexec.Exec running cryptsetup: it records argv, the exact
// stdin bytes and the bytes of each inherited fd, and answers from a script.
type recordingRunner struct {
	mu    sync.Mutex
	calls []call
	// answer returns what "cryptsetup" prints and how it exits (nil = exit 0).
	answer func(args []string) (sysexec.Result, error)
}

type call struct {
	path  string
	args  []string
	stdin []byte
	fds   [][]byte
}

// dmsetupPath is where the fake finds dmsetup; its answers come from the same script.
const dmsetupPath = "/usr/sbin/dmsetup"

func (r *recordingRunner) Run(ctx context.Context, c sysexec.Cmd) (sysexec.Result, error) {
	rec := call{path: c.Path, args: append([]string(nil), c.Args...)}
	if c.Stdin != nil {
		rec.stdin, _ = io.ReadAll(c.Stdin)
	}
	for _, f := range c.ExtraFiles {
		b, _ := io.ReadAll(f)
		rec.fds = append(rec.fds, b)
	}
	r.mu.Lock()
	r.calls = append(r.calls, rec)
	r.mu.Unlock()
	if c.Path != "/usr/sbin/cryptsetup" && c.Path != dmsetupPath {
		return sysexec.Result{}, errors.New("wrong tool path " + c.Path)
	}
	if len(c.Args) == 1 && c.Args[0] == "--version" {
		return sysexec.Result{Stdout: []byte("cryptsetup 2.6.1 flags: UDEV BLKID KEYRING KERNEL_CAPI \n")}, nil
	}
	if r.answer == nil {
		return sysexec.Result{}, nil
	}
	return r.answer(c.Args)
}

func exit(code int, stderr string) error {
	return &sysexec.ExitError{Tool: "/usr/sbin/cryptsetup", Code: code, Stderr: stderr}
}

const (
	testUUID = "2f8c6bd5-7a0e-4c7e-9a55-0c1d3e9f7b21"
	testName = "plugvault-" + testUUID
)

func newFake(t *testing.T, answer func([]string) (sysexec.Result, error)) (*Cryptsetup, *recordingRunner) {
	t.Helper()
	r := &recordingRunner{answer: answer}
	c, err := NewAt(r, "/usr/sbin/cryptsetup")
	if err != nil {
		t.Fatal(err)
	}
	if c.Version() != "2.6.1" {
		t.Fatalf("version %q", c.Version())
	}
	// /dev/sdb may not exist here: accept it by shape only.
	c.validateDevice = func(p string) error { return checkDevicePath(p, "/dev") }
	r.calls = nil
	return c, r
}

// assertNoKeyInArgv fails if any recorded argv contains the key (or a long piece of it).
func assertNoKeyInArgv(t *testing.T, r *recordingRunner, keys ...string) {
	t.Helper()
	for _, c := range r.calls {
		joined := strings.Join(c.args, "\x00")
		for _, k := range keys {
			if strings.Contains(joined, k) {
				t.Errorf("a key appears in argv %q", c.args)
			}
		}
	}
}

func TestOpenPassesKeyOnStdinOnly(t *testing.T) {
	c, r := newFake(t, nil)
	key := []byte("correct horse\nbattery staple\n") // newlines are part of the key
	if err := c.Open(context.Background(), "/dev/sdb", testName, key, 1, false); err != nil {
		t.Fatal(err)
	}
	if len(r.calls) != 1 {
		t.Fatalf("calls: %+v", r.calls)
	}
	got := r.calls[0]
	if strings.Join(got.args, " ") != "open --type=luks --key-file=- --key-slot=1 --disable-external-tokens -- /dev/sdb "+testName {
		t.Errorf("argv %q", got.args)
	}
	if string(got.stdin) != string(key) {
		t.Errorf("stdin %q, want the exact key bytes", got.stdin)
	}
	assertNoKeyInArgv(t, r, "correct horse", "battery")
}

func TestCloseAndActive(t *testing.T) {
	active := true
	c, r := newFake(t, func(args []string) (sysexec.Result, error) {
		if args[0] == "status" && !active {
			return sysexec.Result{}, exit(4, "")
		}
		return sysexec.Result{}, nil
	})
	ctx := context.Background()
	if ok, err := c.Active(ctx, testName); err != nil || !ok {
		t.Errorf("Active = %v, %v", ok, err)
	}
	active = false
	if ok, err := c.Active(ctx, testName); err != nil || ok {
		t.Errorf("Active = %v, %v", ok, err)
	}
	if err := c.Close(ctx, testName, true); err != nil {
		t.Fatal(err)
	}
	last := r.calls[len(r.calls)-1]
	if strings.Join(last.args, " ") != "close --deferred -- "+testName || last.stdin != nil {
		t.Errorf("close call %+v", last)
	}
}

// TestCloseRemovesAStaleDevice: a device cryptsetup calls not active although it holds the
// mapping's name (an open killed before it loaded the table) is removed with dmsetup; a
// deferred close and a missing dmsetup leave cryptsetup's answer as it is.
func TestCloseRemovesAStaleDevice(t *testing.T) {
	for _, tc := range []struct {
		name     string
		deferred bool
		dmsetup  string
		removed  bool // dmsetup remove succeeds
		want     error
		calls    []string
	}{
		{"stale device", false, dmsetupPath, true, nil,
			[]string{"/usr/sbin/cryptsetup close -- " + testName, dmsetupPath + " remove -- " + testName}},
		{"no device at all", false, dmsetupPath, false, ErrNoDevice,
			[]string{"/usr/sbin/cryptsetup close -- " + testName, dmsetupPath + " remove -- " + testName}},
		{"deferred", true, dmsetupPath, true, ErrNoDevice,
			[]string{"/usr/sbin/cryptsetup close --deferred -- " + testName}},
		{"no dmsetup", false, "", true, ErrNoDevice,
			[]string{"/usr/sbin/cryptsetup close -- " + testName}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, r := newFake(t, func(args []string) (sysexec.Result, error) {
				if args[0] == "remove" {
					if tc.removed {
						return sysexec.Result{}, nil
					}
					return sysexec.Result{}, &sysexec.ExitError{Tool: dmsetupPath, Code: 1, Stderr: "No such device or address"}
				}
				return sysexec.Result{}, exit(4, "Device "+testName+" is not active.")
			})
			c.dmsetup = tc.dmsetup
			err := c.Close(context.Background(), testName, tc.deferred)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Close = %v, want %v", err, tc.want)
			}
			var got []string
			for _, cl := range r.calls {
				got = append(got, cl.path+" "+strings.Join(cl.args, " "))
			}
			if strings.Join(got, "\n") != strings.Join(tc.calls, "\n") {
				t.Errorf("ran %q, want %q", got, tc.calls)
			}
		})
	}
}

func TestExitCodesMapToErrors(t *testing.T) {
	for code, want := range map[int]error{2: ErrBadKey, 4: ErrNoDevice, 5: ErrBusy} {
		c, _ := newFake(t, func([]string) (sysexec.Result, error) { return sysexec.Result{}, exit(code, "message from cryptsetup") })
		err := c.Open(context.Background(), "/dev/sdb", testName, []byte("k"), -1, false)
		if !errors.Is(err, want) {
			t.Errorf("exit %d: got %v, want %v", code, err, want)
		}
		if !strings.HasPrefix(err.Error(), "cannot open /dev/sdb as "+testName) || !strings.Contains(err.Error(), "message from cryptsetup") {
			t.Errorf("exit %d: message %q", code, err)
		}
	}
	c, _ := newFake(t, func([]string) (sysexec.Result, error) { return sysexec.Result{}, exit(2, "") })
	err := c.TestKey(context.Background(), "/dev/sdb", []byte("k"), 0)
	if !errors.Is(err, api.ErrBadPassphrase) {
		t.Errorf("ErrBadKey must wrap api.ErrBadPassphrase: %v", err)
	}
	c, _ = newFake(t, func([]string) (sysexec.Result, error) { return sysexec.Result{}, exit(5, "") })
	if err := c.Close(context.Background(), testName, false); !errors.Is(err, api.ErrBusy) {
		t.Errorf("ErrBusy must wrap api.ErrBusy: %v", err)
	}
	c, _ = newFake(t, func([]string) (sysexec.Result, error) { return sysexec.Result{}, exit(1, "") })
	if err := c.Close(context.Background(), testName, false); err == nil || errors.Is(err, ErrBusy) || errors.Is(err, ErrNoDevice) || errors.Is(err, ErrBadKey) {
		t.Errorf("exit 1 must be a plain error: %v", err)
	}
}

func TestValidationBeforeRunning(t *testing.T) {
	c, r := newFake(t, nil)
	ctx := context.Background()
	c.validateDevice = checkDevice // the production check
	errs := []error{
		c.Open(ctx, "/dev/../etc/shadow", testName, []byte("k"), -1, false),
		c.Open(ctx, "-/dev/sdb", testName, []byte("k"), -1, false),
		c.Open(ctx, "/dev/sdb", "root", []byte("k"), -1, false),
		c.Open(ctx, "/dev/sdb", testName, nil, -1, false),
		c.Open(ctx, "/dev/sdb", testName, []byte("k"), 32, false),
		c.Open(ctx, "/dev/sdb", testName, make([]byte, maxKeySize+1), 0, false),
		c.TestKey(ctx, "/tmp/x", []byte("k"), -1),
		c.Close(ctx, "--help", false),
		c.KillSlot(ctx, "/dev/sdb", -1, []byte("k")),
	}
	for i, err := range errs {
		if err == nil {
			t.Errorf("case %d accepted", i)
		}
	}
	if _, err := c.Format(ctx, "/dev/null", []byte("pw"), ""); err == nil {
		t.Error("a character device must be refused")
	}
	if len(r.calls) != 0 {
		t.Errorf("cryptsetup ran for invalid input: %+v", r.calls)
	}
	if err := c.SetPassphrasePBKDF(PBKDF{Type: "pbkdf2", Iterations: 10}); err == nil {
		t.Error("10 pbkdf2 iterations accepted")
	}
	if err := c.SetPassphrasePBKDF(PBKDF{Type: "md5"}); err == nil {
		t.Error("an unknown pbkdf accepted")
	}
}

// dumpWith returns a fake LUKS2 JSON dump with the given slots.
func dumpWith(slots ...string) []byte {
	var parts []string
	for _, s := range slots {
		parts = append(parts, `"`+s+`":{"type":"luks2","kdf":{"type":"pbkdf2","iterations":1000}}`)
	}
	return []byte(`{"keyslots":{` + strings.Join(parts, ",") + `}}`)
}

// newAddKeyFake returns a fake cryptsetup whose header has slot 0, and slot 1 after luksAddKey.
func newAddKeyFake(t *testing.T) (*Cryptsetup, *recordingRunner) {
	added := false
	return newFake(t, func(args []string) (sysexec.Result, error) {
		switch args[0] {
		case "luksDump":
			if added {
				return sysexec.Result{Stdout: dumpWith("0", "1")}, nil
			}
			return sysexec.Result{Stdout: dumpWith("0")}, nil
		case "luksAddKey":
			added = true
		}
		return sysexec.Result{}, nil
	})
}

func TestAddKeySendsNewKeyOnFd3(t *testing.T) {
	c, r := newAddKeyFake(t)
	slot, err := c.AddKey(context.Background(), "/dev/sdb", []byte("old pass"), []byte("NEWKEY\x00\xffbytes"), true)
	if err != nil || slot != 1 {
		t.Fatalf("slot %d, %v", slot, err)
	}
	var add *call
	for i := range r.calls {
		if r.calls[i].args[0] == "luksAddKey" {
			add = &r.calls[i]
		}
	}
	if add == nil {
		t.Fatal("luksAddKey not run")
	}
	if string(add.stdin) != "old pass" || len(add.fds) != 1 || string(add.fds[0]) != "NEWKEY\x00\xffbytes" {
		t.Errorf("stdin %q fds %q", add.stdin, add.fds)
	}
	assertNoKeyInArgv(t, r, "old pass", "NEWKEY")
}

// A keyfile made with dd bs=1M count=1 is far larger than a pipe's buffer: both keys must
// reach cryptsetup whole (the existing one on stdin, the new one on fd 3).
func TestAddKeyTakesMebibyteKeys(t *testing.T) {
	c, r := newAddKeyFake(t)
	existing := bytes.Repeat([]byte("old key\x00"), (1<<20)/8)
	newKey := bytes.Repeat([]byte("NEW\xff"), (1<<20)/4+1)
	slot, err := c.AddKey(context.Background(), "/dev/sdb", existing, newKey, true)
	if err != nil || slot != 1 {
		t.Fatalf("slot %d, %v", slot, err)
	}
	add := r.calls[len(r.calls)-2]
	if add.args[0] != "luksAddKey" || !bytes.Equal(add.stdin, existing) || len(add.fds) != 1 || !bytes.Equal(add.fds[0], newKey) {
		t.Errorf("%v: stdin %d bytes, fds %d; want %d and one of %d", add.args, len(add.stdin), len(add.fds), len(existing), len(newKey))
	}
	if err := c.TestKey(context.Background(), "/dev/sdb", make([]byte, maxKeySize), 0); err != nil {
		t.Errorf("a key of cryptsetup's limit (%d bytes) refused: %v", maxKeySize, err)
	}
}

// A cryptsetup that fails before reading fd 3 must not leave AddKey blocked on a full pipe.
func TestAddKeyReturnsWhenTheNewKeyIsNotRead(t *testing.T) {
	c, _ := newFake(t, func(args []string) (sysexec.Result, error) {
		switch args[0] {
		case "luksDump":
			return sysexec.Result{Stdout: dumpWith("0")}, nil
		case "luksAddKey":
			return sysexec.Result{}, exit(2, "No key available with this passphrase.")
		}
		return sysexec.Result{}, nil
	})
	c.run = unreadFds{c.run}
	if _, err := c.AddKey(context.Background(), "/dev/sdb", []byte("wrong"), make([]byte, 1<<20), true); !errors.Is(err, ErrBadKey) {
		t.Errorf("error %v, want ErrBadKey", err)
	}
}

// unreadFds passes a command on with its inherited fds unread, as a cryptsetup that exits
// before reading its new key.
type unreadFds struct{ next sysexec.Runner }

func (u unreadFds) Run(ctx context.Context, c sysexec.Cmd) (sysexec.Result, error) {
	c.ExtraFiles = nil
	return u.next.Run(ctx, c)
}

func TestKillSlotChecksTheKeyAgainstOtherSlots(t *testing.T) {
	var tested []string
	c, r := newFake(t, func(args []string) (sysexec.Result, error) {
		switch args[0] {
		case "luksDump":
			return sysexec.Result{Stdout: dumpWith("0", "1", "2")}, nil
		case "open":
			tested = append(tested, args[4])
			if args[4] == "--key-slot=2" {
				return sysexec.Result{}, nil
			}
			return sysexec.Result{}, exit(2, "No key available with this passphrase.")
		}
		return sysexec.Result{}, nil
	})
	if err := c.KillSlot(context.Background(), "/dev/sdb", 1, []byte("slot2key")); err != nil {
		t.Fatal(err)
	}
	if strings.Join(tested, " ") != "--key-slot=0 --key-slot=2" {
		t.Errorf("tested %v: the slot being removed must not authorize its removal", tested)
	}
	last := r.calls[len(r.calls)-1]
	if strings.Join(last.args, " ") != "luksKillSlot --key-file=- --disable-external-tokens -- /dev/sdb 1" || string(last.stdin) != "slot2key" {
		t.Errorf("kill call %+v", last)
	}
	assertNoKeyInArgv(t, r, "slot2key")
}

func TestKillSlotRefusals(t *testing.T) {
	c, r := newFake(t, func(args []string) (sysexec.Result, error) {
		switch args[0] {
		case "luksDump":
			return sysexec.Result{Stdout: dumpWith("0")}, nil
		}
		return sysexec.Result{}, exit(2, "")
	})
	if err := c.KillSlot(context.Background(), "/dev/sdb", 0, []byte("k")); err == nil || !strings.Contains(err.Error(), "last one") {
		t.Errorf("the last slot was not refused: %v", err)
	}
	if err := c.KillSlot(context.Background(), "/dev/sdb", 3, []byte("k")); !errors.Is(err, ErrNoSlot) {
		t.Errorf("an unused slot: %v", err)
	}
	for _, cl := range r.calls {
		if cl.args[0] == "luksKillSlot" {
			t.Errorf("luksKillSlot ran: %v", cl.args)
		}
	}
}

// HeaderBackup runs luksHeaderBackup only on a checked device and an absolute clean file, and
// maps cryptsetup's exit status like every other call.
func TestHeaderBackup(t *testing.T) {
	c, r := newFake(t, nil)
	if err := c.HeaderBackup(context.Background(), "/dev/sdb", "/run/plugvault-header-1/header"); err != nil {
		t.Fatal(err)
	}
	if len(r.calls) != 1 || strings.Join(r.calls[0].args, " ") != strings.Join(headerBackupArgs("/dev/sdb", "/run/plugvault-header-1/header"), " ") {
		t.Errorf("ran %v", r.calls)
	}
	r.calls = nil
	for _, bad := range [][2]string{
		{"/dev/sdb", "header"}, {"/dev/sdb", "/run/../etc/shadow"}, {"/dev/sdb", ""}, {"/dev/sdb", "-"},
		{"sdb", "/run/x/header"}, {"/etc/shadow", "/run/x/header"}, {"/dev/../etc/shadow", "/run/x/header"},
	} {
		if err := c.HeaderBackup(context.Background(), bad[0], bad[1]); err == nil {
			t.Errorf("HeaderBackup(%q, %q) accepted", bad[0], bad[1])
		}
	}
	if len(r.calls) != 0 {
		t.Errorf("cryptsetup ran for refused arguments: %v", r.calls)
	}
	c, _ = newFake(t, func([]string) (sysexec.Result, error) {
		return sysexec.Result{}, exit(4, "Device /dev/sdb is not a valid LUKS device.")
	})
	if err := c.HeaderBackup(context.Background(), "/dev/sdb", "/run/x/header"); !errors.Is(err, ErrNoDevice) {
		t.Errorf("exit 4: %v, want ErrNoDevice", err)
	}
}
