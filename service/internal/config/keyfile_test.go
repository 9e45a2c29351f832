package config_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/plugvault/plugvault/service/api/apitest"
	"github.com/plugvault/plugvault/service/internal/config"
)

// keyDir makes a key directory laid out as plugvault expects it (mode 0700) and returns it.
func keyDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "keys")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

func writeKey(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte("0123456789abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// TestCheckKeyfile covers type and mode checks. The owner check expects the test's own uid, so
// this runs without root; TestCheckKeyfileOwnerRoot checks ownership for real.
func TestCheckKeyfile(t *testing.T) {
	config.SetKeyOwner(t, uint32(os.Geteuid()))
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir string) string // returns the keyfile path
		want  string                                // "%[1]s" is the path, "%[2]s" its directory
	}{{
		name:  "0400 is fine",
		setup: func(t *testing.T, dir string) string { p := filepath.Join(dir, "k"); writeKey(t, p, 0o400); return p },
	}, {
		name:  "0600 is fine",
		setup: func(t *testing.T, dir string) string { p := filepath.Join(dir, "k"); writeKey(t, p, 0o600); return p },
	}, {
		name:  "readable by others",
		setup: func(t *testing.T, dir string) string { p := filepath.Join(dir, "k"); writeKey(t, p, 0o644); return p },
		want:  "cannot use keyfile %[1]s: mode 0644 is readable by others; run: chmod 0400 %[1]s",
	}, {
		name:  "readable by the group",
		setup: func(t *testing.T, dir string) string { p := filepath.Join(dir, "k"); writeKey(t, p, 0o440); return p },
		want:  "cannot use keyfile %[1]s: mode 0440 is readable by others; run: chmod 0400 %[1]s",
	}, {
		name:  "writable by others",
		setup: func(t *testing.T, dir string) string { p := filepath.Join(dir, "k"); writeKey(t, p, 0o602); return p },
		want:  "cannot use keyfile %[1]s: mode 0602 is writable by others; run: chmod 0400 %[1]s",
	}, {
		name:  "executable",
		setup: func(t *testing.T, dir string) string { p := filepath.Join(dir, "k"); writeKey(t, p, 0o700); return p },
		want:  "cannot use keyfile %[1]s: mode 0700 is executable; run: chmod 0400 %[1]s",
	}, {
		name:  "write only",
		setup: func(t *testing.T, dir string) string { p := filepath.Join(dir, "k"); writeKey(t, p, 0o200); return p },
		want:  "cannot use keyfile %[1]s: mode 0200 is neither 0400 nor 0600; run: chmod 0400 %[1]s",
	}, {
		name: "symbolic link to a good key",
		setup: func(t *testing.T, dir string) string {
			real := filepath.Join(dir, "real")
			writeKey(t, real, 0o400)
			p := filepath.Join(dir, "k")
			if err := os.Symlink(real, p); err != nil {
				t.Fatal(err)
			}
			return p
		},
		want: "cannot use keyfile %[1]s: it is a symbolic link, which plugvault never follows; put the key file itself there",
	}, {
		name: "directory",
		setup: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "k")
			if err := os.Mkdir(p, 0o700); err != nil {
				t.Fatal(err)
			}
			return p
		},
		want: "cannot use keyfile %[1]s: it is not a regular file (a directory)",
	}, {
		name: "named pipe",
		setup: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "k")
			if err := syscall.Mkfifo(p, 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		},
		want: "cannot use keyfile %[1]s: it is not a regular file (a named pipe)",
	}, {
		name:  "missing",
		setup: func(t *testing.T, dir string) string { return filepath.Join(dir, "k") },
		want:  "cannot use keyfile %[1]s: file does not exist",
	}, {
		name: "directory open to others",
		setup: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "k")
			writeKey(t, p, 0o400)
			if err := os.Chmod(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			return p
		},
		want: "cannot use keyfile %[1]s: its directory %[2]s: mode 0755 is open to others; run: chmod 0700 %[2]s",
	}, {
		name: "directory is a symbolic link",
		setup: func(t *testing.T, dir string) string {
			writeKey(t, filepath.Join(dir, "k"), 0o400)
			link := filepath.Join(filepath.Dir(dir), "linked-keys")
			if err := os.Symlink(dir, link); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(link, "k")
		},
		want: "cannot use keyfile %[1]s: its directory %[2]s is a symbolic link, which plugvault never follows",
	}, {
		name:  "relative path",
		setup: func(t *testing.T, dir string) string { return "keys/k" },
		want:  `cannot use keyfile: "keys/k" is not an absolute path; write it starting with /`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.setup(t, keyDir(t))
			err := config.CheckKeyfile(p)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("CheckKeyfile: %v", err)
				}
				key, err := config.ReadKeyfile(p)
				if err != nil || string(key) != "0123456789abcdef" {
					t.Fatalf("ReadKeyfile = %q, %v", key, err)
				}
				return
			}
			want := fmtPath(tc.want, p)
			if err == nil || err.Error() != want {
				t.Fatalf("CheckKeyfile error:\n%v\nwant:\n%s", err, want)
			}
			// ReadKeyfile refuses the same files. Its message differs only where it checks
			// the opened file rather than the name.
			if _, rerr := config.ReadKeyfile(p); rerr == nil {
				t.Fatalf("ReadKeyfile accepted a file CheckKeyfile refuses (%v)", err)
			}
		})
	}
}

