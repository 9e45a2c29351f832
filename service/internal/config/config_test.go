package config_test

import (
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/plugvault/plugvault/service/internal/config"
)

// fakeUsers stands in for /etc/passwd: only alice and root exist.
func fakeUsers(t *testing.T) {
	config.SetLookupUser(t, func(name string) (*user.User, error) {
		switch name {
		case "alice", "root":
			return &user.User{Username: name}, nil
		}
		return nil, user.UnknownUserError(name)
	})
}

const uuidA = "0b5d1f57-9b4e-4d8e-a1c1-6f2f3c6d2e10"
const uuidB = "6d1e0c3a-2f4b-4c1d-9e8f-0a1b2c3d4e5f"

func TestLoadMissingFileIsDefaults(t *testing.T) {
	c, err := config.Load(filepath.Join(t.TempDir(), "config.toml"))
	if err != nil {
		t.Fatalf("Load of a missing file: %v", err)
	}
	want := &config.Config{Version: 1, ReminderDays: 7, MountBase: "/run/plugvault"}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("Load of a missing file = %+v, want %+v", c, want)
	}
	if !reflect.DeepEqual(config.Defaults(), want) {
		t.Fatalf("Defaults() = %+v, want %+v", config.Defaults(), want)
	}
	if err := config.Defaults().Validate(); err != nil {
		t.Fatalf("Defaults() does not validate: %v", err)
	}
}

func TestLoadUnreadableFileIsAnError(t *testing.T) {
	// A directory where the file should be: not "missing", so not defaults.
	dir := t.TempDir()
	_, err := config.Load(dir)
	if err == nil || !strings.HasPrefix(err.Error(), "cannot read configuration: ") {
		t.Fatalf("Load(directory) error = %v, want a read error", err)
	}
}

