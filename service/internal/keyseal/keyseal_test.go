package keyseal_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/plugvault/plugvault/service/internal/config"
	"github.com/plugvault/plugvault/service/internal/keyseal"
	"github.com/plugvault/plugvault/service/internal/sysexec"
)

// fakeCreds stands for systemd-creds: encrypt prints the Base64 of the input with every byte
// flipped after a credential header (credHead) of its own, in lines of 64 characters as systemd-creds wraps it; decrypt skips whitespace and
// undoes that. It records every argv and stdin.
type fakeCreds struct {
	argv  [][]string
	stdin [][]byte
	fail  error
}

// credHead stands for what systemd-creds puts before the encrypted secret (its header, IV and
// the rest): enough that even a 32-byte secret's credential spans lines.
const credHead = "fake systemd-creds credential header, key id, IV, authentication tag"

func (f *fakeCreds) Run(_ context.Context, c sysexec.Cmd) (sysexec.Result, error) {
	in, _ := io.ReadAll(c.Stdin)
	f.argv = append(f.argv, append([]string{c.Path}, c.Args...))
	f.stdin = append(f.stdin, in)
	if f.fail != nil {
		return sysexec.Result{}, f.fail
	}
	flip := func(b []byte) []byte {
		out := make([]byte, len(b))
		for i, c := range b {
			out[i] = ^c
		}
		return out
	}
	switch c.Args[0] {
	case "encrypt":
		b64 := base64.StdEncoding.EncodeToString(append([]byte(credHead), flip(in)...))
		var out strings.Builder
		for len(b64) > 64 {
			out.WriteString(b64[:64] + "\n")
			b64 = b64[64:]
		}
		out.WriteString(b64 + "\n")
		return sysexec.Result{Stdout: []byte(out.String())}, nil
	case "decrypt":
		raw, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(string(in)), ""))
		if err != nil {
			return sysexec.Result{}, &sysexec.ExitError{Tool: c.Path, Code: 1, Stderr: "bad credential"}
		}
		if !bytes.HasPrefix(raw, []byte(credHead)) {
			return sysexec.Result{}, &sysexec.ExitError{Tool: c.Path, Code: 1, Stderr: "bad credential"}
		}
		return sysexec.Result{Stdout: flip(raw[len(credHead):])}, nil
	}
	return sysexec.Result{}, errors.New("unexpected verb")
}

func TestSealThenReadUnseals(t *testing.T) {
	f := &fakeCreds{}
	s := &keyseal.Sealer{Runner: f, Tool: "/usr/bin/systemd-creds"}
	key := []byte("0123456789abcdef-a-drive-key\n\x00\xff")
	sealed, err := s.Seal(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	if !keyseal.IsSealed(sealed) || bytes.Contains(sealed, key) {
		t.Fatalf("sealed form %q: not marked sealed, or it holds the key", sealed)
	}
	wantArgv := []string{"/usr/bin/systemd-creds", "encrypt", "--name=plugvault-drive-key", "--with-key=auto", "-", "-"}
	if !slices.Equal(f.argv[0], wantArgv) {
		t.Errorf("encrypt argv %q, want %q", f.argv[0], wantArgv)
	}
	if !bytes.Equal(f.stdin[0], key) {
		t.Errorf("encrypt got %q on stdin, want the key", f.stdin[0])
	}

	read := s.Reader(func(string) ([]byte, error) { return slices.Clone(sealed), nil })
	got, err := read("/etc/plugvault/keys/x.key")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, key) {
		t.Errorf("Reader returned %q, want the key %q", got, key)
	}
	wantArgv = []string{"/usr/bin/systemd-creds", "decrypt", "--name=plugvault-drive-key", "-", "-"}
	if !slices.Equal(f.argv[1], wantArgv) {
		t.Errorf("decrypt argv %q, want %q", f.argv[1], wantArgv)
	}
	if !bytes.Equal(f.stdin[1], sealed[len(keyseal.Header):]) {
		t.Errorf("decrypt got %q on stdin, want the credential without the header", f.stdin[1])
	}
	for _, argv := range f.argv {
		for _, a := range argv {
			if strings.Contains(a, string(key[:16])) {
				t.Errorf("the key is in argv: %q", argv)
			}
		}
	}
}

func TestReaderPassesPlainKeysAndErrors(t *testing.T) {
	f := &fakeCreds{}
	s := &keyseal.Sealer{Runner: f, Tool: "/usr/bin/systemd-creds"}
	plain := []byte("a plain key written before sealing existed")
	got, err := s.Reader(func(string) ([]byte, error) { return slices.Clone(plain), nil })("/k")
	if err != nil || !bytes.Equal(got, plain) {
		t.Errorf("plain key: %q, %v; want it unchanged", got, err)
	}
	refused := errors.New("cannot use keyfile /k: mode 0644 is readable by others")
	if _, err := s.Reader(func(string) ([]byte, error) { return nil, refused })("/k"); !errors.Is(err, refused) {
		t.Errorf("the reader's refusal became %v", err)
	}
	if len(f.argv) != 0 {
		t.Errorf("systemd-creds ran for a plain key or a refused one: %q", f.argv)
	}
}

