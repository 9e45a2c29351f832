package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/plugvault/plugvault/service/internal/luks"
)

// StickSize is the size of a test stick (a sparse file on the host).
const StickSize = 512 << 20

// StickSpec says how to make a test stick.
type StickSpec struct {
	Name string // short name, also used for the file and the serial
	// FS is the filesystem: "btrfs" (default) or "ext4".
	FS string
	// Plain makes a stick without LUKS (the filesystem on the whole stick).
	Plain bool
	// Blank makes a stick as it comes from the shop after a wipe: no LUKS, no filesystem, all
	// zeros (plugvault enroll formats it).
	Blank bool
	// Tutorial makes a LUKS2 stick the way the classic cryptsetup tutorial does, which is what
	// plugvault adopt meets: luksFormat with a passphrase (slot 0), then luksAddKey of a keyfile
	// (slot 1), both argon2id (the default; kept small so a TCG guest opens them in seconds).
	// The tutorial's "open, mkfs, close" needs device-mapper, so the filesystem is made in the
	// guest (the test does it on the first plug); the stick leaves the host without one.
	Tutorial bool
	// Passphrase is the passphrase slot's secret (a LUKS stick always gets one).
	Passphrase string
	// Label is the filesystem label (default "plugvault").
	Label string
	// Size of a LUKS stick in bytes (0: StickSize).
	Size int64
}

// Stick is a test stick: an image file the VM can plug as a USB mass-storage device.
type Stick struct {
	Name   string
	Path   string
	Serial string
	FS     string
	Label  string
	LUKS   bool
	UUID   string // LUKS UUID (or filesystem UUID of a plain stick)
	// Fingerprint is the LUKS stick's identity as plugvault records it (luks.Fingerprint).
	Fingerprint string
	Key         []byte // the keyfile slot's key (slot 0, PBKDF2 1000 iterations; Tutorial: slot 1, argon2id)
	Passphrase  []byte // the passphrase slot's secret (slot 1, argon2id 32 MiB)

	node, dev string // QMP names while plugged
}

