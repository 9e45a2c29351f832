package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// fileConfig mirrors Config with pointers where "absent" and "zero" mean different things:
// reminder_days = 0 turns reminders off while a missing reminder_days means the default, and a
// missing key_slot means "unknown" (-1), not slot 0.
type fileConfig struct {
	Version      *int        `toml:"version"`
	ReminderDays *uint32     `toml:"reminder_days"`
	MountBase    *string     `toml:"mount_base"`
	Drives       []fileDrive `toml:"drive"`
}

type fileDrive struct {
	Name         string    `toml:"name"`
	LuksUUID     string    `toml:"luks_uuid"`
	Fingerprint  string    `toml:"fingerprint"`
	Keyfile      string    `toml:"keyfile"`
	KeySlot      *int      `toml:"key_slot"`
	Sources      []string  `toml:"sources"`
	Excludes     []string  `toml:"excludes"`
	RunAs        string    `toml:"run_as"`
	MountOptions []string  `toml:"mount_options"`
	Retention    Retention `toml:"retention"`
}

// keyTypes describes what each key holds, for type errors ("must be …") and for the test that
// the example file and the README document every key.
var keyTypes = map[string]string{
	"version":                          "the integer 1",
	"reminder_days":                    "a whole number of days (0 turns reminders off)",
	"mount_base":                       `an absolute path in quotes, like "/run/plugvault"`,
	"drive":                            "a list of [[drive]] tables",
	"drive.name":                       `a string, like "blue stick"`,
	"drive.luks_uuid":                  `a string, like "0b5d1f57-9b4e-4d8e-a1c1-6f2f3c6d2e10"`,
	"drive.fingerprint":                `a string written by plugvault, like "v1:" and 64 hex digits`,
	"drive.keyfile":                    `an absolute path in quotes, like "/etc/plugvault/keys/<uuid>.key"`,
	"drive.key_slot":                   "an integer from -1 to 31",
	"drive.sources":                    `a list of absolute paths, like ["/home/alice"]`,
	"drive.excludes":                   `a list of patterns, like ["*.iso", "/home/alice/.cache"]`,
	"drive.run_as":                     `a user name in quotes, like "alice"`,
	"drive.mount_options":              `a list of strings, like ["compress=zstd"]`,
	"drive.retention":                  "a table ([drive.retention])",
	"drive.retention.keep_all_hours":   "a whole number of hours",
	"drive.retention.daily_days":       "a whole number of days",
	"drive.retention.weekly_weeks":     "a whole number of weeks (0 keeps weekly snapshots forever)",
	"drive.retention.min_free_percent": "a whole number from 0 to 90",
}

// Load reads, decodes and validates the configuration file at path. A missing file is not an
// error: the daemon then runs with Defaults() and no drives. Anything else that is wrong with
// the file is: every problem found is returned at once (errors.Join), one per line, each
// starting with "path:line:column:" where the position is known, else "path:", followed by the
// key, the problem and a hint how to fix it.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Defaults(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read configuration: %w", err)
	}
	return parse(path, data)
}

