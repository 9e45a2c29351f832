package mount

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Entry is one line of /proc/<pid>/mountinfo (proc(5)).
type Entry struct {
	ID, Parent   int
	Major, Minor uint32
	Root         string // the path inside the filesystem that is mounted here
	MountPoint   string
	Options      string // per-mount options (rw, nosuid, ...)
	FSType       string
	Source       string // "/dev/loop0", "/dev/mapper/plugvault-…", "tmpfs", ...
	SuperOptions string
}

// Dev is the entry's device number in st_dev/st_rdev encoding.
func (e Entry) Dev() uint64 { return unix.Mkdev(e.Major, e.Minor) }

// ParseMountinfo parses mountinfo text. It is pure and fuzzed. Paths are unescaped (the
// kernel writes space, tab, newline and backslash as \040 \011 \012 \134).
func ParseMountinfo(data []byte) ([]Entry, error) {
	var entries []Entry
	for i, line := range strings.Split(string(data), "\n") {
		if line == "" {
			continue
		}
		e, err := parseMountinfoLine(line)
		if err != nil {
			return nil, fmt.Errorf("cannot parse mountinfo line %d: %w", i+1, err)
		}
		entries = append(entries, e)
	}
	return entries, nil
}

func parseMountinfoLine(line string) (Entry, error) {
	// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
	fields := strings.Split(line, " ")
	sep := -1
	for i := 6; i < len(fields); i++ {
		if fields[i] == "-" {
			sep = i
			break
		}
	}
	if len(fields) < 10 || sep < 0 || len(fields) != sep+4 {
		return Entry{}, errors.New("wrong number of fields")
	}
	var e Entry
	var err error
	if e.ID, err = strconv.Atoi(fields[0]); err != nil || e.ID < 0 {
		return Entry{}, fmt.Errorf("bad mount id %q", fields[0])
	}
	if e.Parent, err = strconv.Atoi(fields[1]); err != nil || e.Parent < 0 {
		return Entry{}, fmt.Errorf("bad parent id %q", fields[1])
	}
	maj, min, ok := strings.Cut(fields[2], ":")
	ma, err1 := strconv.ParseUint(maj, 10, 32)
	mi, err2 := strconv.ParseUint(min, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return Entry{}, fmt.Errorf("bad device %q", fields[2])
	}
	e.Major, e.Minor = uint32(ma), uint32(mi)
	if e.Root, err = unescape(fields[3]); err != nil {
		return Entry{}, err
	}
	if e.MountPoint, err = unescape(fields[4]); err != nil {
		return Entry{}, err
	}
	if !strings.HasPrefix(e.MountPoint, "/") {
		return Entry{}, fmt.Errorf("mount point %q is not absolute", e.MountPoint)
	}
	e.Options = fields[5]
	if e.FSType, err = unescape(fields[sep+1]); err != nil {
		return Entry{}, err
	}
	if e.Source, err = unescape(fields[sep+2]); err != nil {
		return Entry{}, err
	}
	e.SuperOptions = fields[sep+3]
	if e.FSType == "" {
		return Entry{}, errors.New("empty filesystem type")
	}
	return e, nil
}

// unescape decodes the kernel's octal escapes (\ooo).
func unescape(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+4 > len(s) {
			return "", fmt.Errorf("bad escape in %q", s)
		}
		n, err := strconv.ParseUint(s[i+1:i+4], 8, 8)
		if err != nil {
			return "", fmt.Errorf("bad escape in %q", s)
		}
		b.WriteByte(byte(n))
		i += 3
	}
	return b.String(), nil
}

// topmost returns the mount visible at mountPoint: the last entry with that mount point (a
// later mount on the same path hides the earlier ones).
func topmost(entries []Entry, mountPoint string) (Entry, bool) {
	for i := len(entries) - 1; i >= 0; i-- {
		if entries[i].MountPoint == mountPoint {
			return entries[i], true
		}
	}
	return Entry{}, false
}
