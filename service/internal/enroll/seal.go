package enroll

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/plugvault/plugvault/service/internal/config"
	"github.com/plugvault/plugvault/service/internal/keyseal"
)

// SealKeys seals, in place, every configured drive's plain keyfile that lives in the key
// directory, and returns the paths it sealed. Sealed keys, drives without a keyfile and
// keyfiles configured elsewhere (the administrator's files, which root does not rewrite) are
// left alone. It stops at the first failure; every keyfile is then either plain or sealed.
func (e *Enroller) SealKeys(ctx context.Context) ([]string, error) {
	if e.d.SealKey == nil {
		return nil, errors.New("cannot seal keys: systemd-creds is not available")
	}
	if err := e.lock("seal keys"); err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	cfg, err := e.d.LoadConfig(e.d.ConfigPath)
	if err != nil {
		return nil, fmt.Errorf("cannot seal keys: cannot read the configuration: %w", err)
	}
	read := e.d.ReadStoredKey
	if read == nil {
		read = config.ReadKeyfile
	}
	var sealed []string
	for _, d := range cfg.Drives {
		path := d.Keyfile
		if path == "" {
			path = e.keyPath(d.LuksUUID)
		}
		if filepath.Dir(path) != filepath.Clean(e.d.KeyDir) {
			e.d.Logger.Info("not sealing a keyfile outside the key directory", "name", d.Name, "keyfile", path)
			continue
		}
		stored, err := read(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue // a passphrase-only drive
		}
		if err != nil {
			return sealed, fmt.Errorf("cannot seal the key of %s: %w", d.Name, err)
		}
		if keyseal.IsSealed(stored) {
			clear(stored)
			continue
		}
		data, err := e.d.SealKey(ctx, stored)
		clear(stored)
		if err != nil {
			return sealed, fmt.Errorf("cannot seal the key of %s: %w", d.Name, err)
		}
		if err := replaceFile(path, data, 0o400); err != nil {
			return sealed, fmt.Errorf("cannot seal the key of %s: %w", d.Name, err)
		}
		e.d.Logger.Info("key sealed", "name", d.Name, "keyfile", path)
		sealed = append(sealed, path)
	}
	return sealed, nil
}
