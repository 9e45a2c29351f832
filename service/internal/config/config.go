// Package config reads /etc/plugvault/config.toml: strict (unknown keys are errors), versioned
// (version = 1), and validated as a whole so that every problem is reported at once, each with
// the place in the file and a hint how to fix it.
//
// It also checks keyfiles before the daemon trusts them (CheckKeyfile), and adds or removes a
// drive in the file without losing the administrator's comments (AppendDrive, RemoveDrive).
// The file holds no secrets: keys live in DefaultKeyDir, one file per drive.
package config

import _ "embed"

// DefaultPath is where the daemon reads its configuration.
const DefaultPath = "/etc/plugvault/config.toml"

// DefaultMountBase is where private mount points are created unless mount_base says otherwise.
const DefaultMountBase = "/run/plugvault"

// DefaultReminderDays is how many days without a backup pass before the user is reminded.
const DefaultReminderDays = 7

// Version is the only configuration format version this package reads.
const Version = 1

// DefaultKeyDir holds the drives' keyfiles (root, 0700; keys 0400 or 0600).
const DefaultKeyDir = "/etc/plugvault/keys"

// Config is the whole file.
type Config struct {
	Version      int     `toml:"version"`
	ReminderDays uint32  `toml:"reminder_days"` // 0 turns reminders off
	MountBase    string  `toml:"mount_base"`    // private mount points live below it
	Drives       []Drive `toml:"drive"`
}

// Drive is one enrolled drive ([[drive]]).
type Drive struct {
	Name     string `toml:"name"`
	LuksUUID string `toml:"luks_uuid"`
	// Fingerprint identifies the drive by its LUKS UUID and volume-key digest
	// (luks.Fingerprint), recorded at enroll or adopt, or at the first keyfile unlock of a
	// drive whose entry has none. Empty: not recorded yet.
	Fingerprint string `toml:"fingerprint"`
	// Keyfile defaults to DefaultKeyDir/<luks_uuid>.key. An empty or missing keyfile means the
	// drive is unlocked with a passphrase at every plug.
	Keyfile string `toml:"keyfile"`
	// KeySlot is the LUKS keyslot of the keyfile (-1 = unknown: cryptsetup tries them all).
	// Load sets -1 when key_slot is absent; a Drive built in code must set it (0 is slot 0).
	KeySlot int `toml:"key_slot"`
	// Sources are absolute directories to back up.
	Sources  []string `toml:"sources"`
	Excludes []string `toml:"excludes"`
	// RunAs is the user the engine runs as; "root" only for system sources.
	RunAs string `toml:"run_as"`
	// MountOptions are extra options for the drive's filesystem (from an allow-list).
	MountOptions []string  `toml:"mount_options"`
	Retention    Retention `toml:"retention"`
}

// Retention is Time Machine style thinning of old snapshots.
type Retention struct {
	KeepAllHours   int `toml:"keep_all_hours"`   // keep every snapshot this young (default 24)
	DailyDays      int `toml:"daily_days"`       // then one per day for this many days (default 30)
	WeeklyWeeks    int `toml:"weekly_weeks"`     // then one per week for this many weeks (0 = forever)
	MinFreePercent int `toml:"min_free_percent"` // thin oldest first below this free space (default 10)
}

// Retention defaults, used by EffectiveRetention for fields left at zero.
const (
	DefaultKeepAllHours   = 24
	DefaultDailyDays      = 30
	DefaultWeeklyWeeks    = 0 // forever
	DefaultMinFreePercent = 10
)

// Defaults returns the configuration used when there is no file: version 1, reminders after
// DefaultReminderDays, mounts below DefaultMountBase, and no drives.
func Defaults() *Config {
	return &Config{Version: Version, ReminderDays: DefaultReminderDays, MountBase: DefaultMountBase}
}

// KeyfilePath returns the drive's keyfile: Keyfile if set, else DefaultKeyDir/<luks_uuid>.key.
func (d Drive) KeyfilePath() string {
	if d.Keyfile != "" {
		return d.Keyfile
	}
	return DefaultKeyDir + "/" + d.LuksUUID + ".key"
}

// EffectiveRetention returns the drive's retention with every field left at zero replaced by
// its default: keep everything for 24 hours, then one per day for 30 days, then one per week
// forever (weekly_weeks 0), and thin the oldest when less than 10% of the drive is free.
func (d Drive) EffectiveRetention() Retention {
	r := d.Retention
	if r.KeepAllHours == 0 {
		r.KeepAllHours = DefaultKeepAllHours
	}
	if r.DailyDays == 0 {
		r.DailyDays = DefaultDailyDays
	}
	if r.MinFreePercent == 0 {
		r.MinFreePercent = DefaultMinFreePercent
	}
	return r
}

// Example is the commented example configuration that documents every key with its default
// (installed as config.toml.example).
//
//go:embed example.toml
var Example []byte
