package luks

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/plugvault/plugvault/service/api/apitest"
	"github.com/plugvault/plugvault/service/internal/sysexec"
)

// realOnFiles returns a Cryptsetup running the real tool on image files in a temp dir, with
// the fast KDF for the passphrase slot (argon2id would cost seconds and ~1 GiB per test).
func realOnFiles(t *testing.T) (*Cryptsetup, string) {
	t.Helper()
	apitest.RequireRoot(t) // cryptsetup's locking directory /run/cryptsetup is root's
	apitest.RequireTool(t, "cryptsetup")
	c, err := New(sysexec.Exec{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	AllowImageFiles(c, dir)
	if err := c.SetPassphrasePBKDF(FastPBKDF); err != nil {
		t.Fatal(err)
	}
	return c, dir
}

func image(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(20 << 20); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRealHeaderOperations(t *testing.T) {
	c, dir := realOnFiles(t)
	ctx := context.Background()
	img := image(t, dir, "stick.img")

	if ok, err := c.IsLuks(ctx, img); err != nil || ok {
		t.Fatalf("blank image: IsLuks = %v, %v", ok, err)
	}
	pass := []byte("pass phrase\n") // the newline is part of it
	uuid, err := c.Format(ctx, img, pass, "plugvault test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := MappingName(uuid); err != nil {
		t.Fatal(err)
	}
	if ok, err := c.IsLuks(ctx, img); err != nil || !ok {
		t.Fatalf("formatted image: IsLuks = %v, %v", ok, err)
	}
	if got, err := c.UUID(ctx, img); err != nil || got != uuid {
		t.Fatalf("UUID = %q, %v; Format said %q", got, err, uuid)
	}
	// The header backup is the image's header area, the bytes luksHeaderRestore puts back.
	backup := filepath.Join(dir, "header")
	if err := c.HeaderBackup(ctx, img, backup); err != nil {
		t.Fatal(err)
	}
	hb, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	whole, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if len(hb) == 0 || len(hb) >= len(whole) || !bytes.Equal(hb, whole[:len(hb)]) || !bytes.HasPrefix(hb, []byte("LUKS\xba\xbe")) {
		t.Errorf("the header backup (%d bytes) is not the image's LUKS header area", len(hb))
	}
	if fi, err := os.Stat(backup); err != nil || fi.Mode().Perm() != 0o400 {
		t.Errorf("the header backup has mode %v (%v), want 0400", fi.Mode(), err)
	}
	if err := c.HeaderBackup(ctx, img, backup); err == nil {
		t.Error("HeaderBackup overwrote an existing file")
	}
	h, err := c.Dump(ctx, img)
	if err != nil {
		t.Fatal(err)
	}
	if h.Version != 2 || len(h.Keyslots) != 1 || h.Keyslots[0].PBKDF != "pbkdf2" || h.Keyslots[0].Iterations != 1000 {
		t.Fatalf("header %+v", h)
	}

	// Exact bytes: without the newline it is another key.
	if err := c.TestKey(ctx, img, pass, 0); err != nil {
		t.Errorf("the passphrase does not open slot 0: %v", err)
	}
	if err := c.TestKey(ctx, img, []byte("pass phrase"), -1); !errors.Is(err, ErrBadKey) {
		t.Errorf("a key without its newline: want ErrBadKey, got %v", err)
	}

	// A 4 KiB random keyfile in its own fast slot, sent on fd 3.
	keyfile := make([]byte, 4096)
	for i := range keyfile {
		keyfile[i] = byte(i*7 + i>>8)
	}
	slot, err := c.AddKey(ctx, img, pass, keyfile, true)
	if err != nil {
		t.Fatal(err)
	}
	if slot != 1 {
		t.Errorf("new slot %d, want 1 (the first free one)", slot)
	}
	if err := c.TestKey(ctx, img, keyfile, slot); err != nil {
		t.Errorf("the keyfile does not open its slot: %v", err)
	}
	if err := c.TestKey(ctx, img, keyfile, 0); !errors.Is(err, ErrBadKey) {
		t.Errorf("the keyfile opens the passphrase slot: %v", err)
	}
	// A 1 MiB keyfile (dd bs=1M count=1), as hand-prepared sticks have: added and tested.
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = byte(i*13 + i>>9)
	}
	bigSlot, err := c.AddKey(ctx, img, keyfile, big, true)
	if err != nil {
		t.Fatalf("adding a 1 MiB key: %v", err)
	}
	if err := c.TestKey(ctx, img, big, bigSlot); err != nil {
		t.Errorf("the 1 MiB key does not open its slot: %v", err)
	}
	if err := c.TestKey(ctx, img, big[:len(big)-1], bigSlot); !errors.Is(err, ErrBadKey) {
		t.Errorf("the 1 MiB key without its last byte: want ErrBadKey, got %v", err)
	}
	if err := c.KillSlot(ctx, img, bigSlot, big); !errors.Is(err, ErrBadKey) {
		t.Errorf("KillSlot with the key of the slot itself: want ErrBadKey, got %v", err)
	}
	if err := c.KillSlot(ctx, img, bigSlot, pass); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddKey(ctx, img, []byte("wrong"), []byte("x"), true); !errors.Is(err, ErrBadKey) {
		t.Errorf("AddKey with a wrong key: want ErrBadKey, got %v", err)
	}
	h, err = c.Dump(ctx, img)
	if err != nil || h.Keyslots[1].PBKDF != "pbkdf2" || h.Keyslots[1].Iterations != 1000 || len(h.Keyslots) != 2 {
		t.Fatalf("after AddKey: %+v, %v", h, err)
	}

	// A slot cannot authorize its own removal; another slot's key can.
	if err := c.KillSlot(ctx, img, 1, keyfile); !errors.Is(err, ErrBadKey) {
		t.Errorf("KillSlot with the key of the slot itself: want ErrBadKey, got %v", err)
	}
	if err := c.KillSlot(ctx, img, 1, pass); err != nil {
		t.Fatal(err)
	}
	if err := c.TestKey(ctx, img, keyfile, -1); !errors.Is(err, ErrBadKey) {
		t.Errorf("the removed keyfile still opens: %v", err)
	}
	if err := c.KillSlot(ctx, img, 0, pass); err == nil {
		t.Error("the last slot was removed")
	}
	if err := c.TestKey(ctx, img, pass, 0); err != nil {
		t.Errorf("the passphrase stopped working: %v", err)
	}
}

func TestRealLUKS1AndErrors(t *testing.T) {
	c, dir := realOnFiles(t)
	ctx := context.Background()
	img := image(t, dir, "luks1.img")
	// A hand-made LUKS1 stick as in the classic tutorials (adopt); formatted with the tool
	// directly because Format only makes LUKS2.
	_, err := sysexec.Exec{}.Run(ctx, sysexec.Cmd{Path: c.Path(), Args: []string{"luksFormat", "--type=luks1", "--batch-mode", "--key-file=-",
		"--pbkdf-force-iterations=1000", "--", img}, Stdin: stringsReader("k1")})
	if err != nil {
		t.Fatal(err)
	}
	h, err := c.Dump(ctx, img)
	if err != nil {
		t.Fatal(err)
	}
	if h.Version != 1 || len(h.Keyslots) != 1 || h.Keyslots[0].Type != "luks1" || h.Keyslots[0].Iterations != 1000 {
		t.Errorf("LUKS1 header %+v", h)
	}
	if err := c.TestKey(ctx, img, []byte("k1"), 0); err != nil {
		t.Error(err)
	}
	// Not LUKS: Dump fails cleanly.
	plain := image(t, dir, "plain.img")
	if _, err := c.Dump(ctx, plain); err == nil {
		t.Error("Dump of a blank image succeeded")
	}
	if _, err := c.UUID(ctx, plain); err == nil {
		t.Error("UUID of a blank image succeeded")
	}
	// The test hook still refuses paths outside its directory and symlinks.
	link := filepath.Join(dir, "link.img")
	if err := os.Symlink(img, link); err != nil {
		t.Fatal(err)
	}
	if _, err := c.IsLuks(ctx, link); err == nil {
		t.Error("a symlink was accepted")
	}
	if _, err := c.IsLuks(ctx, "/etc/hostname"); err == nil {
		t.Error("a file outside the image directory was accepted")
	}
}
