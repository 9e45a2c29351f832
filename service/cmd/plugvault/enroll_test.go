package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/apitest"
)

func TestEnrollScripted(t *testing.T) {
	e := newEnv(t)
	dev := e.addFakeDisk("sdz", true, "usb")
	hb := filepath.Join(t.TempDir(), "blue.header")
	code, out, errOut := e.run("pass phrase\n", "enroll", dev, "--yes", "--passphrase-stdin", "--name", "blue",
		"--label", "BLUE", "--filesystem", "ext4", "--header-backup", hb, "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	c := e.lastCall(api.MethodEnroll)
	if c.Args[0] != dev || string(c.Args[1].([]byte)) != "pass phrase" || c.Interactive {
		t.Errorf("Enroll call %v (interactive %v)", c, c.Interactive)
	}
	want := map[string]any{api.OptName: "blue", api.OptLabel: "BLUE", api.OptFilesystem: "ext4", api.OptHeaderBackup: true, api.OptNoUserInteraction: true}
	got := callOpts(t, c)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("option %s = %v, want %v", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("options %v, want %v", got, want)
	}
	var doc driveDoc
	if json.Unmarshal([]byte(out), &doc) != nil || doc.Drive != string(api.DrivePath("enrolled")) {
		t.Errorf("enroll --json = %q", out)
	}
	// The CLI stores the header backup that came back, in a new file of its own.
	if b, err := os.ReadFile(hb); err != nil || !bytes.Equal(b, apitest.FakeHeaderBackup) {
		t.Errorf("header backup file holds %q, %v; want %q", b, err, apitest.FakeHeaderBackup)
	}
	if fi, err := os.Lstat(hb); err != nil || fi.Mode() != 0o600 || int(fi.Sys().(*syscall.Stat_t).Uid) != os.Getuid() {
		t.Errorf("header backup file %v, %v; want a regular file of ours, 0600", fi, err)
	}
	// What will be destroyed, read from sysfs and the udev database.
	for _, s := range []string{"DESTROYS everything on " + dev, "SanDisk Ultra", "serial 4C530001", "30.8 GB", "USB", "removable",
		"sdz1", `vfat labelled "MYSTICK"`} {
		if !strings.Contains(errOut, s) {
			t.Errorf("the warning lacks %q:\n%s", s, errOut)
		}
	}

	// A /dev/disk/by-id style symlink is resolved to the device node.
	link := filepath.Join(e.devRoot, "disk", "by-id", "usb-SanDisk_Ultra")
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../sdz", link); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := e.run("pw\n", "enroll", link, "--yes", "--passphrase-stdin"); code != 0 || e.lastCall(api.MethodEnroll).Args[0] != dev {
		t.Errorf("symlink: exit %d (%s), device %v", code, errOut, e.lastCall(api.MethodEnroll).Args[0])
	}
}

func TestEnrollRefusals(t *testing.T) {
	e := newEnv(t)
	dev := e.addFakeDisk("sdz", false, "ata")
	n := len(e.fake.Calls())
	for _, tc := range []struct {
		stdin string
		args  []string
		code  int
		msg   string
	}{
		{"", []string{"enroll", dev}, exitUsage, "without confirmation"},
		{"pw\n", []string{"enroll", dev, "--passphrase-stdin"}, exitUsage, "without confirmation"},
		{"pw\n", []string{"enroll", dev + "1", "--yes", "--passphrase-stdin"}, exitUsage, "is a partition"},
		{"pw\n", []string{"enroll", dev, "--yes", "--passphrase-stdin", "--filesystem", "xfs"}, exitUsage, "btrfs or ext4"},
		{"\n", []string{"enroll", dev, "--yes", "--passphrase-stdin"}, exitUsage, "empty"},
		{"pw\n", []string{"enroll", dev, "--yes"}, exitUsage, "not a terminal"},
		{"pw\n", []string{"enroll", filepath.Join(e.devRoot, "sdy"), "--yes", "--passphrase-stdin"}, exitNotFound, "cannot find device"},
		{"pw\n", []string{"enroll", "/etc/passwd", "--yes", "--passphrase-stdin"}, exitUsage, "not a device node"},
		{"pw\n", []string{"enroll"}, exitUsage, "exactly one DEVICE"},
	} {
		code, _, errOut := e.run(tc.stdin, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.msg) {
			t.Errorf("%v: exit %d, %q; want exit %d and %q", tc.args, code, errOut, tc.code, tc.msg)
		}
	}
	for _, c := range e.fake.Calls()[n:] {
		if c.Method == api.MethodEnroll {
			t.Errorf("a refused enroll reached the daemon: %v", c)
		}
	}
	// A disk that is neither removable nor USB gets a warning (the daemon refuses it).
	_, _, errOut := e.run("pw\n", "enroll", dev, "--yes", "--passphrase-stdin")
	if !strings.Contains(errOut, "does not look like a removable USB disk") {
		t.Errorf("no warning for a fixed disk:\n%s", errOut)
	}
}