// MakeStick makes a stick in dir the way a user's enrolled stick looks: LUKS2 with a fast
// keyfile slot and a passphrase slot, and an empty filesystem inside. The host has no
// device-mapper, so the filesystem is made on a file 32 MiB smaller than the stick and then
// encrypted in place in user space (cryptsetup reencrypt --encrypt --reduce-device-size 32M).
func MakeStick(dir string, spec StickSpec) (*Stick, error) {
	s := &Stick{Name: spec.Name, Path: filepath.Join(dir, spec.Name+".img"), FS: spec.FS, Label: spec.Label,
		LUKS: !spec.Plain && !spec.Blank}
	if s.FS == "" {
		s.FS = "btrfs"
	}
	if s.Label == "" {
		s.Label = "plugvault"
	}
	// A serial that is unique per stick file, as real sticks have (12 hex digits).
	sum := sha256.Sum256([]byte(s.Path))
	s.Serial = strings.ToUpper(hex.EncodeToString(sum[:6]))
	os.Remove(s.Path)
	if spec.Blank {
		s.FS = ""
		return s, truncate(s.Path, StickSize)
	}
	if spec.Tutorial {
		return s, makeTutorialStick(dir, s, spec)
	}
	size := int64(StickSize)
	if spec.Size > 0 && s.LUKS {
		size = spec.Size
	}
	fsSize := size
	if s.LUKS {
		fsSize -= 32 << 20
	}
	if err := truncate(s.Path, fsSize); err != nil {
		return nil, err
	}
	var mkfs []string
	switch s.FS {
	case "btrfs":
		mkfs = []string{"mkfs.btrfs", "-q", "-f", "-L", s.Label, s.Path}
	case "ext4":
		mkfs = []string{"mkfs.ext4", "-q", "-F", "-L", s.Label, s.Path}
	default:
		return nil, fmt.Errorf("cannot make a stick with filesystem %q", s.FS)
	}
	if _, err := run(nil, mkfs...); err != nil {
		return nil, err
	}
	if !s.LUKS {
		out, err := run(nil, "blkid", "-o", "value", "-s", "UUID", s.Path)
		s.UUID = strings.TrimSpace(out)
		return s, err
	}
	if err := truncate(s.Path, size); err != nil {
		return nil, err
	}
	s.Key = make([]byte, 4096)
	if _, err := io.ReadFull(rand.Reader, s.Key); err != nil {
		return nil, err
	}
	s.Passphrase = []byte(spec.Passphrase)
	if len(s.Passphrase) == 0 {
		s.Passphrase = []byte("correct horse battery staple " + spec.Name)
	}
	// Secrets go to cryptsetup through files in a private directory, never argv.
	keyDir, err := os.MkdirTemp(dir, "keys-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(keyDir)
	keyPath, passPath := filepath.Join(keyDir, "key"), filepath.Join(keyDir, "pass")
	if err := os.WriteFile(keyPath, s.Key, 0o400); err != nil {
		return nil, err
	}
	if err := os.WriteFile(passPath, s.Passphrase, 0o400); err != nil {
		return nil, err
	}
	// Slot 0: the keyfile, PBKDF2 with 1000 iterations (a random key needs no stretching, and
	// the guest under TCG opens it in about a second).
	if _, err := run(nil, "cryptsetup", "reencrypt", "--encrypt", "--type", "luks2", "--batch-mode",
		"--reduce-device-size", "32M", "--key-file", keyPath, "--key-slot", "0",
		"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", s.Path); err != nil {
		return nil, err
	}
	// Slot 1: the passphrase, argon2id kept small enough for a 2 GiB TCG guest.
	if _, err := run(nil, "cryptsetup", "luksAddKey", "--batch-mode", "--key-file", keyPath, "--key-slot", "1",
		"--pbkdf", "argon2id", "--pbkdf-memory", "32768", "--pbkdf-force-iterations", "4", "--pbkdf-parallel", "1",
		s.Path, passPath); err != nil {
		return nil, err
	}
	out, err := run(nil, "cryptsetup", "luksUUID", s.Path)
	if err != nil {
		return nil, err
	}
	s.UUID = strings.TrimSpace(out)
	if s.Fingerprint, err = fingerprint(s.Path, s.UUID); err != nil {
		return nil, err
	}
	return s, nil
}

// fingerprint computes what plugvault records as the identity of the LUKS image at path.
func fingerprint(path, uuid string) (string, error) {
	out, err := run(nil, "cryptsetup", "luksDump", "--dump-json-metadata", path)
	if err != nil {
		return "", err
	}
	h, err := luks.ParseDump([]byte(out))
	if err != nil {
		return "", err
	}
	return luks.Fingerprint(uuid, h)
}

// makeTutorialStick formats s like the classic tutorial: cryptsetup luksFormat with a
// passphrase, then cryptsetup luksAddKey with a 1 MiB keyfile. Both slots are argon2id, the default,
// with a small fixed cost (32 MiB, 4 iterations) instead of the benchmarked one, so that a TCG
// guest opens them in seconds. Secrets reach cryptsetup through files in a private directory.
func makeTutorialStick(dir string, s *Stick, spec StickSpec) error {
	if err := truncate(s.Path, StickSize); err != nil {
		return err
	}
	s.Key = make([]byte, 1<<20) // dd if=/dev/urandom bs=1M count=1, as the tutorial does
	if _, err := io.ReadFull(rand.Reader, s.Key); err != nil {
		return err
	}
	s.Passphrase = []byte(spec.Passphrase)
	if len(s.Passphrase) == 0 {
		s.Passphrase = []byte("tutorial passphrase " + spec.Name)
	}
	keyDir, err := os.MkdirTemp(dir, "keys-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(keyDir)
	keyPath, passPath := filepath.Join(keyDir, "key"), filepath.Join(keyDir, "pass")
	if err := os.WriteFile(keyPath, s.Key, 0o400); err != nil {
		return err
	}
	if err := os.WriteFile(passPath, s.Passphrase, 0o400); err != nil {
		return err
	}
	fast := []string{"--pbkdf", "argon2id", "--pbkdf-memory", "32768", "--pbkdf-force-iterations", "4", "--pbkdf-parallel", "1"}
	format := append([]string{"cryptsetup", "luksFormat", "--type", "luks2", "--batch-mode", "--key-file", passPath}, fast...)
	if _, err := run(nil, append(format, s.Path)...); err != nil {
		return err
	}
	add := append([]string{"cryptsetup", "luksAddKey", "--batch-mode", "--key-file", passPath}, fast...)
	if _, err := run(nil, append(add, s.Path, keyPath)...); err != nil {
		return err
	}
	out, err := run(nil, "cryptsetup", "luksUUID", s.Path)
	s.UUID = strings.TrimSpace(out)
	return err
}

// Digest hashes the whole stick file: "left alone" means this did not change.
func (s *Stick) Digest() (string, error) {
	f, err := os.Open(s.Path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func truncate(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("cannot create %s: %w", path, err)
	}
	defer f.Close()
	return f.Truncate(size)
}

// run runs a host command; a failure carries its output.
func run(stdin io.Reader, argv ...string) (string, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = stdin
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("cannot run %s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}
