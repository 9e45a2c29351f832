package enroll

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/config"
	"github.com/plugvault/plugvault/service/internal/sysexec"
)

const testUUID = "5e1f0c3a-8b2d-4c6e-9f10-a1b2c3d4e5f6"

// errInjected is what the fakes fail with when a test asks them to.
var errInjected = errors.New("injected failure")

// fakeLUKS stands for service/internal/luks.Cryptsetup: it records every call and keeps the
// device's keyslots (slot -> key) in memory.
type fakeLUKS struct {
	mu     sync.Mutex
	calls  []string
	fail   map[string]error    // method -> error
	slots  map[int][]byte      // the device's keyslots and the key each takes
	pbkdf  map[int]string      // the PBKDF of each slot
	uuid   string              // what Format creates and UUID reports
	opened map[string]struct{} // active mappings
	// before, when set, runs at the start of each call with the method's name (a test swaps
	// the device there).
	before func(method string)
	// headerSize, when set, is the size of the header backup HeaderBackup writes (sparse);
	// headerFile is the file it was told to write and headerDir what it found in its directory.
	headerSize int64
	headerFile string
	headerDir  os.FileInfo
}

func newFakeLUKS() *fakeLUKS {
	return &fakeLUKS{fail: map[string]error{}, slots: map[int][]byte{}, pbkdf: map[int]string{}, uuid: testUUID, opened: map[string]struct{}{}}
}

func (f *fakeLUKS) record(method string, args ...any) error {
	if f.before != nil {
		f.before(method)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf("%s%v", method, args))
	return f.fail[method]
}

func (f *fakeLUKS) called(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if strings.HasPrefix(c, method+"[") {
			n++
		}
	}
	return n
}

func (f *fakeLUKS) Format(ctx context.Context, device string, passphrase []byte, label string) (string, error) {
	if err := f.record("Format", device, string(passphrase), label); err != nil {
		return "", err
	}
	f.slots = map[int][]byte{0: bytes.Clone(passphrase)}
	f.pbkdf = map[int]string{0: "argon2id"}
	return f.uuid, nil
}

func (f *fakeLUKS) AddKey(ctx context.Context, device string, existingKey, newKey []byte, fast bool) (int, error) {
	if err := f.record("AddKey", device, len(newKey), fast); err != nil {
		return -1, err
	}
	if f.slotOf(existingKey) < 0 {
		return -1, fmt.Errorf("no slot takes the existing key: %w", api.ErrBadPassphrase)
	}
	slot := 0
	for f.slots[slot] != nil {
		slot++
	}
	f.slots[slot] = bytes.Clone(newKey)
	f.pbkdf[slot] = "argon2id"
	if fast {
		f.pbkdf[slot] = "pbkdf2"
	}
	return slot, nil
}

func (f *fakeLUKS) slotOf(key []byte) int {
	for n, k := range f.slots {
		if bytes.Equal(k, key) {
			return n
		}
	}
	return -1
}

func (f *fakeLUKS) KillSlot(ctx context.Context, device string, slot int, authKey []byte) error {
	if err := f.record("KillSlot", device, slot); err != nil {
		return err
	}
	if f.slotOf(authKey) < 0 {
		return fmt.Errorf("the key opens no slot: %w", api.ErrBadPassphrase)
	}
	delete(f.slots, slot)
	delete(f.pbkdf, slot)
	return nil
}

func (f *fakeLUKS) TestKey(ctx context.Context, device string, key []byte, slot int) error {
	if err := f.record("TestKey", device, slot); err != nil {
		return err
	}
	n := f.slotOf(key)
	if n < 0 || slot >= 0 && n != slot {
		return fmt.Errorf("no key available with this passphrase: %w", api.ErrBadPassphrase)
	}
	return nil
}

func (f *fakeLUKS) UUID(ctx context.Context, device string) (string, error) {
	if err := f.record("UUID", device); err != nil {
		return "", err
	}
	return f.uuid, nil
}

func (f *fakeLUKS) Identify(ctx context.Context, device string) (uuid, fp string, err error) {
	if err := f.record("Identify", device); err != nil {
		return "", "", err
	}
	return f.uuid, fakeFingerprint, nil
}

// fakeFingerprint is what the fake's Identify reports for its one device.
var fakeFingerprint = "v1:" + strings.Repeat("f", 64)