func TestEnrollOnTerminal(t *testing.T) {
	e := newEnv(t)
	dev := e.addFakeDisk("sdz", true, "usb")
	master, slave := openPTY(t)
	type step struct{ prompt, input string }
	for _, tc := range []struct {
		name  string
		steps []step
		code  int
		pass  string // "" = no Enroll call
	}{
		{"wrong device name", []step{{`Type "sdz" to format it: `, "sdb\n"}}, exitCancelled, ""},
		{"passphrases differ", []step{{`Type "sdz" to format it: `, "sdz\n"}, {"New passphrase for the drive: ", "one\n"}, {"Repeat the passphrase: ", "two\n"}}, exitUsage, ""},
		{"confirmed", []step{{`Type "sdz" to format it: `, "sdz\n"}, {"New passphrase for the drive: ", "tw0 words\n"}, {"Repeat the passphrase: ", "tw0 words\n"}}, 0, "tw0 words"},
	} {
		n := len(e.fake.Calls())
		stderr := newSyncBuffer()
		var stdout strings.Builder
		done := e.runAsync(t.Context(), slave, &stdout, stderr, "enroll", dev)
		for _, s := range tc.steps {
			stderr.waitFor(t, s.prompt, 1)
			if _, err := master.Write([]byte(s.input)); err != nil {
				t.Fatal(err)
			}
		}
		if code := waitCode(t, done); code != tc.code {
			t.Errorf("%s: exit %d, want %d: %s", tc.name, code, tc.code, stderr.String())
		}
		var enrolls int
		for _, c := range e.fake.Calls()[n:] {
			if c.Method == api.MethodEnroll {
				enrolls++
				if string(c.Args[1].([]byte)) != tc.pass || !c.Interactive {
					t.Errorf("%s: Enroll got %q interactive=%v", tc.name, c.Args[1], c.Interactive)
				}
			}
		}
		if (enrolls == 1) != (tc.pass != "") || enrolls > 1 {
			t.Errorf("%s: %d Enroll calls", tc.name, enrolls)
		}
		if echo := echoed(t, master, slave); strings.Contains(echo, "tw0") || strings.Contains(echo, "one") {
			t.Errorf("%s: a passphrase was echoed: %q", tc.name, echo)
		}
	}
}

