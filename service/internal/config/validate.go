package config

import (
	"github.com/plugvault/plugvault/service/internal/luks"
	"github.com/plugvault/plugvault/service/internal/users"

	"errors"
	"fmt"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// lookupUser resolves run_as through NSS (getent), so users from LDAP or SSSD count; tests
// replace it so that they do not depend on the machine's users.
var lookupUser = users.Lookup

// Limits of the values Validate accepts.
const (
	maxNameLen        = 64
	maxReminderDays   = 3650
	maxKeySlot        = 31 // LUKS2 has 32 keyslots
	maxKeepAllHours   = 24 * 365
	maxDailyDays      = 3650
	maxWeeklyWeeks    = 52 * 100
	maxMinFreePercent = 90
)

// problem is one thing wrong with the configuration. drive is the index of the [[drive]] it is
// about, or -1 for a top-level key; key is relative to the drive ("retention.daily_days").
type problem struct {
	drive int
	key   string
	msg   string
}

// path is the problem's key path in the positions index.
func (p problem) path() string {
	if p.drive < 0 {
		return p.key
	}
	s := "drive." + strconv.Itoa(p.drive)
	if p.key != "" {
		s += "." + p.key
	}
	return s
}

// describe renders `drive "name": key: msg`, naming an unnamed drive by its position.
func (p problem) describe(c *Config) string {
	var b strings.Builder
	if p.drive >= 0 {
		if name := c.Drives[p.drive].Name; name != "" {
			fmt.Fprintf(&b, "drive %q: ", name)
		} else {
			fmt.Fprintf(&b, "drive #%d: ", p.drive+1)
		}
	}
	if p.key != "" {
		b.WriteString(p.key)
		b.WriteString(": ")
	}
	b.WriteString(p.msg)
	return b.String()
}

// Validate checks the whole configuration and returns every problem at once (errors.Join), each
// as `drive "name": key: problem; hint`. Load runs it, with positions; the daemon runs it on
// configurations it builds itself, and AppendDrive on the file it is about to write.
func (c *Config) Validate() error {
	var errs []error
	for _, p := range c.validate() {
		errs = append(errs, errors.New(p.describe(c)))
	}
	return errors.Join(errs...)
}

func (c *Config) validate() []problem {
	var ps []problem
	top := func(key, format string, args ...any) {
		ps = append(ps, problem{-1, key, fmt.Sprintf(format, args...)})
	}
	switch {
	case c.Version == 0:
		top("version", "missing; add version = %d as the first setting", Version)
	case c.Version != Version:
		top("version", "%d is not supported; this plugvault reads version = %d", c.Version, Version)
	}
	if c.ReminderDays > maxReminderDays {
		top("reminder_days", "%d is more than %d; use 0 to turn reminders off", c.ReminderDays, maxReminderDays)
	}
	mountBaseOK := false
	switch {
	case c.MountBase == "":
		top("mount_base", "empty; remove the line to use %s", DefaultMountBase)
	case !filepath.IsAbs(c.MountBase):
		top("mount_base", "%q is not an absolute path; use a directory like %s", c.MountBase, DefaultMountBase)
	case filepath.Clean(c.MountBase) != c.MountBase:
		top("mount_base", "%q is not a clean path; write it as %q", c.MountBase, filepath.Clean(c.MountBase))
	case c.MountBase == "/":
		top("mount_base", `"/" cannot hold private mount points; use a directory like %s`, DefaultMountBase)
	default:
		mountBaseOK = true
	}

	names := map[string]int{}
	uuids := map[string]int{}
	for i, d := range c.Drives {
		add := func(key, format string, args ...any) {
			ps = append(ps, problem{i, key, fmt.Sprintf(format, args...)})
		}
		// name
		switch {
		case d.Name == "":
			add("name", `missing; add a name the user will recognise, like name = "blue stick"`)
		case !utf8.ValidString(d.Name) || strings.IndexFunc(d.Name, unicode.IsControl) >= 0:
			add("name", "contains control characters or invalid UTF-8; use plain text")
		case len(d.Name) > maxNameLen:
			add("name", "longer than %d bytes; use a shorter name", maxNameLen)
		default:
			if j, dup := names[d.Name]; dup {
				add("name", "also the name of drive #%d; give each drive its own name", j+1)
			} else {
				names[d.Name] = i
			}
		}
		// luks_uuid
		switch {
		case d.LuksUUID == "":
			add("luks_uuid", "missing; run: cryptsetup luksUUID /dev/sdX (the drive's partition or disk)")
		case luks.CheckUUID(strings.ToLower(d.LuksUUID)) == nil && strings.ToLower(d.LuksUUID) != d.LuksUUID:
			add("luks_uuid", "%q has upper-case letters; write it as cryptsetup luksUUID prints it: %q", d.LuksUUID, strings.ToLower(d.LuksUUID))
		case luks.CheckUUID(d.LuksUUID) != nil:
			add("luks_uuid", "%q is not a UUID; run: cryptsetup luksUUID /dev/sdX to print it", d.LuksUUID)
		default:
			if j, dup := uuids[d.LuksUUID]; dup {
				add("luks_uuid", "also the luks_uuid of drive #%d; each drive appears once", j+1)
			} else {
				uuids[d.LuksUUID] = i
			}
		}
		// fingerprint
		if d.Fingerprint != "" && !luks.FingerprintRE.MatchString(d.Fingerprint) {
			add("fingerprint", "%q is not a drive fingerprint; remove the line and plug the drive in with its keyfile, or adopt it again, to record it", d.Fingerprint)
		}
		// keyfile
		if d.Keyfile != "" {
			if msg := absCleanProblem(d.Keyfile); msg != "" {
				add("keyfile", "%s", msg)
			}
		}
		if d.KeySlot < -1 || d.KeySlot > maxKeySlot {
			add("key_slot", "%d is not a LUKS keyslot; use 0 to %d, or -1 to let cryptsetup try every slot", d.KeySlot, maxKeySlot)
		}
		// sources
		seen := map[string]bool{}
		for _, s := range d.Sources {
			switch msg := absCleanProblem(s); {
			case msg != "":
				add("sources", "%s", msg)
			case seen[s]:
				add("sources", "%q is listed twice; remove one", s)
			case mountBaseOK && within(s, c.MountBase):
				add("sources", "%q is inside mount_base %s, where the backup drive itself is mounted; back up other directories", s, c.MountBase)
			}
			seen[s] = true
		}
		for _, x := range d.Excludes {
			if strings.TrimSpace(x) == "" {
				add("excludes", "contains an empty pattern; remove it")
			}
		}
		// run_as
		switch {
		case d.RunAs == "" && len(d.Sources) > 0:
			add("run_as", `missing; set the user whose files are backed up, like run_as = "alice" (or "root" for system directories)`)
		case d.RunAs != "":
			if _, err := lookupUser(d.RunAs); err != nil {
				var unknown user.UnknownUserError
				if errors.As(err, &unknown) {
					add("run_as", "no user %q on this machine; use an existing user name (see getent passwd)", d.RunAs)
				} else {
					add("run_as", "cannot look up user %q: %v", d.RunAs, err)
				}
			}
		}
		for _, o := range d.MountOptions {
			if msg := mountOptionProblem(o); msg != "" {
				add("mount_options", "%s", msg)
			}
		}
		r := d.Retention
		rangeCheck := func(key string, v, max int, zero string) {
			if v < 0 || v > max {
				add("retention."+key, "%d is out of range; use 0 to %d (0 means %s)", v, max, zero)
			}
		}
		rangeCheck("keep_all_hours", r.KeepAllHours, maxKeepAllHours, "the default, "+strconv.Itoa(DefaultKeepAllHours))
		rangeCheck("daily_days", r.DailyDays, maxDailyDays, "the default, "+strconv.Itoa(DefaultDailyDays))
		rangeCheck("weekly_weeks", r.WeeklyWeeks, maxWeeklyWeeks, "forever")
		rangeCheck("min_free_percent", r.MinFreePercent, maxMinFreePercent, "the default, "+strconv.Itoa(DefaultMinFreePercent))
	}
	return ps
}

// absCleanProblem says what is wrong with a path that must be absolute and clean, or "".
func absCleanProblem(p string) string {
	switch {
	case !filepath.IsAbs(p):
		return fmt.Sprintf("%q is not an absolute path; write it starting with /", p)
	case filepath.Clean(p) != p:
		return fmt.Sprintf("%q is not a clean path; write it as %q", p, filepath.Clean(p))
	}
	return ""
}

// within reports whether path is dir or below it (both clean and absolute).
func within(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, strings.TrimSuffix(dir, "/")+"/")
}