func (f *fakeLUKS) Open(ctx context.Context, device, name string, key []byte, slot int, readOnly bool) error {
	if err := f.record("Open", device, name, slot, readOnly); err != nil {
		return err
	}
	if f.slotOf(key) != slot {
		return fmt.Errorf("wrong key for slot %d: %w", slot, api.ErrBadPassphrase)
	}
	f.opened[name] = struct{}{}
	return nil
}

func (f *fakeLUKS) Close(ctx context.Context, name string, deferred bool) error {
	if err := f.record("Close", name, deferred); err != nil {
		return err
	}
	delete(f.opened, name)
	return nil
}

// HeaderBackup writes fakeHeader (or headerSize bytes) to file, which it creates exclusively,
// 0400, as cryptsetup luksHeaderBackup does.
func (f *fakeLUKS) HeaderBackup(ctx context.Context, device, file string) error {
	f.mu.Lock()
	f.headerFile = file
	f.headerDir, _ = os.Lstat(filepath.Dir(file))
	f.mu.Unlock()
	if err := f.record("HeaderBackup", device); err != nil {
		return err
	}
	w, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o400)
	if err != nil {
		return err
	}
	if f.headerSize > 0 {
		err = w.Truncate(f.headerSize)
	} else {
		_, err = w.Write(fakeHeader)
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	return err
}

func (f *fakeLUKS) keyslots(ctx context.Context, device string) (map[int]Keyslot, error) {
	if err := f.record("Keyslots", device); err != nil {
		return nil, err
	}
	m := map[int]Keyslot{}
	for n := range f.slots {
		m[n] = Keyslot{Type: "luks2", PBKDF: f.pbkdf[n]}
	}
	return m, nil
}

// fakeHeader is what the fake LUKS.HeaderBackup writes.
var fakeHeader = []byte("LUKS\xba\xbe\x00\x02 header backup")

// fakeRunner stands for sysexec.Exec: it records argv and fails the tools a test names.
type fakeRunner struct {
	mu   sync.Mutex
	runs [][]string
	fail map[string]error // tool base name (or "udevadm control") -> error
}

func (r *fakeRunner) Run(ctx context.Context, c sysexec.Cmd) (sysexec.Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	argv := append([]string{c.Path}, c.Args...)
	r.runs = append(r.runs, argv)
	tool := filepath.Base(c.Path)
	if err := r.fail[tool+" "+c.Args[0]]; err != nil {
		return sysexec.Result{}, err
	}
	if err := r.fail[tool]; err != nil {
		return sysexec.Result{}, err
	}
	return sysexec.Result{}, nil
}

func (r *fakeRunner) argvs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, a := range r.runs {
		out = append(out, strings.Join(a, " "))
	}
	return out
}

// fakeConfig stands for config.Load/AppendDrive/RemoveDrive on an in-memory file.
type fakeConfig struct {
	mu         sync.Mutex
	drives     []config.Drive
	failAppend error
	failRemove error
}

func (c *fakeConfig) load(path string) (*config.Config, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return &config.Config{Version: 1, Drives: append([]config.Drive(nil), c.drives...)}, nil
}

func (c *fakeConfig) append(path string, d config.Drive) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failAppend != nil {
		return c.failAppend
	}
	c.drives = append(c.drives, d)
	return nil
}

func (c *fakeConfig) remove(path, uuid string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failRemove != nil {
		return c.failRemove
	}
	for i, d := range c.drives {
		if d.LuksUUID == uuid {
			c.drives = append(c.drives[:i], c.drives[i+1:]...)
			return nil
		}
	}
	return fmt.Errorf("no drive %s", uuid)
}

// fakeRegistry stands for the daemon's drive manager and D-Bus objects.
type fakeRegistry struct {
	mu         sync.Mutex
	drives     map[string]config.Drive
	failAdd    error
	failRemove error
}

func (r *fakeRegistry) AddDrive(d config.Drive) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failAdd != nil {
		return r.failAdd
	}
	r.drives[d.LuksUUID] = d
	return nil
}

func (r *fakeRegistry) RemoveDrive(uuid string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failRemove != nil {
		return r.failRemove
	}
	delete(r.drives, uuid)
	return nil
}