func fmtPath(format, path string) string {
	if !strings.Contains(format, "%[") {
		return format
	}
	return fmt.Sprintf(format, path, filepath.Dir(path))
}

func TestCheckKeyfileMissingIsNotExist(t *testing.T) {
	config.SetKeyOwner(t, uint32(os.Geteuid()))
	p := filepath.Join(keyDir(t), "absent.key")
	if err := config.CheckKeyfile(p); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("CheckKeyfile(missing) = %v, want fs.ErrNotExist", err)
	}
}

func TestReadKeyfileRefusesEmpty(t *testing.T) {
	config.SetKeyOwner(t, uint32(os.Geteuid()))
	p := filepath.Join(keyDir(t), "k")
	if err := os.WriteFile(p, nil, 0o400); err != nil {
		t.Fatal(err)
	}
	want := "cannot use keyfile " + p + ": it is empty"
	if _, err := config.ReadKeyfile(p); err == nil || err.Error() != want {
		t.Fatalf("ReadKeyfile(empty) = %v, want %s", err, want)
	}
}

// A keyfile made by hand with dd bs=1M count=1 is read whole; one byte over cryptsetup's own
// limit (8 MiB) is refused.
func TestReadKeyfileSizes(t *testing.T) {
	config.SetKeyOwner(t, uint32(os.Geteuid()))
	dir := keyDir(t)
	for _, tc := range []struct {
		size int
		ok   bool
	}{{1 << 20, true}, {config.MaxKeyfileSize, true}, {config.MaxKeyfileSize + 1, false}} {
		p := filepath.Join(dir, fmt.Sprintf("%d.key", tc.size))
		key := make([]byte, tc.size)
		for i := range key {
			key[i] = byte(i * 31)
		}
		if err := os.WriteFile(p, key, 0o400); err != nil {
			t.Fatal(err)
		}
		got, err := config.ReadKeyfile(p)
		if tc.ok && (err != nil || string(got) != string(key)) {
			t.Errorf("%d bytes: read %d bytes, %v", tc.size, len(got), err)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "larger than")) {
			t.Errorf("%d bytes: %d bytes read, error %v; want a refusal", tc.size, len(got), err)
		}
	}
}

// TestCheckKeyfileOwnerRoot checks ownership with real files: root-owned passes, a key or a
// directory owned by another user is refused.
func TestCheckKeyfileOwnerRoot(t *testing.T) {
	apitest.RequireRoot(t)
	const nobody = 65534
	dir := keyDir(t)
	p := filepath.Join(dir, "k")
	writeKey(t, p, 0o400)
	if err := config.CheckKeyfile(p); err != nil {
		t.Fatalf("root-owned key: %v", err)
	}
	if err := os.Lchown(p, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	want := fmtPath("cannot use keyfile %[1]s: owned by uid 65534, not root; run: chown root:root %[1]s", p)
	if err := config.CheckKeyfile(p); err == nil || err.Error() != want {
		t.Fatalf("key owned by nobody: %v\nwant: %s", err, want)
	}
	if _, err := config.ReadKeyfile(p); err == nil || err.Error() != want {
		t.Fatalf("ReadKeyfile of a key owned by nobody: %v\nwant: %s", err, want)
	}
	if err := os.Lchown(p, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(dir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	want = fmtPath("cannot use keyfile %[1]s: its directory %[2]s is owned by uid 65534, not root; run: chown root:root %[2]s", p)
	if err := config.CheckKeyfile(p); err == nil || err.Error() != want {
		t.Fatalf("directory owned by nobody: %v\nwant: %s", err, want)
	}
}

// ReadKeyfile reads the key into one buffer of its size: a reader that grows its buffer
// (io.ReadAll) would leave partial copies of the key behind, unzeroed. Measured as the bytes
// allocated while reading a key of the largest size allowed.
func TestReadKeyfileAllocatesOneBuffer(t *testing.T) {
	config.SetKeyOwner(t, uint32(os.Geteuid()))
	p := filepath.Join(keyDir(t), "k")
	key := make([]byte, config.MaxKeyfileSize)
	for i := range key {
		key[i] = byte(i%251 + 1)
	}
	if err := os.WriteFile(p, key, 0o400); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	got, err := config.ReadKeyfile(p)
	runtime.ReadMemStats(&after)
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("ReadKeyfile = %d bytes, %v", len(got), err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 3*uint64(len(key))/2 {
		t.Errorf("reading a %d-byte key allocated %d bytes: the key was copied between buffers", len(key), n)
	}
}
