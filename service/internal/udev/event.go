package udev

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
)

// Event is one udev event for a device, or one device found by Enumerate (Action "add").
type Event struct {
	Action    string // "add", "change", "remove", "move", "bind", "unbind", ... (coldplug reports "add")
	DevPath   string // DEVPATH: the sysfs path without /sys, e.g. /devices/.../block/sdb
	Subsystem string // "block"
	DevType   string // "disk" or "partition"
	DevName   string // absolute device node, e.g. "/dev/sdb"; "" if the device has none
	Major     uint32
	Minor     uint32
	SeqNum    uint64            // kernel sequence number; 0 for coldplug
	Props     map[string]string // every property (ID_FS_TYPE, ID_FS_UUID, ID_BUS, ID_VENDOR, ...)
}

// Prop returns the property key, or "" if the event does not carry it.
func (e Event) Prop(key string) string { return e.Props[key] }

// The libudev netlink header (struct monitor_netlink_header in systemd's
// src/libsystemd/sd-device/device-monitor.c). All fields are u32: magic and the two filter
// hashes in network byte order (the BPF filter reads them), the offsets in host order.
const (
	headerPrefix        = "libudev\x00"
	udevMonitorMagic    = 0xfeedcafe
	headerSize          = 40
	offMagic            = 8
	offHeaderSize       = 12
	offPropertiesOff    = 16
	offPropertiesLen    = 20
	offSubsystemHash    = 24
	offDevtypeHash      = 28
	maxMessageSize      = 8192 // udevd's maximum too (UEVENT_BUFFER_SIZE-sized receive buffer)
	hashBlock           = 0xf0031db7
	minLegalMessageSize = headerSize
)

// Parse decodes one message that udevd broadcast on netlink group 2: the 40-byte libudev header
// followed by NUL-terminated KEY=VALUE properties. It checks the prefix, the magic and that the
// property area lies within the message, and requires ACTION, DEVPATH and SUBSYSTEM. It is a
// pure function (the socket-level trust checks are in the monitor).
func Parse(msg []byte) (Event, error) {
	if len(msg) < minLegalMessageSize {
		return Event{}, fmt.Errorf("cannot parse udev message: %d bytes is shorter than the %d-byte header", len(msg), headerSize)
	}
	if len(msg) > maxMessageSize {
		return Event{}, fmt.Errorf("cannot parse udev message: %d bytes is longer than %d", len(msg), maxMessageSize)
	}
	if string(msg[:8]) != headerPrefix {
		return Event{}, errors.New("cannot parse udev message: no libudev prefix (a kernel message?)")
	}
	if m := binary.BigEndian.Uint32(msg[offMagic:]); m != udevMonitorMagic {
		return Event{}, fmt.Errorf("cannot parse udev message: bad magic %#x", m)
	}
	hsize := binary.NativeEndian.Uint32(msg[offHeaderSize:])
	off := binary.NativeEndian.Uint32(msg[offPropertiesOff:])
	plen := binary.NativeEndian.Uint32(msg[offPropertiesLen:])
	// uint64 arithmetic: off+plen must not wrap around.
	if hsize < headerSize || uint64(off) < uint64(hsize) || uint64(off)+uint64(plen) > uint64(len(msg)) {
		return Event{}, fmt.Errorf("cannot parse udev message: property area %d+%d (header %d) outside the %d-byte message", off, plen, hsize, len(msg))
	}
	props, err := parseNulstr(msg[off : off+plen])
	if err != nil {
		return Event{}, fmt.Errorf("cannot parse udev message: %w", err)
	}
	ev, err := eventFromProps(props)
	if err != nil {
		return Event{}, fmt.Errorf("cannot parse udev message: %w", err)
	}
	return ev, nil
}

// parseNulstr splits KEY=VALUE\0KEY=VALUE\0... . An empty trailing element is allowed (the
// buffer ends with NUL); anything else without '=' or with an empty key is an error.
func parseNulstr(b []byte) (map[string]string, error) {
	if len(b) == 0 {
		return nil, errors.New("no properties")
	}
	if b[len(b)-1] != 0 {
		return nil, errors.New("properties are not NUL-terminated")
	}
	props := make(map[string]string)
	for _, item := range bytes.Split(b[:len(b)-1], []byte{0}) {
		k, v, ok := bytes.Cut(item, []byte{'='})
		if !ok || len(k) == 0 {
			return nil, fmt.Errorf("malformed property %q", truncate(item))
		}
		if !validKey(k) {
			return nil, fmt.Errorf("malformed property key %q", truncate(k))
		}
		props[string(k)] = string(v)
	}
	return props, nil
}

// validKey accepts what udev and the kernel use as property names: A-Z, a-z, 0-9, '_' and '.'
// (udev rules may set lower-case keys; '.' starts udev's internal keys like .ID_FS_TYPE_NEW).
func validKey(k []byte) bool {
	for _, c := range k {
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}

func truncate(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "…"
	}
	return string(b)
}

