package enroll

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// maxHeaderBackup bounds a header backup: it goes back to the caller in one D-Bus reply, in
// base64 (4/3 of its size), and the system bus refuses messages over 32 MiB (dbus-daemon's
// max_message_size). A LUKS2 header as luksFormat makes it by default is 16 MiB (metadata and
// keyslot area).
const maxHeaderBackup = 24<<20 - 64<<10

// headerBackup makes a LUKS header backup of device and returns its bytes. LUKS.HeaderBackup
// writes it into a new directory of our own (0700, under Deps.TempDir), which is removed
// afterwards: no path the caller chose is ever written or removed here.
func (e *Enroller) headerBackup(ctx context.Context, device string) ([]byte, error) {
	dir, err := os.MkdirTemp(e.d.TempDir, "plugvault-header-*")
	if err != nil {
		return nil, fmt.Errorf("cannot make a directory for the LUKS header backup: %w", err)
	}
	defer func() {
		if err := os.RemoveAll(dir); err != nil {
			e.d.Logger.Warn("cannot remove the header backup's temporary directory", "dir", dir, "err", err)
		}
	}()
	file := filepath.Join(dir, "header")
	if err := e.d.LUKS.HeaderBackup(ctx, device, file); err != nil {
		return nil, fmt.Errorf("cannot make the LUKS header backup: %w", err)
	}
	b, err := readHeaderBackup(file)
	if err != nil {
		return nil, fmt.Errorf("cannot read the LUKS header backup: %w", err)
	}
	return b, nil
}

// readHeaderBackup reads the regular file path, refusing a symlink and anything over
// maxHeaderBackup.
func readHeaderBackup(path string) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if fi.Size() > maxHeaderBackup {
		return nil, fmt.Errorf("it is %d bytes, more than the %d a D-Bus reply can carry", fi.Size(), maxHeaderBackup)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxHeaderBackup+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxHeaderBackup || len(b) == 0 {
		return nil, fmt.Errorf("it is %d bytes, want 1 to %d", len(b), maxHeaderBackup)
	}
	return b, nil
}