// fakeSys builds a sysfs tree, udev database, mountinfo and swaps under a temp dir:
//
//	sda  (8:0)  USB system disk: sda2 (8:2) holds dm-0 (254:0), mounted on /
//	sdb  (8:16) removable USB stick with sdb1 (8:17)
//	sdc  (8:32) fixed SATA disk
//	sdd  (8:48) USB disk with sdd2 (8:50) holding a btrfs root (anonymous device 0:31)
type fakeSys struct {
	t    *testing.T
	root string
	sys  System
	devs map[string]devNum
	seq  int // the last disk sequence number given
}

func newFakeSys(t *testing.T) *fakeSys {
	t.Helper()
	root := t.TempDir()
	f := &fakeSys{t: t, root: root, devs: map[string]devNum{}}
	f.sys = System{
		SysRoot:     filepath.Join(root, "sys"),
		UdevDataDir: filepath.Join(root, "udev"),
		MountInfo:   filepath.Join(root, "mountinfo"),
		Swaps:       filepath.Join(root, "swaps"),
		DevNumber: func(path string) (devNum, error) {
			if n, ok := f.devs[path]; ok {
				return n, nil
			}
			return devNum{}, fmt.Errorf("cannot find %s", path)
		},
	}
	f.disk("sda", 8, 0, false, "usb", "pci/usb1")
	f.part("sda", "sda2", 8, 2)
	f.dm("dm-0", 254, 0, "sda/sda2", "/dev/mapper/root")
	f.disk("sdb", 8, 16, true, "usb", "pci/usb2")
	f.part("sdb", "sdb1", 8, 17)
	f.disk("sdc", 8, 32, false, "ata", "pci/ata1")
	f.disk("sdd", 8, 48, false, "usb", "pci/usb3")
	f.part("sdd", "sdd2", 8, 50)
	f.write("mountinfo", "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/mapper/root rw\n"+
		"23 22 0:21 / /proc rw - proc proc rw\n")
	f.write("swaps", "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n")
	return f
}

