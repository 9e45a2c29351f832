// Package config reads /etc/plugvault/config.toml: strict (unknown keys are errors), versioned
// (version = 1), and validated as a whole so that every problem is reported at once.
package config

// DefaultPath is where the daemon reads its configuration.
const DefaultPath = "/etc/plugvault/config.toml"

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
	// Keyfile defaults to DefaultKeyDir/<luks_uuid>.key. An empty or missing keyfile means the
	// drive is unlocked with a passphrase at every plug.
	Keyfile string `toml:"keyfile"`
	// KeySlot is the LUKS keyslot of the keyfile (-1 = unknown: cryptsetup tries them all).
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
