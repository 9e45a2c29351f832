// stub: delete when the config stream lands.
//
// Minimal Load and Defaults so that plugvaultd compiles before the config stream is merged.
// Load does not parse TOML: a missing file gives the defaults, an existing one is refused.

package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// Defaults returns the configuration used when there is no file.
func Defaults() *Config {
	return &Config{Version: 1, ReminderDays: 7, MountBase: "/run/plugvault"}
}

// Load reads the configuration at path; a missing file means Defaults().
func Load(path string) (*Config, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return Defaults(), nil
	} else if err != nil {
		return nil, fmt.Errorf("%s: cannot read: %w", path, err)
	}
	return nil, errors.Join(fmt.Errorf("%s: cannot parse: the configuration loader is a stub (not merged yet)", path))
}
