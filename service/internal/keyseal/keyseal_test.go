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

	"github.com/plugvault/plugvault/service/internal/keyseal"
	"github.com/plugvault/plugvault/service/internal/sysexec"
)

// fakeCreds stands for systemd-creds: encrypt prints the Base64 of the input with every byte
// flipped, decrypt undoes that; it records every argv and stdin.
type fakeCreds struct {
	argv  [][]string
	stdin [][]byte
	fail  error
}

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
		return sysexec.Result{Stdout: []byte(base64.StdEncoding.EncodeToString(flip(in)) + "\n")}, nil
	case "decrypt":
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(in)))
		if err != nil {
			return sysexec.Result{}, &sysexec.ExitError{Tool: c.Path, Code: 1, Stderr: "bad credential"}
		}
		return sysexec.Result{Stdout: flip(raw)}, nil
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