func TestAdopt(t *testing.T) {
	e := newEnv(t)
	dev := e.addFakeDisk("sdz", true, "usb")
	key := filepath.Join(t.TempDir(), "stick.key")
	keyBytes := []byte("k\x00\xff\nkey\n")
	if err := os.WriteFile(key, keyBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		stdin  string
		args   []string
		secret string
		isPass bool
		add    bool
	}{
		{"", []string{"adopt", dev + "1", "--key-file", key, "--name", "blue"}, string(keyBytes), false, true},
		{"", []string{"adopt", dev + "1", "--key-file", key, "--add-keyfile-slot"}, string(keyBytes), false, true},
		{"", []string{"adopt", dev + "1", "--key-file", key, "--keep-slot"}, string(keyBytes), false, false},
		{"raw\nkey\n", []string{"adopt", dev, "--key-file", "-"}, "raw\nkey\n", false, true},
		{"my pass\n", []string{"adopt", dev, "--passphrase", "--passphrase-stdin"}, "my pass", true, false},
		{"my pass\n", []string{"adopt", dev, "--passphrase", "--passphrase-stdin", "--add-keyfile-slot"}, "my pass", true, true},
	} {
		code, out, errOut := e.run(tc.stdin, append(tc.args, "--json")...)
		if code != 0 {
			t.Errorf("%v: exit %d: %s", tc.args, code, errOut)
			continue
		}
		c := e.lastCall(api.MethodAdopt)
		o := callOpts(t, c)
		if c.Args[0] != tc.args[1] || string(c.Args[1].([]byte)) != tc.secret || o[api.OptSecretIsPassphrase] != tc.isPass || o[api.OptAddKeyfileSlot] != tc.add {
			t.Errorf("%v: Adopt got %q %q %v", tc.args, c.Args[0], c.Args[1], o)
		}
		if slicesContain(tc.args, "--name") && o[api.OptName] != "blue" {
			t.Errorf("%v: name option %v", tc.args, o[api.OptName])
		}
		var doc driveDoc
		if json.Unmarshal([]byte(out), &doc) != nil || doc.Drive != string(api.DrivePath("adopted")) {
			t.Errorf("adopt --json = %q", out)
		}
	}
	n := len(e.fake.Calls())
	for _, args := range [][]string{
		{"adopt", dev},
		{"adopt", dev, "--key-file", key, "--passphrase"},
		{"adopt", dev, "--key-file", key, "--add-keyfile-slot", "--keep-slot"},
		{"adopt", dev, "--key-file", key, "--passphrase-stdin"},
		{"adopt", dev, "--key-file", t.TempDir()},
	} {
		if code, _, _ := e.run("", args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
	}
	if code, _, _ := e.run("", "adopt", dev, "--key-file", key+".missing"); code != exitFailed {
		t.Errorf("missing keyfile: exit %d", code)
	}
	for _, c := range e.fake.Calls()[n:] {
		if c.Method == api.MethodAdopt {
			t.Errorf("a refused adopt reached the daemon: %v", c)
		}
	}
	e.fake.FailNext(api.MethodAdopt, errorf("cannot adopt: the keyfile does not open %s: %w", dev, api.ErrBadPassphrase))
	if code, _, _ := e.run("", "adopt", dev, "--key-file", key); code != exitBadPassphrase {
		t.Errorf("wrong keyfile: exit %d", code)
	}
}

func TestForgetConfirmation(t *testing.T) {
	e := newEnv(t)
	blue := e.fake.AddDrive(t, blueStatus)
	if code, _, errOut := e.run("", "forget", "blue"); code != exitUsage || !strings.Contains(errOut, "--yes") || e.called(api.MethodForget) {
		t.Errorf("forget without terminal or --yes: exit %d, %q", code, errOut)
	}
	master, slave := openPTY(t)
	for _, tc := range []struct {
		input string
		code  int
	}{{"green\n", exitCancelled}, {"blue\n", 0}} {
		stderr := newSyncBuffer()
		var stdout strings.Builder
		done := e.runAsync(t.Context(), slave, &stdout, stderr, "forget", "--remove-keyslot")
		stderr.waitFor(t, `Type "blue" to forget it: `, 1)
		if _, err := master.Write([]byte(tc.input)); err != nil {
			t.Fatal(err)
		}
		if code := waitCode(t, done); code != tc.code {
			t.Errorf("typed %q: exit %d, want %d: %s", tc.input, code, tc.code, stderr.String())
		}
		if !strings.Contains(stderr.String(), "also removed from the drive's LUKS header") {
			t.Errorf("the keyslot removal is not announced: %s", stderr.String())
		}
	}
	calls := 0
	for _, c := range e.fake.Calls() {
		if c.Method == api.MethodForget {
			calls++
			if c.Args[0] != blue || !c.Interactive || callOpts(t, c)[api.OptRemoveKeyslot] != true {
				t.Errorf("Forget call %v interactive=%v", c, c.Interactive)
			}
		}
	}
	if calls != 1 {
		t.Errorf("%d Forget calls, want 1 (only the confirmed one)", calls)
	}
}

// On a terminal, a keyfile adopt asks nothing (a slow slot gets a fast one, and the output
// says so); a passphrase adopt asks whether to add a keyfile slot.
func TestAdoptOnTerminal(t *testing.T) {
	e := newEnv(t)
	dev := e.addFakeDisk("sdz", true, "usb")
	key := filepath.Join(t.TempDir(), "stick.key")
	if err := os.WriteFile(key, []byte("k"), 0o600); err != nil {
		t.Fatal(err)
	}
	master, slave := openPTY(t)
	stderr := newSyncBuffer()
	var stdout strings.Builder
	done := e.runAsync(t.Context(), slave, &stdout, stderr, "adopt", dev, "--key-file", key)
	if code := waitCode(t, done); code != 0 {
		t.Fatalf("keyfile adopt: exit %d: %s", code, stderr.String())
	}
	if c := e.lastCall(api.MethodAdopt); callOpts(t, c)[api.OptAddKeyfileSlot] != true || !c.Interactive {
		t.Errorf("keyfile adopt: options %v interactive=%v", callOpts(t, c), c.Interactive)
	}
	if !strings.Contains(stderr.String(), "adds a fast keyfile slot") || strings.Contains(stderr.String(), "[Y/n]") {
		t.Errorf("keyfile adopt output %q: want the fast slot announced and no question", stderr.String())
	}
	for _, tc := range []struct {
		answer string
		want   bool
	}{{"\n", true}, {"y\n", true}, {"n\n", false}} {
		stderr := newSyncBuffer()
		var stdout strings.Builder
		done := e.runAsync(t.Context(), slave, &stdout, stderr, "adopt", dev, "--passphrase")
		stderr.waitFor(t, "Passphrase of ", 1)
		if _, err := master.Write([]byte("my pass\n")); err != nil {
			t.Fatal(err)
		}
		stderr.waitFor(t, "without the passphrase? [Y/n] ", 1)
		if _, err := master.Write([]byte(tc.answer)); err != nil {
			t.Fatal(err)
		}
		if code := waitCode(t, done); code != 0 {
			t.Fatalf("answer %q: exit %d: %s", tc.answer, code, stderr.String())
		}
		if c := e.lastCall(api.MethodAdopt); callOpts(t, c)[api.OptAddKeyfileSlot] != tc.want || !c.Interactive {
			t.Errorf("answer %q: options %v interactive=%v", tc.answer, callOpts(t, c), c.Interactive)
		}
	}
}

// --header-backup never touches what is already there: an existing file, a symlink to one or
// a dangling symlink is refused before the daemon is called, and stays as it was. When
// Enroll fails, the file the CLI created is removed again.
func TestEnrollHeaderBackupFile(t *testing.T) {
	e := newEnv(t)
	dev := e.addFakeDisk("sdz", true, "usb")
	dir := t.TempDir()
	existing := filepath.Join(dir, "existing")
	if err := os.WriteFile(existing, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	toExisting := filepath.Join(dir, "to-existing")
	dangling := filepath.Join(dir, "dangling")
	for link, target := range map[string]string{toExisting: existing, dangling: filepath.Join(dir, "nowhere")} {
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}
	n := len(e.fake.Calls())
	for _, path := range []string{existing, toExisting, dangling} {
		code, _, errOut := e.run("pw\n", "enroll", dev, "--yes", "--passphrase-stdin", "--header-backup", path)
		if code != exitUsage || !strings.Contains(errOut, "already exists") {
			t.Errorf("%s: exit %d, %q; want a usage error saying it exists", path, code, errOut)
		}
	}
	for _, c := range e.fake.Calls()[n:] {
		if c.Method == api.MethodEnroll {
			t.Errorf("a refused enroll reached the daemon: %v", c)
		}
	}
	if b, err := os.ReadFile(existing); err != nil || string(b) != "keep" {
		t.Errorf("the existing file now holds %q, %v", b, err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "nowhere")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the dangling symlink was followed: %v", err)
	}

	// The name is taken between the first check and the creation: O_EXCL|O_NOFOLLOW.
	for _, path := range []string{existing, toExisting, dangling} {
		if hf, err := createHeaderFile(path); err == nil || hf != nil {
			t.Errorf("%s: created over what exists", path)
		}
	}
	if b, err := os.ReadFile(existing); err != nil || string(b) != "keep" {
		t.Errorf("the existing file now holds %q, %v", b, err)
	}

	// Enroll fails: no empty file is left behind.
	e.fake.FailNext(api.MethodEnroll, fmt.Errorf("cannot enroll: %w", api.ErrBusy))
	defer e.fake.FailNext(api.MethodEnroll, nil)
	hb := filepath.Join(dir, "new.header")
	if code, _, errOut := e.run("pw\n", "enroll", dev, "--yes", "--passphrase-stdin", "--header-backup", hb); code == 0 {
		t.Errorf("exit 0 despite the failure: %s", errOut)
	}
	if _, err := os.Lstat(hb); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the header backup file is left after a failed enroll: %v", err)
	}
}

func TestKeysSeal(t *testing.T) {
	e := newEnv(t)
	if code, _, errOut := e.run("", "keys"); code != exitUsage || e.called(api.MethodSealKeys) {
		t.Errorf("keys without seal: exit %d, %q", code, errOut)
	}
	sealed := []string{"/etc/plugvault/keys/a.key", "/etc/plugvault/keys/b.key"}
	e.fake.SetResult(api.MethodSealKeys, sealed)
	code, out, errOut := e.run("", "keys", "seal")
	if code != 0 || out != "sealed "+sealed[0]+"\nsealed "+sealed[1]+"\n" {
		t.Errorf("keys seal: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, _ = e.run("", "keys", "seal", "--json")
	var doc struct{ Sealed []string }
	if err := json.Unmarshal([]byte(out), &doc); code != 0 || err != nil || !slices.Equal(doc.Sealed, sealed) {
		t.Errorf("keys seal --json: exit %d, %q (%v)", code, out, err)
	}
	e.fake.FailNext(api.MethodSealKeys, errorf("cannot seal keys: %w", api.ErrNotAuthorized))
	if code, _, _ := e.run("", "keys", "seal"); code != exitNotAuthorized {
		t.Errorf("refused by polkit: exit %d, want %d", code, exitNotAuthorized)
	}
}
