package udev

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Enumerate is coldplug: it lists the block devices under sysRoot/class/block, reads each one's
// uevent file for its identity and udev's database file dbDir/b<major>:<minor> for udev's
// properties, and returns one "add" Event per device, sorted by DEVPATH. A device without a
// database file has not been processed by udevd yet and is skipped: its event will come. A
// device that disappears while it is read is skipped too.
func Enumerate(ctx context.Context, sysRoot, dbDir string) ([]Event, error) {
	classDir := filepath.Join(sysRoot, "class", "block")
	entries, err := os.ReadDir(classDir)
	if err != nil {
		return nil, fmt.Errorf("cannot enumerate block devices: %w", err)
	}
	realSys, err := filepath.EvalSymlinks(sysRoot)
	if err != nil {
		return nil, fmt.Errorf("cannot enumerate block devices: %w", err)
	}
	var events []Event
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ev, err := coldplugDevice(realSys, filepath.Join(classDir, e.Name()), dbDir)
		if errors.Is(err, fs.ErrNotExist) {
			continue // gone meanwhile, or not processed by udevd yet
		}
		if err != nil {
			return nil, fmt.Errorf("cannot enumerate block device %s: %w", e.Name(), err)
		}
		events = append(events, ev)
	}
	sort.Slice(events, func(i, j int) bool { return events[i].DevPath < events[j].DevPath })
	return events, nil
}

// coldplugDevice builds the "add" event of one /sys/class/block entry (a symlink into
// /sys/devices). It returns an fs.ErrNotExist error if the device or its udev db entry is absent.
func coldplugDevice(realSys, entry, dbDir string) (Event, error) {
	dir, err := filepath.EvalSymlinks(entry)
	if err != nil {
		return Event{}, err
	}
	rel, err := filepath.Rel(realSys, dir)
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		return Event{}, fmt.Errorf("%s resolves outside sysfs", entry)
	}
	uevent, err := os.ReadFile(filepath.Join(dir, "uevent"))
	if err != nil {
		return Event{}, err
	}
	kernel, err := parseUeventFile(uevent)
	if err != nil {
		return Event{}, err
	}
	maj, min := kernel["MAJOR"], kernel["MINOR"]
	if maj == "" || min == "" {
		return Event{}, fmt.Errorf("%s/uevent has no MAJOR/MINOR", dir)
	}
	db, err := os.ReadFile(filepath.Join(dbDir, "b"+maj+":"+min))
	if err != nil {
		return Event{}, err
	}
	props, err := ParseDatabase(db)
	if err != nil {
		return Event{}, err
	}
	// The kernel's identity wins over anything in the db file.
	for k, v := range kernel {
		props[k] = v
	}
	props["ACTION"] = "add"
	props["DEVPATH"] = "/" + filepath.ToSlash(rel)
	props["SUBSYSTEM"] = "block"
	return eventFromProps(props)
}

// parseUeventFile reads a sysfs uevent file: KEY=VALUE lines.
func parseUeventFile(b []byte) (map[string]string, error) {
	props := make(map[string]string)
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" || !validKey([]byte(k)) {
			return nil, fmt.Errorf("malformed uevent line %q", truncate([]byte(line)))
		}
		props[k] = v
	}
	return props, nil
}
