package enroll

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/plugvault/plugvault/service/internal/config"
	"github.com/plugvault/plugvault/service/internal/keyseal"
)

// sealWith makes the harness seal keys with a reversible stand-in for keyseal.Sealer.Seal.
func sealWith(h *harness, fail error) {
	h.e.d.SealKey = func(_ context.Context, key []byte) ([]byte, error) {
		if fail != nil {
			return nil, fail
		}
		return append([]byte("SEALED:"), key...), nil
	}
}

// TestNewKeysAreSealed: with SealKey set, enroll and adopt write the sealed form of the key
// the slot takes, never the key itself.
func TestNewKeysAreSealed(t *testing.T) {
	h := newHarness(t)
	sealWith(h, nil)
	if _, err := h.e.Enroll(t.Context(), enrollReq()); err != nil {
		t.Fatal(err)
	}
	stored, err := os.ReadFile(h.keyPath())
	if err != nil {
		t.Fatal(err)
	}
	if want := append([]byte("SEALED:"), h.luks.slots[1]...); !bytes.Equal(stored, want) {
		t.Errorf("enroll stored %q, want the sealed slot key %q", stored, want)
	}
	assertMode(t, h.keyPath(), 0o400)

	h = newHarness(t)
	sealWith(h, nil)
	_, key := handPrepared(h, "pbkdf2")
	if _, err := h.e.Adopt(t.Context(), AdoptRequest{Device: "/dev/sdb1", Secret: bytes.Clone(key), Name: "hand"}); err != nil {
		t.Fatal(err)
	}
	stored, err = os.ReadFile(h.keyPath())
	if err != nil {
		t.Fatal(err)
	}
	if want := append([]byte("SEALED:"), key...); !bytes.Equal(stored, want) {
		t.Errorf("adopt stored %q, want the sealed keyfile %q", stored, want)
	}
}

// TestSealFailureFailsTheEnrollment: no plain key is written in place of a sealed one, and the
// enrollment is rolled back.
func TestSealFailureFailsTheEnrollment(t *testing.T) {
	h := newHarness(t)
	broken := errors.New("cannot seal the key: systemd-creds exited with status 1")
	sealWith(h, broken)
	if _, err := h.e.Enroll(t.Context(), enrollReq()); !errors.Is(err, broken) {
		t.Fatalf("Enroll: %v, want the sealing error", err)
	}
	h.assertNothingLeft("sealing failed")
}

// TestSealKeysSealsPlainKeysInPlace: a plain key in the key directory is sealed (0400, the
// sealed form of the same key); a sealed one, a passphrase-only drive and a keyfile configured
// elsewhere are left alone.
func TestSealKeysSealsPlainKeysInPlace(t *testing.T) {
	h := newHarness(t)
	h.e.d.ReadStoredKey = os.ReadFile
	var sealedWith [][]byte
	h.e.d.SealKey = func(_ context.Context, key []byte) ([]byte, error) {
		sealedWith = append(sealedWith, bytes.Clone(key))
		return append([]byte(keyseal.Header), key...), nil
	}
	if err := ensurePrivateDir(h.keyDir); err != nil {
		t.Fatal(err)
	}
	uuids := []string{"11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222",
		"33333333-3333-3333-3333-333333333333", "44444444-4444-4444-4444-444444444444"}
	plain := []byte("plain key\x00\xff")
	already := []byte(keyseal.Header + "sealed before")
	outside := filepath.Join(t.TempDir(), "admin.key")
	files := map[string][]byte{
		filepath.Join(h.keyDir, uuids[0]+".key"): plain,
		filepath.Join(h.keyDir, uuids[1]+".key"): already,
		outside:                                  plain,
	}
	for p, b := range files {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	h.cfg.drives = []config.Drive{
		{Name: "plain", LuksUUID: uuids[0]},
		{Name: "sealed", LuksUUID: uuids[1]},
		{Name: "passphrase-only", LuksUUID: uuids[2]},
		{Name: "elsewhere", LuksUUID: uuids[3], Keyfile: outside},
	}
	got, err := h.e.SealKeys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(h.keyDir, uuids[0]+".key")
	if len(got) != 1 || got[0] != want {
		t.Errorf("sealed %q, want only %s", got, want)
	}
	if len(sealedWith) != 1 || !bytes.Equal(sealedWith[0], plain) {
		t.Errorf("SealKey got %q, want the plain key once", sealedWith)
	}
	files[want] = append([]byte(keyseal.Header), plain...)
	for p, b := range files {
		if stored, _ := os.ReadFile(p); !bytes.Equal(stored, b) {
			t.Errorf("%s holds %q, want %q", p, stored, b)
		}
	}
	assertMode(t, want, 0o400)
	// A second run has nothing left to seal.
	if got, err := h.e.SealKeys(t.Context()); err != nil || len(got) != 0 {
		t.Errorf("second SealKeys: %q, %v; want nothing sealed", got, err)
	}
}