func TestUnsealFailureNamesTheKeyfile(t *testing.T) {
	f := &fakeCreds{fail: &sysexec.ExitError{Tool: "systemd-creds", Code: 1, Stderr: "Failed to decrypt"}}
	s := &keyseal.Sealer{Runner: f, Tool: "/usr/bin/systemd-creds"}
	_, err := s.Reader(func(string) ([]byte, error) { return []byte(keyseal.Header + "AAAA\n"), nil })("/etc/plugvault/keys/u.key")
	if err == nil || !strings.Contains(err.Error(), "/etc/plugvault/keys/u.key") || !strings.HasPrefix(err.Error(), "cannot ") {
		t.Errorf("unseal failure: %v; want a 'cannot' error naming the keyfile", err)
	}
}

func TestSealRefuses(t *testing.T) {
	s := &keyseal.Sealer{Runner: &fakeCreds{}, Tool: "/usr/bin/systemd-creds"}
	for name, key := range map[string][]byte{
		"empty":   nil,
		"sealed":  []byte(keyseal.Header + "AAAA\n"),
		"too big": make([]byte, keyseal.MaxKeySize+1),
	} {
		if _, err := s.Seal(context.Background(), key); err == nil {
			t.Errorf("%s: Seal succeeded", name)
		}
	}
}

// TestSealLargeKeyInEnvelope: the classic tutorial's 1 MiB keyfile is sealed in an envelope:
// systemd-creds only ever sees a 32-byte data key, the stored form reads back to the same key
// through Reader, fits what plugvaultd reads, and any change to it is refused.
func TestSealLargeKeyInEnvelope(t *testing.T) {
	f := &fakeCreds{}
	s := &keyseal.Sealer{Runner: f, Tool: "/usr/bin/systemd-creds"}
	key := make([]byte, 1<<20)
	for i := range key {
		key[i] = byte(i*7 + i>>11)
	}
	sealed, err := s.Seal(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	if !keyseal.IsSealed(sealed) || !bytes.HasPrefix(sealed, []byte(keyseal.EnvelopeHeader)) {
		t.Fatalf("sealed form starts %q, want the envelope header", sealed[:40])
	}
	if len(f.stdin) != 1 || len(f.stdin[0]) != 32 {
		t.Fatalf("systemd-creds was given %d inputs (first %d bytes); want one 32-byte data key", len(f.stdin), len(f.stdin[0]))
	}
	if bytes.Contains(sealed, key[:4096]) {
		t.Fatal("the sealed form contains the key in clear")
	}
	got, err := s.Reader(func(string) ([]byte, error) { return sealed, nil })("/etc/plugvault/keys/u.key")
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("Reader = %d bytes, %v; want the 1 MiB key back", len(got), err)
	}
	// Every region of the sealed form is covered: header, credential, nonce, ciphertext, tag.
	cred := len(keyseal.EnvelopeHeader) + bytes.IndexByte(sealed[len(keyseal.EnvelopeHeader):], '\n')
	for name, at := range map[string]int{"header": 3, "credential": cred - 2, "nonce": cred + 3, "ciphertext": cred + 5000, "tag": len(sealed) - 1} {
		bad := bytes.Clone(sealed)
		bad[at] ^= 0x01
		if k, err := s.Unseal(context.Background(), bad); err == nil && bytes.Equal(k, key) {
			t.Errorf("%s changed: Unseal still returned the key", name)
		} else if err == nil {
			t.Errorf("%s changed: Unseal returned %d bytes and no error", name, len(k))
		}
	}
	if _, err := s.Unseal(context.Background(), sealed[:len(sealed)-20]); err == nil {
		t.Error("a truncated envelope was unsealed")
	}
}

// TestLargestSealedKeyFitsTheReader: the largest key Seal accepts is stored in a keyfile that
// config.ReadKeyfile still reads.
func TestLargestSealedKeyFitsTheReader(t *testing.T) {
	s := &keyseal.Sealer{Runner: &fakeCreds{}, Tool: "/usr/bin/systemd-creds"}
	sealed, err := s.Seal(context.Background(), bytes.Repeat([]byte{0x5a}, keyseal.MaxKeySize))
	if err != nil {
		t.Fatal(err)
	}
	if len(sealed) > config.MaxKeyfileSize {
		t.Errorf("a sealed %d-byte key takes %d bytes; plugvaultd reads at most %d", keyseal.MaxKeySize, len(sealed), config.MaxKeyfileSize)
	}
}
