package keyseal

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
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

// EnvelopeHeader starts a sealed keyfile whose key is larger than MaxCredKeySize: the
// credential holds a random data key, and the drive key follows, encrypted with it.
const EnvelopeHeader = "plugvault-sealed-key v2\n"

// MaxCredKeySize is the largest key sealed directly as one credential (Header); a larger one is
// sealed in an envelope (EnvelopeHeader), so that systemd-creds' own size limit never applies.
const MaxCredKeySize = 32 << 10

// MaxKeySize is the largest key Seal accepts: its sealed form (the key, the credential of the
// data key and the AEAD's nonce and tag) must stay under config.MaxKeyfileSize (8 MiB), which
// is what plugvaultd reads.
const MaxKeySize = 8<<20 - envelopeRoom

// envelopeRoom is what an envelope adds to the key, with a wide margin: the header, the
// credential of a 32-byte data key (under 1 KiB of Base64), the nonce and the tag.
const envelopeRoom = 16 << 10

// timeout bounds one systemd-creds run (a TPM2 operation takes up to a few seconds).
const timeout = 30 * time.Second

// IsSealed says whether a keyfile's content is a sealed key, either form.
func IsSealed(b []byte) bool {
	return bytes.HasPrefix(b, []byte(Header)) || bytes.HasPrefix(b, []byte(EnvelopeHeader))
}

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

// Seal returns the sealed form of key: Header and the credential for a key of at most
// MaxCredKeySize, else an envelope (see sealEnvelope).
func (s *Sealer) Seal(ctx context.Context, key []byte) ([]byte, error) {
	switch {
	case len(key) == 0:
		return nil, errors.New("cannot seal an empty key")
	case len(key) > MaxKeySize:
		return nil, fmt.Errorf("cannot seal a key of %d bytes: at most %d", len(key), MaxKeySize)
	case IsSealed(key):
		return nil, errors.New("cannot seal a key that is sealed already")
	case len(key) > MaxCredKeySize:
		return s.sealEnvelope(ctx, key)
	}
	cred, err := s.encrypt(ctx, key)
	if err != nil {
		return nil, err
	}
	return append([]byte(Header), append(cred, '\n')...), nil
}

// sealEnvelope seals a large key: a random 256-bit data key is sealed as the credential, and
// the key is encrypted with it (AES-256-GCM, the header and credential line as associated data,
// so neither can be swapped). The form is EnvelopeHeader, the credential, a newline, the nonce
// and the ciphertext.
func (s *Sealer) sealEnvelope(ctx context.Context, key []byte) ([]byte, error) {
	dataKey := make([]byte, 32)
	defer clear(dataKey)
	if _, err := rand.Read(dataKey); err != nil {
		return nil, fmt.Errorf("cannot seal the key: %w", err)
	}
	cred, err := s.encrypt(ctx, dataKey)
	if err != nil {
		return nil, err
	}
	// systemd-creds wraps its Base64 into lines; the envelope keeps it on one (systemd-creds
	// decrypt skips whitespace, so either form decrypts).
	cred = bytes.Join(bytes.Fields(cred), nil)
	aead, err := envelopeAEAD(dataKey)
	if err != nil {
		return nil, err
	}
	head := append(append([]byte(EnvelopeHeader), cred...), '\n')
	out := make([]byte, len(head), len(head)+aead.NonceSize()+len(key)+aead.Overhead())
	copy(out, head)
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("cannot seal the key: %w", err)
	}
	out = append(out, nonce...)
	return aead.Seal(out, nonce, key, head), nil
}

func envelopeAEAD(dataKey []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(dataKey)
	if err != nil {
		return nil, fmt.Errorf("cannot use the sealed key's data key: %w", err)
	}
	return cipher.NewGCM(block)
}

// encrypt runs systemd-creds encrypt on secret and returns the credential (Base64).
func (s *Sealer) encrypt(ctx context.Context, secret []byte) ([]byte, error) {
	res, err := s.Runner.Run(ctx, sysexec.Cmd{Path: s.Tool, Args: encryptArgs(), Stdin: bytes.NewReader(secret), Timeout: timeout})
	if err != nil {
		return nil, fmt.Errorf("cannot seal the key: %w", err)
	}
	cred := bytes.TrimSpace(res.Stdout)
	if len(cred) == 0 {
		return nil, errors.New("cannot seal the key: systemd-creds printed nothing")
	}
	return cred, nil
}

// Unseal returns the key inside a sealed keyfile's content. The caller zeroes it after use.
func (s *Sealer) Unseal(ctx context.Context, sealed []byte) ([]byte, error) {
	switch {
	case bytes.HasPrefix(sealed, []byte(EnvelopeHeader)):
		return s.unsealEnvelope(ctx, sealed)
	case !bytes.HasPrefix(sealed, []byte(Header)):
		return nil, errors.New("internal error: Unseal of a key that is not sealed")
	}
	return s.decrypt(ctx, sealed[len(Header):])
}

// unsealEnvelope opens what sealEnvelope made.
func (s *Sealer) unsealEnvelope(ctx context.Context, sealed []byte) ([]byte, error) {
	rest := sealed[len(EnvelopeHeader):]
	nl := bytes.IndexByte(rest, '\n')
	if nl <= 0 {
		return nil, errors.New("cannot unseal the key: the sealed keyfile is damaged (no credential line)")
	}
	head, body := sealed[:len(EnvelopeHeader)+nl+1], rest[nl+1:]
	dataKey, err := s.decrypt(ctx, rest[:nl])
	if err != nil {
		return nil, err
	}
	defer clear(dataKey)
	if len(dataKey) != 32 {
		return nil, errors.New("cannot unseal the key: the sealed keyfile is damaged (bad data key)")
	}
	aead, err := envelopeAEAD(dataKey)
	if err != nil {
		return nil, err
	}
	if len(body) < aead.NonceSize()+aead.Overhead() {
		return nil, errors.New("cannot unseal the key: the sealed keyfile is damaged (too short)")
	}
	key, err := aead.Open(nil, body[:aead.NonceSize()], body[aead.NonceSize():], head)
	if err != nil {
		return nil, errors.New("cannot unseal the key: the sealed keyfile is damaged (it fails its integrity check)")
	}
	return key, nil
}

// decrypt runs systemd-creds decrypt on a credential and returns the secret inside.
func (s *Sealer) decrypt(ctx context.Context, cred []byte) ([]byte, error) {
	res, err := s.Runner.Run(ctx, sysexec.Cmd{Path: s.Tool, Args: decryptArgs(), Stdin: bytes.NewReader(cred), Timeout: timeout})
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
