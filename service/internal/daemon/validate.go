package daemon

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"unicode"
	"unicode/utf8"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
)

// Limits on what callers may send.
const (
	maxPassphrase = 512     // cryptsetup's limit for an interactive passphrase
	maxKeyfile    = 8 << 20 // cryptsetup's default keyfile size limit
	maxPath       = 4096
	maxName       = 64
	maxLabel      = 16 // the smaller of ext4 (16) and btrfs (255)
)

// displayablePattern is what a device path must look like to be shown in a polkit dialog.
var displayablePattern = regexp.MustCompile(`^/dev/[A-Za-z0-9._/:-]+$`)

// optionTypes lists the options each method understands and their D-Bus types. Unknown
// options are ignored (the contract says so); known ones of the wrong type are rejected.
var optionTypes = map[string]map[string]string{
	api.MethodListDrives:      {},
	api.MethodEnroll:          {api.OptName: "s", api.OptLabel: "s", api.OptFilesystem: "s", api.OptHeaderBackup: "b"},
	api.MethodAdopt:           {api.OptName: "s", api.OptSecretIsPassphrase: "b", api.OptAddKeyfileSlot: "b"},
	api.MethodForget:          {api.OptRemoveKeyslot: "b"},
	api.MethodSealKeys:        {},
	api.MethodUnlock:          {},
	api.MethodCheckPassphrase: {},
	api.MethodBackupNow:       {},
	api.MethodCancel:          {},
	api.MethodEject:           {api.OptPowerOff: "b"},
	api.MethodListSnapshots:   {},
	api.MethodBrowse:          {},
	api.MethodRestore:         {api.OptOverwrite: "b"},
	api.MethodVerify:          {},
}

// options is a checked a{sv}.
type options map[string]dbus.Variant

// checkOptions rejects known options of the wrong type.
func checkOptions(method string, opts map[string]dbus.Variant) (options, error) {
	types := optionTypes[method]
	for k, v := range opts {
		want, known := types[k]
		if k == api.OptNoUserInteraction {
			want, known = "b", true
		}
		if !known {
			continue
		}
		if got := v.Signature().String(); got != want {
			return nil, invalid("cannot %s: option %s must have type %s, not %s", verbOf(method), k, want, got)
		}
	}
	return options(opts), nil
}

func (o options) bool(key string, def bool) bool {
	if v, ok := o[key].Value().(bool); ok {
		return v
	}
	return def
}

func (o options) string(key, def string) string {
	if v, ok := o[key].Value().(string); ok {
		return v
	}
	return def
}

func verbOf(method string) string {
	switch method {
	case api.MethodBackupNow:
		return "back up"
	case api.MethodListDrives:
		return "list drives"
	case api.MethodListSnapshots:
		return "list snapshots"
	}
	return strings.ToLower(method)
}

// validSnapshot checks a snapshot name from ListSnapshots.
func validSnapshot(name string) error {
	if !api.IsSnapshotName(name) {
		return invalid("cannot use snapshot %q: a snapshot name looks like 20261126T083100Z", name)
	}
	return nil
}

// validRelPath checks a path inside a snapshot: relative, clean, no "..": it can never leave
// the snapshot. "" and "." mean the whole snapshot.
func validRelPath(p string) (string, error) {
	if p == "" || p == "." {
		return "", nil
	}
	if len(p) > maxPath || !utf8.ValidString(p) || strings.ContainsRune(p, 0) {
		return "", invalid("cannot restore %q: not a valid path", p)
	}
	if filepath.IsAbs(p) || filepath.Clean(p) != p || p == ".." || strings.HasPrefix(p, "../") {
		return "", invalid("cannot restore %q: the path must be relative to the snapshot, without \"..\"", p)
	}
	return p, nil
}

// validAbsPath checks an absolute, clean path (Restore's destination, a header backup).
func validAbsPath(what, p string) error {
	if len(p) > maxPath || !utf8.ValidString(p) || strings.ContainsRune(p, 0) {
		return invalid("cannot use %s %q: not a valid path", what, p)
	}
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return invalid("cannot use %s %q: it must be an absolute path without \"..\", \".\" or \"//\"", what, p)
	}
	return nil
}

// deviceRules say where device nodes live and what counts as a block device; tests replace
// them (handlers read them concurrently, hence the atomic).
type deviceRules struct {
	root    string
	isBlock func(os.FileInfo) bool
}

var devices atomic.Pointer[deviceRules]

func init() {
	devices.Store(&deviceRules{root: "/dev", isBlock: func(fi os.FileInfo) bool {
		return fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0
	}})
}

// validDevice checks a device argument of Enroll or Adopt: an absolute, clean path under
// /dev that is a block device itself, not a symlink to one and not below a symlinked
// directory (so what was authorized is what is formatted).
func validDevice(p string) error {
	if err := validAbsPath("device", p); err != nil {
		return err
	}
	rules := devices.Load()
	if !strings.HasPrefix(p, rules.root+"/") {
		return invalid("cannot use device %q: it must be under /dev", p)
	}
	resolved, err := filepath.EvalSymlinks(p)
	if err != nil {
		return notFound("cannot use device %q: %v", p, pathErr(err))
	}
	if resolved != p {
		return invalid("cannot use device %q: it is a symbolic link (to %s); give the device itself", p, resolved)
	}
	fi, err := os.Lstat(p)
	if err != nil {
		return notFound("cannot use device %q: %v", p, pathErr(err))
	}
	if !rules.isBlock(fi) {
		return invalid("cannot use device %q: not a block device", p)
	}
	return nil
}

func pathErr(err error) string {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err.Error()
	}
	return err.Error()
}

// validText checks a name or label: printable, one line, not too long.
func validText(what, s string, max int) error {
	if s == "" || len(s) > max || !utf8.ValidString(s) || strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return invalid("cannot use %s %q: it must be 1 to %d printable bytes", what, s, max)
	}
	return nil
}

// displayDevice returns dev for a polkit dialog if it looks like a device path, else a
// placeholder: authorization comes before validation, and the dialog must not show text an
// attacker chose.
func displayDevice(dev string) string {
	if len(dev) <= 128 && displayablePattern.MatchString(dev) {
		return dev
	}
	return "(an invalid device path)"
}