func (f *fakeSys) write(rel, content string) {
	f.t.Helper()
	p := filepath.Join(f.root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeSys) link(rel, target string) {
	f.t.Helper()
	p := filepath.Join(f.root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeSys) mkdir(rel string) {
	f.t.Helper()
	if err := os.MkdirAll(filepath.Join(f.root, rel), 0o755); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeSys) disk(name string, major, minor uint32, removable bool, bus, parent string) {
	dir := "sys/devices/" + parent + "/block/" + name
	rem := "0"
	if removable {
		rem = "1"
	}
	f.write(dir+"/dev", fmt.Sprintf("%d:%d\n", major, minor))
	f.write(dir+"/removable", rem+"\n")
	f.seq++
	f.write(dir+"/diskseq", fmt.Sprintf("%d\n", f.seq))
	f.mkdir(dir + "/holders")
	f.link(fmt.Sprintf("sys/dev/block/%d:%d", major, minor), "../../devices/"+parent+"/block/"+name)
	f.write(fmt.Sprintf("udev/b%d:%d", major, minor), "E:ID_BUS="+bus+"\nE:DEVTYPE=disk\n")
	f.devs["/dev/"+name] = devNum{major, minor}
}

func (f *fakeSys) diskDir(disk string) string {
	matches, _ := filepath.Glob(filepath.Join(f.root, "sys/devices/*/*/block", disk))
	if len(matches) != 1 {
		f.t.Fatalf("no disk %s in the fake sysfs", disk)
	}
	rel, _ := filepath.Rel(f.root, matches[0])
	return rel
}

func (f *fakeSys) part(disk, name string, major, minor uint32) {
	dir := f.diskDir(disk) + "/" + name
	f.write(dir+"/dev", fmt.Sprintf("%d:%d\n", major, minor))
	f.write(dir+"/partition", "1\n")
	f.mkdir(dir + "/holders")
	rel, _ := filepath.Rel(filepath.Join(f.root, "sys/dev/block"), filepath.Join(f.root, dir))
	f.link(fmt.Sprintf("sys/dev/block/%d:%d", major, minor), rel)
	f.devs["/dev/"+name] = devNum{major, minor}
}

// dm adds a device-mapper device on top of slave ("sda/sda2") and marks the slave as held.
func (f *fakeSys) dm(name string, major, minor uint32, slave, node string) {
	dir := "sys/devices/virtual/block/" + name
	f.write(dir+"/dev", fmt.Sprintf("%d:%d\n", major, minor))
	disk, part, _ := strings.Cut(slave, "/")
	slaveDir := f.diskDir(disk) + "/" + part
	f.link(dir+"/slaves/"+part, filepath.Join(f.root, slaveDir))
	f.link(slaveDir+"/holders/"+name, filepath.Join(f.root, dir))
	f.link(fmt.Sprintf("sys/dev/block/%d:%d", major, minor), "../../devices/virtual/block/"+name)
	f.devs[node] = devNum{major, minor}
}

// harness is an Enroller on fakes, with its files in a temp dir.
type harness struct {
	t        *testing.T
	e        *Enroller
	luks     *fakeLUKS
	runner   *fakeRunner
	cfg      *fakeConfig
	reg      *fakeRegistry
	sys      *fakeSys
	keyDir   string
	rulesDir string
	tmpDir   string // Deps.TempDir
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	dir := t.TempDir()
	h := &harness{t: t, luks: newFakeLUKS(), runner: &fakeRunner{fail: map[string]error{}}, cfg: &fakeConfig{},
		reg: &fakeRegistry{drives: map[string]config.Drive{}}, sys: newFakeSys(t),
		keyDir: filepath.Join(dir, "etc", "plugvault", "keys"), rulesDir: filepath.Join(dir, "etc", "udev", "rules.d"),
		tmpDir: filepath.Join(dir, "tmp")}
	if err := os.Mkdir(h.tmpDir, 0o1777); err != nil {
		t.Fatal(err)
	}
	e, err := New(Deps{
		LUKS: h.luks, Keyslots: h.luks.keyslots, Registry: h.reg,
		LoadConfig: h.cfg.load, AppendDrive: h.cfg.append, RemoveDrive: h.cfg.remove,
		Runner:       h.runner,
		LookPath:     func(name string) (string, error) { return "/usr/sbin/" + name, nil },
		DeviceByUUID: func(uuid string) (string, error) { return "/dev/sdb", nil },
		// config.ReadKeyfile wants root's files; the tests also run as a user.
		ReadKeyfile: os.ReadFile,
		ConfigPath:  filepath.Join(dir, "etc", "plugvault", "config.toml"),
		KeyDir:      h.keyDir, RulesDir: h.rulesDir, System: h.sys.sys, TempDir: h.tmpDir,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.e = e
	return h
}

func (h *harness) keyPath() string { return filepath.Join(h.keyDir, testUUID+".key") }
func (h *harness) rulePath() string {
	return filepath.Join(h.rulesDir, "90-plugvault-"+testUUID+".rules")
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// assertNothingLeft checks the rollback: no key, no rule, no configured or registered drive,
// no open mapping.
func (h *harness) assertNothingLeft(step string) {
	h.t.Helper()
	if exists(h.keyPath()) {
		h.t.Errorf("%s: the keyfile is left behind", step)
	}
	if exists(h.rulePath()) {
		h.t.Errorf("%s: the udev rule is left behind", step)
	}
	if len(h.cfg.drives) != 0 {
		h.t.Errorf("%s: the configuration still has %v", step, h.cfg.drives)
	}
	if len(h.reg.drives) != 0 {
		h.t.Errorf("%s: the registry still has %v", step, h.reg.drives)
	}
	if len(h.luks.opened) != 0 {
		h.t.Errorf("%s: mappings left open: %v", step, h.luks.opened)
	}
	entries, _ := os.ReadDir(h.keyDir)
	for _, e := range entries {
		h.t.Errorf("%s: %s left in the key directory", step, e.Name())
	}
	h.assertTempDirEmpty(step)
}

// assertTempDirEmpty checks that the header backup's private directory is gone.
func (h *harness) assertTempDirEmpty(step string) {
	h.t.Helper()
	entries, err := os.ReadDir(h.tmpDir)
	if err != nil {
		h.t.Fatal(err)
	}
	for _, e := range entries {
		h.t.Errorf("%s: %s left in the temporary directory", step, e.Name())
	}
}

// replaceDisk makes the disk name (a fake sysfs disk) look like another stick that got the
// same name and device number: the kernel gave it a new disk sequence number.
func (f *fakeSys) replaceDisk(name string) {
	f.seq++
	f.write(f.diskDir(name)+"/diskseq", fmt.Sprintf("%d\n", f.seq))
}