func TestLoadExample(t *testing.T) {
	fakeUsers(t)
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, config.Example, 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(path)
	if err != nil {
		t.Fatalf("the example does not load:\n%v", err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("the example does not validate:\n%v", err)
	}
	want := &config.Config{
		Version:      1,
		ReminderDays: 7,
		MountBase:    "/run/plugvault",
		Drives: []config.Drive{{
			Name:         "blue stick",
			LuksUUID:     uuidA,
			Fingerprint:  "v1:32e8220b0d088bb575037cdf4e8260417c40828dc7f8111c1679d2ed0297365b",
			Keyfile:      "/etc/plugvault/keys/" + uuidA + ".key",
			KeySlot:      1,
			Sources:      []string{"/home/alice"},
			Excludes:     []string{"/home/alice/.cache", "*.iso"},
			RunAs:        "alice",
			MountOptions: []string{"compress=zstd"},
			Retention:    config.Retention{KeepAllHours: 24, DailyDays: 30, WeeklyWeeks: 0, MinFreePercent: 10},
		}},
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("example loaded as\n%+v\nwant\n%+v", c, want)
	}
	// The example documents the defaults: what it sets must be what an empty drive gets.
	d := c.Drives[0]
	if got := (config.Drive{LuksUUID: uuidA}).KeyfilePath(); got != d.Keyfile {
		t.Errorf("the example's keyfile %q is not the default %q", d.Keyfile, got)
	}
	if got := (config.Drive{}).EffectiveRetention(); got != d.Retention {
		t.Errorf("the example's retention %+v is not the default %+v", d.Retention, got)
	}
	def := config.Defaults()
	if c.ReminderDays != def.ReminderDays || c.MountBase != def.MountBase {
		t.Errorf("the example's reminder_days/mount_base %d/%q are not the defaults %d/%q",
			c.ReminderDays, c.MountBase, def.ReminderDays, def.MountBase)
	}
}

func TestExampleDocumentsEveryKey(t *testing.T) {
	text := string(config.Example)
	for key := range config.KeyTypes() {
		leaf := key[strings.LastIndex(key, ".")+1:]
		var written string
		switch key {
		case "drive":
			written = "[[drive]]"
		case "drive.retention":
			written = "[drive.retention]"
		default:
			written = "\n" + leaf + " = "
		}
		if !strings.Contains(text, written) {
			t.Errorf("example.toml does not set %s (looked for %q)", key, written)
		}
	}
}

func TestLoadDefaultsForAbsentKeys(t *testing.T) {
	fakeUsers(t)
	c, err := config.Parse("config.toml", []byte("version = 1\n[[drive]]\nname = \"a\"\nluks_uuid = \""+uuidA+"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.ReminderDays != config.DefaultReminderDays || c.MountBase != config.DefaultMountBase {
		t.Errorf("absent reminder_days/mount_base = %d/%q, want defaults", c.ReminderDays, c.MountBase)
	}
	if c.Drives[0].KeySlot != -1 {
		t.Errorf("absent key_slot = %d, want -1 (unknown)", c.Drives[0].KeySlot)
	}
	if got, want := c.Drives[0].KeyfilePath(), config.DefaultKeyDir+"/"+uuidA+".key"; got != want {
		t.Errorf("KeyfilePath() = %q, want %q", got, want)
	}
	// An explicit 0 is not the same as absent.
	c, err = config.Parse("config.toml", []byte("version = 1\nreminder_days = 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.ReminderDays != 0 {
		t.Errorf("reminder_days = 0 loaded as %d", c.ReminderDays)
	}
}

func TestEffectiveRetention(t *testing.T) {
	for _, tc := range []struct {
		in, want config.Retention
	}{
		{config.Retention{}, config.Retention{KeepAllHours: 24, DailyDays: 30, WeeklyWeeks: 0, MinFreePercent: 10}},
		{config.Retention{KeepAllHours: 1, DailyDays: 2, WeeklyWeeks: 3, MinFreePercent: 4}, config.Retention{KeepAllHours: 1, DailyDays: 2, WeeklyWeeks: 3, MinFreePercent: 4}},
		{config.Retention{WeeklyWeeks: 52}, config.Retention{KeepAllHours: 24, DailyDays: 30, WeeklyWeeks: 52, MinFreePercent: 10}},
	} {
		if got := (config.Drive{Retention: tc.in}).EffectiveRetention(); got != tc.want {
			t.Errorf("EffectiveRetention(%+v) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

// head is a valid start of a file: the bad files below add one mistake each.
const head = "version = 1\n"

const goodDrive = `[[drive]]
name = "a"
luks_uuid = "` + uuidA + `"
sources = ["/home/alice"]
run_as = "alice"
`

func TestLoadBadFiles(t *testing.T) {
	fakeUsers(t)
	for _, tc := range []struct {
		name string
		file string
		want string
	}{{
		name: "version missing",
		file: "reminder_days = 3\n",
		want: "config.toml: version: missing; add version = 1 as the first setting",
	}, {
		name: "version unsupported",
		file: "version = 2\n",
		want: "config.toml:1:1: version: 2 is not supported; this plugvault reads version = 1",
	}, {
		name: "version wrong type",
		file: "version = \"1\"\n",
		want: "config.toml:1:11: version: wrong type or value; must be the integer 1",
	}, {
		name: "syntax error",
		file: head + "[[drive]\n",
		want: "config.toml:2:8: cannot parse: expected ']]' to close array table name",
	}, {
		name: "key set twice",
		file: head + "version = 1\n",
		want: "config.toml:2:1: version: set twice; keep only one",
	}, {
		name: "negative reminder_days",
		file: head + "reminder_days = -1\n",
		want: "config.toml:2:17: reminder_days: wrong type or value; must be a whole number of days (0 turns reminders off)",
	}, {
		name: "reminder_days too large",
		file: head + "reminder_days = 5000\n",
		want: "config.toml:2:1: reminder_days: 5000 is more than 3650; use 0 to turn reminders off",
	}, {
		name: "unknown top-level key",
		file: head + "reminder = 3\n",
		want: "config.toml:2:1: reminder: unknown key; check the spelling; known keys at the top level: drive, mount_base, reminder_days, version",
	}, {
		name: "unknown drive key",
		file: head + goodDrive + "source = [\"/srv\"]\n",
		want: "config.toml:7:1: drive.source: unknown key; check the spelling; known keys in [[drive]]: excludes, fingerprint, key_slot, keyfile, luks_uuid, mount_options, name, retention, run_as, sources",
	}, {
		name: "unknown retention key",
		file: head + goodDrive + "[drive.retention]\nhourly = 3\n",
		want: "config.toml:8:1: drive.retention.hourly: unknown key; check the spelling; known keys in [drive.retention]: daily_days, keep_all_hours, min_free_percent, weekly_weeks",
	}, {
		name: "mount_base relative",
		file: head + "mount_base = \"run/plugvault\"\n",
		want: `config.toml:2:1: mount_base: "run/plugvault" is not an absolute path; use a directory like /run/plugvault`,
	}, {
		name: "mount_base not clean",
		file: head + "mount_base = \"/run//plugvault/\"\n",
		want: `config.toml:2:1: mount_base: "/run//plugvault/" is not a clean path; write it as "/run/plugvault"`,
	}, {
		name: "mount_base root",
		file: head + "mount_base = \"/\"\n",
		want: `config.toml:2:1: mount_base: "/" cannot hold private mount points; use a directory like /run/plugvault`,
	}, {
		name: "drive as a table, not a list",
		file: head + "[drive]\nname = \"a\"\nluks_uuid = \"" + uuidA + "\"\n",
		want: "config.toml:2:1: drive: written as [drive]; write [[drive]] (two brackets): each drive is one entry of a list",
	}, {
		name: "name missing",
		file: head + "[[drive]]\nluks_uuid = \"" + uuidA + "\"\n",
		want: `config.toml:2:1: drive #1: name: missing; add a name the user will recognise, like name = "blue stick"`,
	}, {
		name: "name with a control character",
		file: head + "[[drive]]\nname = \"a\\u0007\"\nluks_uuid = \"" + uuidA + "\"\n",
		want: `config.toml:3:1: drive "a\a": name: contains control characters or invalid UTF-8; use plain text`,
	}, {
		name: "luks_uuid missing",
		file: head + "[[drive]]\nname = \"a\"\n",
		want: `config.toml:2:1: drive "a": luks_uuid: missing; run: cryptsetup luksUUID /dev/sdX (the drive's partition or disk)`,
	}, {
		name: "luks_uuid not a uuid",
		file: head + "[[drive]]\nname = \"a\"\nluks_uuid = \"/dev/sdb1\"\n",
		want: `config.toml:4:1: drive "a": luks_uuid: "/dev/sdb1" is not a UUID; run: cryptsetup luksUUID /dev/sdX to print it`,
	}, {
		name: "luks_uuid upper case",
		file: head + "[[drive]]\nname = \"a\"\nluks_uuid = \"" + strings.ToUpper(uuidA) + "\"\n",
		want: `config.toml:4:1: drive "a": luks_uuid: "0B5D1F57-9B4E-4D8E-A1C1-6F2F3C6D2E10" has upper-case letters; write it as cryptsetup luksUUID prints it: "0b5d1f57-9b4e-4d8e-a1c1-6f2f3c6d2e10"`,
	}, {
		name: "duplicate name",
		file: head + goodDrive + "[[drive]]\nname = \"a\"\nluks_uuid = \"" + uuidB + "\"\n",
		want: `config.toml:8:1: drive "a": name: also the name of drive #1; give each drive its own name`,
	}, {
		name: "duplicate luks_uuid",
		file: head + goodDrive + "[[drive]]\nname = \"b\"\nluks_uuid = \"" + uuidA + "\"\n",
		want: `config.toml:9:1: drive "b": luks_uuid: also the luks_uuid of drive #1; each drive appears once`,
	}, {
		name: "keyfile relative",
		file: head + goodDrive + "keyfile = \"keys/a.key\"\n",
		want: `config.toml:7:1: drive "a": keyfile: "keys/a.key" is not an absolute path; write it starting with /`,
	}, {
		name: "key_slot out of range",
		file: head + goodDrive + "key_slot = 32\n",
		want: `config.toml:7:1: drive "a": key_slot: 32 is not a LUKS keyslot; use 0 to 31, or -1 to let cryptsetup try every slot`,
	}, {
		name: "key_slot wrong type",
		file: head + goodDrive + "key_slot = \"1\"\n",
		want: `config.toml:7:12: drive.key_slot: wrong type or value; must be an integer from -1 to 31`,
	}, {
		name: "source relative",
		file: head + "[[drive]]\nname = \"a\"\nluks_uuid = \"" + uuidA + "\"\nrun_as = \"alice\"\nsources = [\"home/alice\"]\n",
		want: `config.toml:6:1: drive "a": sources: "home/alice" is not an absolute path; write it starting with /`,
	}, {
		name: "source not clean",
		file: head + "[[drive]]\nname = \"a\"\nluks_uuid = \"" + uuidA + "\"\nrun_as = \"alice\"\nsources = [\"/home/alice/../bob\"]\n",
		want: `config.toml:6:1: drive "a": sources: "/home/alice/../bob" is not a clean path; write it as "/home/bob"`,
	}, {
		name: "source twice",
		file: head + "[[drive]]\nname = \"a\"\nluks_uuid = \"" + uuidA + "\"\nrun_as = \"alice\"\nsources = [\"/srv\", \"/srv\"]\n",
		want: `config.toml:6:1: drive "a": sources: "/srv" is listed twice; remove one`,
	}, {
		name: "source inside mount_base",
		file: head + "[[drive]]\nname = \"a\"\nluks_uuid = \"" + uuidA + "\"\nrun_as = \"alice\"\nsources = [\"/run/plugvault/x\"]\n",
		want: `config.toml:6:1: drive "a": sources: "/run/plugvault/x" is inside mount_base /run/plugvault, where the backup drive itself is mounted; back up other directories`,
	}, {
		name: "sources a string, not a list",
		file: head + "[[drive]]\nname = \"a\"\nsources = \"/home/alice\"\n",
		want: `config.toml:4:11: drive.sources: wrong type or value; must be a list of absolute paths, like ["/home/alice"]`,
	}, {
		name: "empty exclude",
		file: head + goodDrive + "excludes = [\" \"]\n",
		want: `config.toml:7:1: drive "a": excludes: contains an empty pattern; remove it`,
	}, {
		name: "run_as missing with sources",
		file: head + "[[drive]]\nname = \"a\"\nluks_uuid = \"" + uuidA + "\"\nsources = [\"/home/alice\"]\n",
		want: `config.toml:2:1: drive "a": run_as: missing; set the user whose files are backed up, like run_as = "alice" (or "root" for system directories)`,
	}, {
		name: "run_as unknown user",
		file: head + "[[drive]]\nname = \"a\"\nluks_uuid = \"" + uuidA + "\"\nrun_as = \"mallory\"\n",
		want: `config.toml:5:1: drive "a": run_as: no user "mallory" on this machine; use an existing user name (see getent passwd)`,
	}, {
		name: "mount option that would allow code execution",
		file: head + goodDrive + "mount_options = [\"exec\"]\n",
		want: `config.toml:7:1: drive "a": mount_options: "exec" is not allowed: the daemon always mounts nosuid,nodev,noexec: a backup drive must not run code`,
	}, {
		name: "mount option that risks data",
		file: head + goodDrive + "mount_options = [\"nobarrier\"]\n",
		want: `config.toml:7:1: drive "a": mount_options: "nobarrier" is not allowed: it loses data when the stick is pulled`,
	}, {
		name: "mount option with a bad value",
		file: head + goodDrive + "mount_options = [\"compress=zstd:16\"]\n",
		want: `config.toml:7:1: drive "a": mount_options: "compress=zstd:16" has a value that is not allowed; use compress=zstd (zstd:1 to zstd:15), lzo, zlib (zlib:1 to zlib:9) or no`,
	}, {
		name: "unknown mount option",
		file: head + goodDrive + "mount_options = [\"fast\"]\n",
		want: `config.toml:7:1: drive "a": mount_options: "fast" is not on the allow-list; allowed: btrfs: compress compress-force ssd nossd ssd_spread discard nodiscard autodefrag noautodefrag commit flushoncommit; ext4: discard nodiscard commit data journal_checksum barrier auto_da_alloc; xfs: discard nodiscard inode64 logbufs`,
	}, {
		name: "retention negative",
		file: head + goodDrive + "[drive.retention]\nkeep_all_hours = -2\n",
		want: `config.toml:8:1: drive "a": retention.keep_all_hours: -2 is out of range; use 0 to 8760 (0 means the default, 24)`,
	}, {
		name: "retention too large",
		file: head + goodDrive + "[drive.retention]\nmin_free_percent = 95\n",
		want: `config.toml:8:1: drive "a": retention.min_free_percent: 95 is out of range; use 0 to 90 (0 means the default, 10)`,
	}, {
		name: "retention as an inline table points at the table",
		file: head + goodDrive + "retention = { weekly_weeks = -1 }\n",
		want: `config.toml:7:1: drive "a": retention.weekly_weeks: -1 is out of range; use 0 to 5200 (0 means forever)`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse("config.toml", []byte(tc.file))
			if err == nil {
				t.Fatalf("no error for:\n%s", tc.file)
			}
			if err.Error() != tc.want {
				t.Fatalf("error:\n%s\nwant:\n%s", err, tc.want)
			}
		})
	}
}

func TestLoadReportsEveryProblem(t *testing.T) {
	fakeUsers(t)
	path := filepath.Join(t.TempDir(), "config.toml")
	file := `version = 1
mount_base = "relative"
colour = "blue"

[[drive]]
name = "a"
luks_uuid = "not-a-uuid"
sources = ["/home/alice", "srv"]
run_as = "nobody-here"
mount_options = ["suid", "compress=zstd"]
[drive.retention]
daily_days = -1

[[drive]]
name = "a"
luks_uuid = "` + uuidA + `"
sizee = 3
`
	if err := os.WriteFile(path, []byte(file), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := config.Load(path)
	if err == nil {
		t.Fatal("no error")
	}
	want := []string{
		path + `:2:1: mount_base: "relative" is not an absolute path; use a directory like /run/plugvault`,
		path + `:3:1: colour: unknown key; check the spelling; known keys at the top level: drive, mount_base, reminder_days, version`,
		path + `:7:1: drive "a": luks_uuid: "not-a-uuid" is not a UUID; run: cryptsetup luksUUID /dev/sdX to print it`,
		path + `:8:1: drive "a": sources: "srv" is not an absolute path; write it starting with /`,
		path + `:9:1: drive "a": run_as: no user "nobody-here" on this machine; use an existing user name (see getent passwd)`,
		path + `:10:1: drive "a": mount_options: "suid" is not allowed: the daemon always mounts nosuid,nodev,noexec: a backup drive must not run code`,
		path + `:12:1: drive "a": retention.daily_days: -1 is out of range; use 0 to 3650 (0 means the default, 30)`,
		path + `:15:1: drive "a": name: also the name of drive #1; give each drive its own name`,
		path + `:17:1: drive.sizee: unknown key; check the spelling; known keys in [[drive]]: excludes, fingerprint, key_slot, keyfile, luks_uuid, mount_options, name, retention, run_as, sources`,
	}
	if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, want) {
		t.Fatalf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Each problem is its own error in the join.
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) || len(joined.Unwrap()) != len(want) {
		t.Fatalf("want %d joined errors, got %v", len(want), err)
	}
}

func TestValidateWithoutFile(t *testing.T) {
	fakeUsers(t)
	c := config.Defaults()
	c.Drives = []config.Drive{
		{Name: "a", LuksUUID: uuidA, KeySlot: -1, Sources: []string{"/srv"}, RunAs: "root"},
		{LuksUUID: uuidA, KeySlot: -2},
	}
	want := `drive #2: name: missing; add a name the user will recognise, like name = "blue stick"
drive #2: luks_uuid: also the luks_uuid of drive #1; each drive appears once
drive #2: key_slot: -2 is not a LUKS keyslot; use 0 to 31, or -1 to let cryptsetup try every slot`
	err := c.Validate()
	if err == nil || err.Error() != want {
		t.Fatalf("Validate() = %v\nwant:\n%s", err, want)
	}
	c.Drives = c.Drives[:1]
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate() of a good config = %v", err)
	}
}

func TestLookupFailureIsReported(t *testing.T) {
	config.SetLookupUser(t, func(string) (*user.User, error) { return nil, errors.New("nss is down") })
	c := config.Defaults()
	c.Drives = []config.Drive{{Name: "a", LuksUUID: uuidA, KeySlot: -1, Sources: []string{"/srv"}, RunAs: "root"}}
	want := `drive "a": run_as: cannot look up user "root": nss is down`
	if err := c.Validate(); err == nil || err.Error() != want {
		t.Fatalf("Validate() = %v, want %s", err, want)
	}
}

func TestCheckMountOptions(t *testing.T) {
	for _, tc := range []struct {
		fstype string
		opts   []string
		want   string
	}{
		{"btrfs", []string{"compress=zstd:3", "ssd", "discard=async", "commit=120"}, ""},
		{"ext4", []string{"data=journal", "discard", "commit=5"}, ""},
		{"xfs", []string{"inode64", "logbufs=8"}, ""},
		{"ext4", []string{"compress=zstd"}, `cannot use mount option "compress=zstd" with ext4; it is allowed for other filesystems only`},
		{"xfs", []string{"discard=async"}, `cannot use mount option "discard=async" with xfs; it is allowed for other filesystems only`},
		{"btrfs", []string{"commit=0"}, `cannot use mount option: "commit=0" has a value that is not allowed; use commit=1 to commit=300 (seconds)`},
		{"ext4", []string{"data=writeback"}, `cannot use mount option: "data=writeback" is not allowed: it loses data when the stick is pulled`},
		{"vfat", nil, "cannot mount vfat: plugvault mounts only btrfs, ext4, xfs"},
	} {
		err := config.CheckMountOptions(tc.fstype, tc.opts)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("CheckMountOptions(%s, %q) = %q, want %q", tc.fstype, tc.opts, got, tc.want)
		}
	}
}
