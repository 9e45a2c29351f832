package keyseal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/plugvault/plugvault/service/internal/sysexec"
)

// Header starts every sealed keyfile. A random or hand-made plain key that begins with these
// exact bytes is not a realistic case.
const Header = "plugvault-sealed-key v1\n"

// CredName is the credential name embedded in the sealed key and checked on decryption.
const CredName = "plugvault-drive-key"

// MaxKeySize is the largest key Seal accepts: its sealed form (Base64, plus the credential's
// header) must stay under config.MaxKeyfileSize, which is what plugvaultd reads.
const MaxKeySize = 32 << 10

// timeout bounds one systemd-creds run (a TPM2 operation takes up to a few seconds).
const timeout = 30 * time.Second

// IsSealed says whether a keyfile's content is a sealed key.
func IsSealed(b []byte) bool { return bytes.HasPrefix(b, []byte(Header)) }

// Sealer runs systemd-creds.
type Sealer struct {
	Runner sysexec.Runner
	Tool   string // systemd-creds' absolute path
}

// New finds systemd-creds.
func New(r sysexec.Runner) (*Sealer, error) {
	tool, err := sysexec.LookPath("systemd-creds")
	if err != nil {
		return nil, fmt.Errorf("cannot seal keys: %w", err)
	}
	return &Sealer{Runner: r, Tool: tool}, nil
}

// encryptArgs are systemd-creds' arguments to seal the key given on stdin.
func encryptArgs() []string {
	return []string{
		"encrypt",
		"--name=" + CredName, // embedded, and required to match on decrypt
		"--with-key=auto",    // host key, plus the TPM2 when the machine has one
		"-", "-",             // the key on stdin, the credential on stdout (never in argv)
	}
}

// decryptArgs are systemd-creds' arguments to unseal the credential given on stdin.
func decryptArgs() []string {
	return []string{
		"decrypt",
		"--name=" + CredName, // refuse a credential sealed for something else
		"-", "-",             // the credential on stdin, the key on stdout
	}
}

// Seal returns the sealed form of key (Header and the credential).
func (s *Sealer) Seal(ctx context.Context, key []byte) ([]byte, error) {
	switch {
	case len(key) == 0:
		return nil, errors.New("cannot seal an empty key")
	case len(key) > MaxKeySize:
		return nil, fmt.Errorf("cannot seal a key of %d bytes: at most %d", len(key), MaxKeySize)
	case IsSealed(key):
		return nil, errors.New("cannot seal a key that is sealed already")
	}
	res, err := s.Runner.Run(ctx, sysexec.Cmd{Path: s.Tool, Args: encryptArgs(), Stdin: bytes.NewReader(key), Timeout: timeout})
	if err != nil {
		return nil, fmt.Errorf("cannot seal the key: %w", err)
	}
	cred := bytes.TrimSpace(res.Stdout)
	if len(cred) == 0 {
		return nil, errors.New("cannot seal the key: systemd-creds printed nothing")
	}
	return append([]byte(Header), append(cred, '\n')...), nil
}

// Unseal returns the key inside a sealed keyfile's content. The caller zeroes it after use.
func (s *Sealer) Unseal(ctx context.Context, sealed []byte) ([]byte, error) {
	if !IsSealed(sealed) {
		return nil, errors.New("internal error: Unseal of a key that is not sealed")
	}
	res, err := s.Runner.Run(ctx, sysexec.Cmd{Path: s.Tool, Args: decryptArgs(),
		Stdin: bytes.NewReader(sealed[len(Header):]), Timeout: timeout})
	if err != nil {
		clear(res.Stdout)
		return nil, fmt.Errorf("cannot unseal the key (sealed on another machine, or its host key or TPM changed?): %w", err)
	}
	if len(res.Stdout) == 0 {
		return nil, errors.New("cannot unseal the key: systemd-creds printed nothing")
	}
	return res.Stdout, nil
}

// Reader wraps a keyfile reader (config.ReadKeyfile, which checks owner, mode and symlinks):
// a sealed keyfile is unsealed, a plain one returned as it is. It is what plugvaultd reads
// keys with, only when a drive is plugged in (or Forget needs the key).
func (s *Sealer) Reader(read func(path string) ([]byte, error)) func(path string) ([]byte, error) {
	return func(path string) ([]byte, error) {
		b, err := read(path)
		if err != nil || !IsSealed(b) {
			return b, err
		}
		defer clear(b)
		key, err := s.Unseal(context.Background(), b)
		if err != nil {
			return nil, fmt.Errorf("cannot use keyfile %s: %w", path, err)
		}
		return key, nil
	}
}
