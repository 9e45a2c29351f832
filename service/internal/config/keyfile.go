package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// keyOwnerUID is who must own keyfiles and their directory: root. Tests that run without root
// set it to their own uid to exercise the mode and type checks.
var keyOwnerUID uint32 = 0

// MaxKeyfileSize bounds what ReadKeyfile reads: cryptsetup's own default limit (8 MiB), so
// that every keyfile cryptsetup accepts, such as the 1 MiB ones made by hand with dd, works.
const MaxKeyfileSize = 8 << 20

// CheckKeyfile checks that path is safe to use as a LUKS key: a regular file (never a symbolic
// link, which is not followed), owned by root, mode 0400 or 0600, in a root-owned directory of
// mode 0700. The error says what is wrong and the command that fixes it. A missing file wraps
// fs.ErrNotExist, so that the caller can fall back to asking for the passphrase.
func CheckKeyfile(path string) error {
	if msg := absCleanProblem(path); msg != "" {
		return fmt.Errorf("cannot use keyfile: %s", msg)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return keyfileStatError(path, err)
	}
	if err := checkKeyfileInfo(path, fi); err != nil {
		return err
	}
	return checkKeyDir(path)
}

// ReadKeyfile reads a key after the checks of CheckKeyfile, made on the opened file itself
// (O_NOFOLLOW, then fstat), so that the file cannot be swapped between check and read. The
// caller zeroes the key when done with it.
func ReadKeyfile(path string) ([]byte, error) {
	if msg := absCleanProblem(path); msg != "" {
		return nil, fmt.Errorf("cannot use keyfile: %s", msg)
	}
	if err := checkKeyDir(path); err != nil {
		return nil, err
	}
	// O_NONBLOCK: a FIFO planted in place of the key must not block the open.
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("cannot use keyfile %s: it is a symbolic link, which plugvault never follows; put the key file itself there", path)
		}
		return nil, keyfileStatError(path, &fs.PathError{Op: "open", Path: path, Err: err})
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cannot use keyfile %s: %w", path, err)
	}
	if err := checkKeyfileInfo(path, fi); err != nil {
		return nil, err
	}
	if fi.Size() > MaxKeyfileSize {
		return nil, fmt.Errorf("cannot use keyfile %s: larger than %d bytes", path, MaxKeyfileSize)
	}
	// One buffer of the file's size, and a byte more to notice a file that grew: io.ReadAll
	// would leave partial copies of the key in every buffer it outgrows.
	key := make([]byte, fi.Size()+1)
	n, err := io.ReadFull(f, key)
	switch {
	case err == nil:
		clear(key)
		return nil, fmt.Errorf("cannot use keyfile %s: it changed while it was read", path)
	case !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF):
		clear(key)
		return nil, fmt.Errorf("cannot read keyfile %s: %w", path, err)
	}
	key = key[:n]
	if len(key) == 0 {
		return nil, fmt.Errorf("cannot use keyfile %s: it is empty", path)
	}
	return key, nil
}

func keyfileStatError(path string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cannot use keyfile %s: %w", path, fs.ErrNotExist)
	}
	return fmt.Errorf("cannot use keyfile %s: %w", path, err)
}

func checkKeyfileInfo(path string, fi fs.FileInfo) error {
	switch mode := fi.Mode(); {
	case mode&fs.ModeSymlink != 0:
		return fmt.Errorf("cannot use keyfile %s: it is a symbolic link, which plugvault never follows; put the key file itself there", path)
	case !mode.IsRegular():
		return fmt.Errorf("cannot use keyfile %s: it is not a regular file (%s)", path, fileKind(mode))
	}
	if uid := ownerOf(fi); uid != keyOwnerUID {
		return fmt.Errorf("cannot use keyfile %s: owned by uid %d, not root; run: chown root:root %s", path, uid, path)
	}
	perm := fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
	if perm != 0o400 && perm != 0o600 {
		return fmt.Errorf("cannot use keyfile %s: mode %s; run: chmod 0400 %s", path, describeMode(fi.Mode()), path)
	}
	return nil
}

func checkKeyDir(path string) error {
	dir := filepath.Dir(path)
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("cannot use keyfile %s: %w", path, err)
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("cannot use keyfile %s: its directory %s is a symbolic link, which plugvault never follows", path, dir)
	case !fi.IsDir():
		return fmt.Errorf("cannot use keyfile %s: %s is not a directory", path, dir)
	}
	if uid := ownerOf(fi); uid != keyOwnerUID {
		return fmt.Errorf("cannot use keyfile %s: its directory %s is owned by uid %d, not root; run: chown root:root %s", path, dir, uid, dir)
	}
	if perm := fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky); perm != 0o700 {
		return fmt.Errorf("cannot use keyfile %s: its directory %s: mode %s; run: chmod 0700 %s", path, dir, describeMode(fi.Mode()), dir)
	}
	return nil
}

func ownerOf(fi fs.FileInfo) uint32 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Uid
	}
	return ^uint32(0)
}

// describeMode renders a permission problem the way an administrator thinks about it:
// "0644 is readable by others".
func describeMode(m fs.FileMode) string {
	perm := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		perm |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		perm |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		perm |= 0o1000
	}
	var what []string
	if m.IsDir() {
		if perm&0o077 != 0 {
			what = append(what, "open to others")
		}
	} else {
		if perm&0o044 != 0 {
			what = append(what, "readable by others")
		}
		if perm&0o022 != 0 {
			what = append(what, "writable by others")
		}
		if perm&0o111 != 0 {
			what = append(what, "executable")
		}
	}
	if perm&0o7000 != 0 {
		what = append(what, "setuid, setgid or sticky")
	}
	s := fmt.Sprintf("%04o", perm)
	if len(what) == 0 {
		if m.IsDir() {
			return s + " is not 0700"
		}
		return s + " is neither 0400 nor 0600"
	}
	return s + " is " + strings.Join(what, " and ")
}

func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "mode " + m.String()
}
