package luks

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// VolumeKeyDigest is the header's digest of the volume key: cryptsetup checks every key slot's
// decrypted volume key against it before it opens the data. Anyone can read it, but only a
// holder of the volume key can make a header whose key slot passes it.
type VolumeKeyDigest struct {
	Type       string // "pbkdf2" (LUKS2 digest type; LUKS1 always uses PBKDF2)
	Hash       string // "sha256", "sha1", …
	Iterations int64
	Salt       []byte
	Digest     []byte
}

// fingerprintVersion prefixes every fingerprint, so that the scheme can change later.
const fingerprintVersion = "v1"

// FingerprintRE matches a fingerprint as Fingerprint writes it.
var FingerprintRE = regexp.MustCompile(`^v1:[0-9a-f]{64}$`)

// Fingerprint identifies a LUKS device by its UUID and its volume-key digest: a SHA-256 over
// both, written "v1:<hex>". A copied UUID alone does not reproduce it; a stick whose header
// has this fingerprint and that opens (so cryptsetup verified the key against this digest)
// holds the volume key the fingerprint was taken from.
func Fingerprint(uuid string, h Header) (string, error) {
	d := h.VolumeKey
	if h.volumeKeyProblem != "" {
		return "", fmt.Errorf("cannot fingerprint the LUKS header: %s", h.volumeKeyProblem)
	}
	if len(d.Digest) == 0 || len(d.Salt) == 0 || d.Hash == "" {
		return "", fmt.Errorf("cannot fingerprint the LUKS header: it has no volume-key digest")
	}
	if err := CheckUUID(strings.ToLower(uuid)); err != nil {
		return "", fmt.Errorf("cannot fingerprint the LUKS header: %q is not a canonical UUID", uuid)
	}
	var b strings.Builder
	b.WriteString("plugvault volume-key fingerprint " + fingerprintVersion + "\n")
	for _, kv := range [][2]string{
		{"uuid", strings.ToLower(uuid)},
		{"luks", strconv.Itoa(h.Version)},
		{"type", d.Type},
		{"hash", d.Hash},
		{"iterations", strconv.FormatInt(d.Iterations, 10)},
		{"salt", base64.StdEncoding.EncodeToString(d.Salt)},
		{"digest", base64.StdEncoding.EncodeToString(d.Digest)},
	} {
		b.WriteString(kv[0] + "=" + kv[1] + "\n")
	}
	sum := sha256.Sum256([]byte(b.String()))
	return fingerprintVersion + ":" + hex.EncodeToString(sum[:]), nil
}

// Identify reads device's LUKS UUID and header and returns both the UUID and the header's
// fingerprint (see the package function Fingerprint).
func (c *Cryptsetup) Identify(ctx context.Context, device string) (uuid, fingerprint string, err error) {
	if uuid, err = c.UUID(ctx, device); err != nil {
		return "", "", err
	}
	h, err := c.Dump(ctx, device)
	if err != nil {
		return "", "", err
	}
	fingerprint, err = Fingerprint(uuid, h)
	return uuid, fingerprint, err
}