// eventFromProps fills the typed fields of an Event from its properties and validates them.
func eventFromProps(props map[string]string) (Event, error) {
	ev := Event{
		Action:    props["ACTION"],
		DevPath:   props["DEVPATH"],
		Subsystem: props["SUBSYSTEM"],
		DevType:   props["DEVTYPE"],
		Props:     props,
	}
	if ev.Action == "" || ev.DevPath == "" || ev.Subsystem == "" {
		return Event{}, errors.New("ACTION, DEVPATH or SUBSYSTEM missing")
	}
	if err := checkDevPath(ev.DevPath); err != nil {
		return Event{}, err
	}
	if s := props["SEQNUM"]; s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return Event{}, fmt.Errorf("bad SEQNUM %q", s)
		}
		ev.SeqNum = n
	}
	for _, f := range []struct {
		key string
		dst *uint32
	}{{"MAJOR", &ev.Major}, {"MINOR", &ev.Minor}} {
		if s, ok := props[f.key]; ok {
			n, err := strconv.ParseUint(s, 10, 32)
			if err != nil {
				return Event{}, fmt.Errorf("bad %s %q", f.key, s)
			}
			*f.dst = uint32(n)
		}
	}
	if ev.Subsystem == "block" {
		if _, ok := props["MAJOR"]; !ok {
			return Event{}, errors.New("block device without MAJOR")
		}
		if _, ok := props["MINOR"]; !ok {
			return Event{}, errors.New("block device without MINOR")
		}
	}
	if n := props["DEVNAME"]; n != "" {
		dn, err := devNodePath(n)
		if err != nil {
			return Event{}, err
		}
		ev.DevName = dn
		props["DEVNAME"] = dn
	}
	return ev, nil
}

// checkDevPath accepts a clean absolute sysfs path without "..".
func checkDevPath(p string) error {
	if !strings.HasPrefix(p, "/") || path.Clean(p) != p || p == "/" || strings.Contains(p, "/../") {
		return fmt.Errorf("bad DEVPATH %q", p)
	}
	return nil
}

// devNodePath turns DEVNAME into an absolute path under /dev: udevd sends it absolute, the
// kernel (and sysfs uevent files) relative to /dev.
func devNodePath(n string) (string, error) {
	p := n
	if !strings.HasPrefix(p, "/") {
		p = "/dev/" + p
	}
	if path.Clean(p) != p || !strings.HasPrefix(p, "/dev/") || strings.Contains(p, "/..") {
		return "", fmt.Errorf("bad DEVNAME %q", n)
	}
	return p, nil
}

// ParseDatabase decodes a udev database file (/run/udev/data/b<major>:<minor>) and returns its
// E: properties. Other record types (S: symlinks, G:/Q: tags, I: init time, L:, W:, V:) are
// skipped. Every line must look like "X:..."; an E: record must be KEY=VALUE.
func ParseDatabase(data []byte) (map[string]string, error) {
	props := make(map[string]string)
	for i, line := range strings.Split(string(data), "\n") {
		if line == "" {
			continue
		}
		if len(line) < 2 || line[1] != ':' {
			return nil, fmt.Errorf("cannot parse udev database: line %d: %q is not a record", i+1, truncate([]byte(line)))
		}
		if line[0] != 'E' {
			continue
		}
		k, v, ok := strings.Cut(line[2:], "=")
		if !ok || k == "" || !validKey([]byte(k)) {
			return nil, fmt.Errorf("cannot parse udev database: line %d: malformed property %q", i+1, truncate([]byte(line)))
		}
		props[k] = v
	}
	return props, nil
}

// murmurHash2 is MurmurHash2 with seed 0, the hash libudev puts in the header
// (filter_subsystem_hash) and compares in its BPF filter.
func murmurHash2(key []byte, seed uint32) uint32 {
	const m = 0x5bd1e995
	const r = 24
	h := seed ^ uint32(len(key))
	for len(key) >= 4 {
		k := binary.LittleEndian.Uint32(key)
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
		key = key[4:]
	}
	switch len(key) {
	case 3:
		h ^= uint32(key[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(key[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(key[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}

// buildMessage encodes an event the way udevd does. Used by tests and the fuzz seeds; kept in
// the package so the encoder and the parser cannot drift.
func buildMessage(subsystem, devtype string, props []string) []byte {
	var body bytes.Buffer
	for _, p := range props {
		body.WriteString(p)
		body.WriteByte(0)
	}
	h := make([]byte, headerSize)
	copy(h, headerPrefix)
	binary.BigEndian.PutUint32(h[offMagic:], udevMonitorMagic)
	binary.NativeEndian.PutUint32(h[offHeaderSize:], headerSize)
	binary.NativeEndian.PutUint32(h[offPropertiesOff:], headerSize)
	binary.NativeEndian.PutUint32(h[offPropertiesLen:], uint32(body.Len()))
	binary.BigEndian.PutUint32(h[offSubsystemHash:], murmurHash2([]byte(subsystem), 0))
	if devtype != "" {
		binary.BigEndian.PutUint32(h[offDevtypeHash:], murmurHash2([]byte(devtype), 0))
	}
	return append(h, body.Bytes()...)
}
