package config

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Mount options an administrator may add per drive (mount_options). The daemon always mounts
// with nosuid,nodev,noexec,noatime and decides rw/ro itself; the extra options may only tune
// speed, wear and integrity, never weaken safety or security. The allow-list follows the idea
// of udisks' builtin_mount_options.conf.
//
// btrfs:
//   - compress=zstd|lzo|zlib|no (zstd:1..15, zlib:1..9), compress-force=…: fewer bytes written to
//     a slow stick; zstd is a good default.
//   - ssd, nossd, ssd_spread: allocation tuning for flash; btrfs guesses, this overrides.
//   - discard, discard=async, discard=sync, nodiscard: TRIM on flash.
//   - autodefrag, noautodefrag; commit=1..300 (seconds between transaction commits).
//   - flushoncommit: stronger ordering on sudden removal.
//
// ext4: discard, nodiscard, commit=1..300, data=ordered, data=journal (safer, slower),
// journal_checksum, barrier, barrier=1, auto_da_alloc.
//
// xfs: discard, nodiscard, inode64, logbufs=2..8.
//
// Not allowed, and why (mountOptionReasons): suid/dev/exec (a backup drive must not run code
// or expose device nodes), ro/rw (the daemon mounts backups read-write and browsing read-only),
// atime options (noatime is forced: reading a backup must not write to it), nobarrier/
// barrier=0/data=writeback (lose data when the stick is pulled), subvol/subvolid (the daemon
// mounts the top level, where plugvault/ lives), user_subvol_rm_allowed (users could delete
// snapshots), degraded, user/users/owner (no unprivileged mounts).
var allowedMountOptions = map[string][]string{
	"btrfs": {"compress", "compress-force", "ssd", "nossd", "ssd_spread", "discard", "nodiscard",
		"autodefrag", "noautodefrag", "commit", "flushoncommit"},
	"ext4": {"discard", "nodiscard", "commit", "data", "journal_checksum", "barrier", "auto_da_alloc"},
	"xfs":  {"discard", "nodiscard", "inode64", "logbufs"},
}

// Filesystems are the filesystems plugvault mounts, in order of preference.
var Filesystems = []string{"btrfs", "ext4", "xfs"}

var mountOptionReasons = map[string]string{
	"suid":                   "the daemon always mounts nosuid,nodev,noexec: a backup drive must not run code",
	"dev":                    "the daemon always mounts nosuid,nodev,noexec: a backup drive must not run code",
	"exec":                   "the daemon always mounts nosuid,nodev,noexec: a backup drive must not run code",
	"ro":                     "the daemon decides: backups are written read-write, browsing is read-only",
	"rw":                     "the daemon decides: backups are written read-write, browsing is read-only",
	"atime":                  "the daemon always mounts noatime, so that reading a backup never writes to it",
	"relatime":               "the daemon always mounts noatime, so that reading a backup never writes to it",
	"strictatime":            "the daemon always mounts noatime, so that reading a backup never writes to it",
	"lazytime":               "the daemon always mounts noatime, so that reading a backup never writes to it",
	"nobarrier":              "it loses data when the stick is pulled",
	"subvol":                 "the daemon mounts the top level, where plugvault/ lives",
	"subvolid":               "the daemon mounts the top level, where plugvault/ lives",
	"user_subvol_rm_allowed": "it would let users delete snapshots",
	"degraded":               "a damaged filesystem must be repaired, not written to",
	"user":                   "only the daemon mounts backup drives",
	"users":                  "only the daemon mounts backup drives",
	"owner":                  "only the daemon mounts backup drives",
}

// mountOptionValues says which values an allowed option takes.
var mountOptionValues = map[string]string{
	"compress":       "compress=zstd (zstd:1 to zstd:15), lzo, zlib (zlib:1 to zlib:9) or no",
	"compress-force": "compress-force=zstd (zstd:1 to zstd:15), lzo, zlib (zlib:1 to zlib:9) or no",
	"discard":        "discard, or discard=async or discard=sync on btrfs",
	"commit":         "commit=1 to commit=300 (seconds)",
	"data":           "data=ordered or data=journal",
	"barrier":        "barrier or barrier=1",
	"logbufs":        "logbufs=2 to logbufs=8",
}

// mountOptionProblem says why opt is not allowed for any supported filesystem, or "".
func mountOptionProblem(opt string) string {
	for _, fs := range Filesystems {
		if mountOptionOK(fs, opt) {
			return ""
		}
	}
	name, _, _ := strings.Cut(opt, "=")
	if why, ok := mountOptionReasons[name]; ok {
		return fmt.Sprintf("%q is not allowed: %s", opt, why)
	}
	if why, ok := mountOptionReasons[opt]; ok {
		return fmt.Sprintf("%q is not allowed: %s", opt, why)
	}
	switch opt {
	case "barrier=0", "data=writeback":
		return fmt.Sprintf("%q is not allowed: it loses data when the stick is pulled", opt)
	}
	if hint, ok := mountOptionValues[name]; ok {
		return fmt.Sprintf("%q has a value that is not allowed; use %s", opt, hint)
	}
	return fmt.Sprintf("%q is not on the allow-list; allowed: %s", opt, allowListSummary())
}

// CheckMountOptions checks a drive's mount_options against the allow-list of the filesystem
// found on it, which is only known once the drive is unlocked.
func CheckMountOptions(fstype string, opts []string) error {
	if _, ok := allowedMountOptions[fstype]; !ok {
		return fmt.Errorf("cannot mount %s: plugvault mounts only %s", fstype, strings.Join(Filesystems, ", "))
	}
	for _, o := range opts {
		if !mountOptionOK(fstype, o) {
			if msg := mountOptionProblem(o); msg != "" {
				return fmt.Errorf("cannot use mount option: %s", msg)
			}
			return fmt.Errorf("cannot use mount option %q with %s; it is allowed for other filesystems only", o, fstype)
		}
	}
	return nil
}

func mountOptionOK(fstype, opt string) bool {
	name, value, hasValue := strings.Cut(opt, "=")
	if !slices.Contains(allowedMountOptions[fstype], name) {
		return false
	}
	switch name {
	case "compress", "compress-force":
		if !hasValue {
			return true // zlib, btrfs' historical default
		}
		algo, level, hasLevel := strings.Cut(value, ":")
		switch algo {
		case "zstd":
			return !hasLevel || intIn(level, 1, 15)
		case "zlib":
			return !hasLevel || intIn(level, 1, 9)
		case "lzo", "no":
			return !hasLevel
		}
		return false
	case "discard":
		return !hasValue || fstype == "btrfs" && (value == "async" || value == "sync")
	case "commit":
		return hasValue && intIn(value, 1, 300)
	case "data":
		return value == "ordered" || value == "journal"
	case "barrier":
		return !hasValue || value == "1"
	case "logbufs":
		return hasValue && intIn(value, 2, 8)
	}
	return !hasValue
}

func intIn(s string, lo, hi int) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n >= lo && n <= hi && strconv.Itoa(n) == s
}

func allowListSummary() string {
	var parts []string
	for _, fs := range Filesystems {
		parts = append(parts, fs+": "+strings.Join(allowedMountOptions[fs], " "))
	}
	return strings.Join(parts, "; ")
}