// parse decodes and validates one file's contents; name is used in messages only.
func parse(name string, data []byte) (*Config, error) {
	idx := indexPositions(data)
	var fc fileConfig
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	err := dec.Decode(&fc)
	var errs []locatedError
	var strict *toml.StrictMissingError
	var decErr *toml.DecodeError
	switch {
	case err == nil:
	case errors.As(err, &strict):
		// Unknown keys: the rest of the file was decoded, so validate it too and report
		// everything together.
		for i := range strict.Errors {
			e := &strict.Errors[i]
			line, col := e.Position()
			errs = append(errs, locatedError{position{line, col}, fmt.Sprintf("%s: unknown key; %s",
				strings.Join(e.Key(), "."), unknownKeyHint(e.Key()))})
		}
	case errors.As(err, &decErr):
		// A syntax or type error stops the decoder: nothing after it was read, so validating
		// the half-decoded rest would only add noise.
		return nil, decodeError(name, decErr)
	default:
		return nil, fmt.Errorf("%s: cannot parse: %v", name, err)
	}
	errs = append(errs, idx.problems...)

	c := fromFile(&fc)
	for _, p := range c.validate() {
		pos, _ := idx.lookup(p.path())
		errs = append(errs, locatedError{pos, p.describe(c)})
	}
	if len(errs) == 0 {
		return c, nil
	}
	// In file order, problems without a position (a missing key) first.
	slices.SortStableFunc(errs, func(a, b locatedError) int {
		if a.pos.line != b.pos.line {
			return a.pos.line - b.pos.line
		}
		return a.pos.col - b.pos.col
	})
	joined := make([]error, len(errs))
	for i, e := range errs {
		if e.pos.line > 0 {
			joined[i] = fmt.Errorf("%s:%d:%d: %s", name, e.pos.line, e.pos.col, e.msg)
		} else {
			joined[i] = fmt.Errorf("%s: %s", name, e.msg)
		}
	}
	return nil, errors.Join(joined...)
}

// locatedError is one problem and where it is in the file (line 0: nowhere in particular).
type locatedError struct {
	pos position
	msg string
}

// fromFile fills in the defaults for absent keys.
func fromFile(fc *fileConfig) *Config {
	c := Defaults()
	c.Version = 0 // required: validate reports a missing version
	if fc.Version != nil {
		c.Version = *fc.Version
	}
	if fc.ReminderDays != nil {
		c.ReminderDays = *fc.ReminderDays
	}
	if fc.MountBase != nil {
		c.MountBase = *fc.MountBase
	}
	for _, fd := range fc.Drives {
		d := Drive{
			Name:         fd.Name,
			LuksUUID:     fd.LuksUUID,
			Fingerprint:  fd.Fingerprint,
			Keyfile:      fd.Keyfile,
			KeySlot:      -1,
			Sources:      fd.Sources,
			Excludes:     fd.Excludes,
			RunAs:        fd.RunAs,
			MountOptions: fd.MountOptions,
			Retention:    fd.Retention,
		}
		if fd.KeySlot != nil {
			d.KeySlot = *fd.KeySlot
		}
		c.Drives = append(c.Drives, d)
	}
	return c
}

// decodeError turns go-toml's error into "file:line:col: key: problem; hint" without the Go
// type names go-toml puts in its messages.
func decodeError(name string, e *toml.DecodeError) error {
	line, col := e.Position()
	key := strings.Join(e.Key(), ".")
	msg := strings.TrimPrefix(e.Error(), "toml: ")
	switch {
	case strings.Contains(msg, "already defined"):
		return fmt.Errorf("%s:%d:%d: %s: set twice; keep only one", name, line, col, key)
	case keyTypes[key] != "":
		return fmt.Errorf("%s:%d:%d: %s: wrong type or value; must be %s", name, line, col, key, keyTypes[key])
	default:
		return fmt.Errorf("%s:%d:%d: cannot parse: %s", name, line, col, msg)
	}
}

// unknownKeyHint lists the keys that are allowed where an unknown one was found.
func unknownKeyHint(key []string) string {
	prefix := strings.Join(key[:len(key)-1], ".")
	var known []string
	for k := range keyTypes {
		parent, leaf := "", k
		if i := strings.LastIndex(k, "."); i >= 0 {
			parent, leaf = k[:i], k[i+1:]
		}
		if parent == prefix {
			known = append(known, leaf)
		}
	}
	if len(known) == 0 {
		return "remove it"
	}
	slices.Sort(known)
	where := "at the top level"
	if prefix != "" {
		where = "in [" + prefix + "]"
		if prefix == "drive" {
			where = "in [[drive]]"
		}
	}
	return "check the spelling; known keys " + where + ": " + strings.Join(known, ", ")
}
