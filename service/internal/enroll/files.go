package enroll

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// ensurePrivateDir makes dir (0700, owned by us) or checks it: a symlink or a directory owned
// by someone else is refused; group or world bits are removed.
func ensurePrivateDir(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("cannot create %s: %w", filepath.Dir(dir), err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("cannot create %s: %w", dir, err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("cannot check %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("cannot use %s for keys: it is not a directory (or it is a symlink)", dir)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("cannot use %s for keys: it is owned by uid %d", dir, st.Uid)
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("cannot make %s private: %w", dir, err)
		}
	}
	return nil
}

// writeKeyfile writes a new drive key to path (0400, never over an existing file), sealed
// with Deps.SealKey when it is set. Sealing failing fails the enrollment: a plain key on disk
// where the administrator expects a sealed one would be a silent downgrade.
func (e *Enroller) writeKeyfile(path string, key []byte) error {
	data := key
	if e.d.SealKey != nil {
		sealed, err := e.d.SealKey(context.Background(), key)
		if err != nil {
			return fmt.Errorf("cannot write %s: %w", path, err)
		}
		data = sealed
	}
	return writeNewFile(path, data, 0o400)
}

// writeNewFile writes data to path atomically and never over an existing file: a temporary
// file in the same directory (created exclusively with mode perm, never through a symlink) is
// written and fsynced, then hard-linked to path (which fails if path exists), and the
// directory is fsynced.
func writeNewFile(path string, data []byte, perm os.FileMode) error {
	return writeFileAtomic(path, data, perm, false)
}

// replaceFile is writeNewFile that replaces an existing file (rename).
func replaceFile(path string, data []byte, perm os.FileMode) error {
	return writeFileAtomic(path, data, perm, true)
}

func writeFileAtomic(path string, data []byte, perm os.FileMode, replace bool) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".plugvault-*.tmp")
	if err != nil {
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName)
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
		}
	}()
	if err := tmp.Chmod(perm); err != nil {
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	ok = true
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	if replace {
		err = os.Rename(tmpName, path)
	} else {
		err = os.Link(tmpName, path)
	}
	if err != nil {
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("cannot sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("cannot sync %s: %w", dir, err)
	}
	return nil
}

// removeIfExists removes path; a missing file is not an error.
func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cannot remove %s: %w", path, err)
	}
	return nil
}

// udevRule is the rule that makes desktop automounters (udisks: UDISKS_IGNORE) leave the drive
// and its unlocked mapping alone, so that only plugvaultd unlocks and mounts it.
func udevRule(uuid, mapping string) string {
	return fmt.Sprintf(`# plugvault backup drive, LUKS UUID %[1]s.
# Installed by plugvaultd when the drive was enrolled, removed by "plugvault forget".
# Desktop automounters (udisks) ignore the drive and its unlocked mapping: plugvaultd
# unlocks, mounts and locks it.
SUBSYSTEM=="block", ENV{ID_FS_UUID}=="%[1]s", ENV{UDISKS_IGNORE}="1"
SUBSYSTEM=="block", ENV{DM_NAME}=="%[2]s", ENV{UDISKS_IGNORE}="1"
`, uuid, mapping)
}
