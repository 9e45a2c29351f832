package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// headerFile is the file that receives Enroll's LUKS header backup. The CLI writes it with the
// user's own rights (plugvaultd never writes a path a caller chose): created before the drive
// is formatted, so an unusable name costs nothing, and filled once Enroll returns the bytes.
type headerFile struct {
	path string
	f    *os.File
	fi   os.FileInfo
}

// checkNewHeaderFile refuses early (before any question) a name that already exists.
func checkNewHeaderFile(path string) error {
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		if err == nil {
			return usagef("the header backup file %s already exists (or is a symlink): name a new file", path)
		}
		return fmt.Errorf("cannot check the header backup file %s: %w", path, err)
	}
	return nil
}

// createHeaderFile creates path as a new file, mode 0600: O_EXCL refuses any existing file
// and a symlink (dangling or not), O_NOFOLLOW makes sure of the latter; nothing that exists
// is ever opened, truncated or followed.
func createHeaderFile(path string) (*headerFile, error) {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ELOOP) {
			return nil, usagef("the header backup file %s already exists (or is a symlink): name a new file", path)
		}
		return nil, fmt.Errorf("cannot create the header backup file %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("cannot create the header backup file %s: %w", path, err)
	}
	return &headerFile{path: path, f: f, fi: fi}, nil
}

// commit writes the header backup and closes the file.
func (h *headerFile) commit(header []byte) error {
	defer h.f.Close()
	if len(header) == 0 {
		return fmt.Errorf("cannot write the header backup %s: plugvaultd returned none", h.path)
	}
	if _, err := h.f.Write(header); err != nil {
		return fmt.Errorf("cannot write the header backup %s: %w", h.path, err)
	}
	if err := h.f.Sync(); err != nil {
		return fmt.Errorf("cannot write the header backup %s: %w", h.path, err)
	}
	if err := h.f.Close(); err != nil {
		return fmt.Errorf("cannot write the header backup %s: %w", h.path, err)
	}
	return nil
}

// discard closes the file and removes it, as long as the name still is the empty file this
// process created.
func (h *headerFile) discard() {
	h.f.Close()
	if fi, err := os.Lstat(h.path); err == nil && os.SameFile(fi, h.fi) && fi.Size() == 0 {
		_ = os.Remove(h.path)
	}
}
