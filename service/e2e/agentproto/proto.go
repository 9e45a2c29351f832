// Package agentproto is the wire protocol between the e2e harness on the host and the guest
// agent inside the test VM: one JSON object per line over a virtio-serial port. The host sends
// Requests; the agent answers each with a Response carrying the same ID (requests run
// concurrently, so answers may come out of order). The agent also sends a Response with ID 0
// and Op "hello" every time it starts, that is once per guest boot.
//
// The agent keeps a log of everything it observes (udev block events, the daemon's D-Bus
// signals, its name owner coming and going) as numbered Events, so the host can wait for "the
// first event after N that matches" without ever polling or sleeping.
package agentproto

import (
	"slices"
	"strconv"
	"strings"
)

// PortName is the virtio-serial port name the agent opens (/sys/class/virtio-ports/*/name).
const PortName = "org.plugvault.e2e.agent"

// The plugvault packages in the 9p share (relative to it; the guest mounts it on
// /run/plugvault-e2e). DebCurrent is `make deb` of the tree under test; DebPrev is the same
// tree built with an older version, for the upgrade scenario.
const (
	DebCurrent = "deb/current/plugvault.deb"
	DebPrev    = "deb/prev/plugvault.deb"
)

// Ops the agent understands.
const (
	OpHello    = "hello"    // sent by the agent at start; Response.Boot describes the boot
	OpExec     = "exec"     // run Argv (as UID when UID > 0) with Stdin, within TimeoutMS
	OpNow      = "now"      // the guest's clock: Response.Time
	OpWait     = "wait"     // first event with Seq > Since matching Kind/Path/Match, within TimeoutMS
	OpEvents   = "events"   // every event with Seq > Since, now
	OpCall     = "call"     // one plugvaultd method (Method, Drive, Args) as UID, through service/api
	OpManifest = "manifest" // walk Root (never following symlinks) and describe every entry
)

// Event kinds.
const (
	KindUdev    = "udev"    // a udev block event; Props are its properties (ACTION, DEVNAME, ID_*)
	KindDrive   = "drive"   // PropertiesChanged of a Drive; Props are the changed values, State the state after it
	KindService = "service" // plugvaultd's bus name got an owner (Props["up"]="true") or lost it ("false")
	// KindJournal is one journal entry of plugvaultd.service; Props are its fields that do not
	// start with "_" (MESSAGE, PRIORITY, and the daemon's own: STEP, PHASE, GOROUTINES, …).
	KindJournal = "journal"
)

// Request is one command from the host.
type Request struct {
	ID        uint64            `json:"id"`
	Op        string            `json:"op"`
	Argv      []string          `json:"argv,omitempty"`
	Stdin     []byte            `json:"stdin,omitempty"`
	UID       int               `json:"uid,omitempty"`
	TimeoutMS int64             `json:"timeout_ms,omitempty"`
	Since     uint64            `json:"since,omitempty"`
	Kind      string            `json:"kind,omitempty"`
	Path      string            `json:"path,omitempty"`
	Match     map[string]string `json:"match,omitempty"` // alternatives separated by "|", or ">=N" (a number at least N)
	Method    string            `json:"method,omitempty"`
	Drive     string            `json:"drive,omitempty"`
	Args      []byte            `json:"args,omitempty"` // the passphrase of Unlock
	// Strings are a call's string arguments: Enroll's device and name, Restore's snapshot,
	// path and destination.
	Strings []string        `json:"strings,omitempty"`
	Options map[string]bool `json:"options,omitempty"`
	Root    string          `json:"root,omitempty"`
	Extents bool            `json:"extents,omitempty"` // manifest: also report physical extents (FIEMAP)
}

// Response answers one Request.
type Response struct {
	ID    uint64 `json:"id"`
	Op    string `json:"op,omitempty"`
	Error string `json:"error,omitempty"`
	// ErrorName is the D-Bus error name of a failed OpCall (org.plugvault.PlugVault1.Error.*).
	ErrorName string    `json:"error_name,omitempty"`
	Stdout    []byte    `json:"stdout,omitempty"`
	Stderr    []byte    `json:"stderr,omitempty"`
	Exit      int       `json:"exit"`
	Time      int64     `json:"time,omitempty"` // guest Unix nanoseconds
	Event     *Event    `json:"event,omitempty"`
	Events    []Event   `json:"events,omitempty"`
	Entries   []Entry   `json:"entries,omitempty"`
	Status    []byte    `json:"status,omitempty"` // OpCall DriveStatus/ListSnapshots/...: JSON of the result
	Boot      *BootInfo `json:"boot,omitempty"`
}

// BootInfo is what the agent reports when it starts.
type BootInfo struct {
	BootID      string `json:"boot_id"`
	Kernel      string `json:"kernel"`
	SystemState string `json:"system_state"` // systemctl is-system-running after boot settled
	Installed   bool   `json:"installed"`    // the install overlay was copied and plugvaultd enabled
	Uptime      string `json:"uptime"`
	Log         string `json:"log,omitempty"` // what the agent did before the hello
}

// Event is one observation in the agent's log.
type Event struct {
	Seq   uint64            `json:"seq"`
	Time  int64             `json:"time"` // guest Unix nanoseconds
	Kind  string            `json:"kind"`
	Path  string            `json:"path,omitempty"`  // drive object path (KindDrive)
	State string            `json:"state,omitempty"` // KindDrive: State after this change
	Props map[string]string `json:"props"`
}

// Entry describes one file in a manifest. Times are nanoseconds.
type Entry struct {
	Path    string            `json:"path"` // relative to Root, "." for Root itself
	Type    string            `json:"type"` // "file", "dir", "symlink", "other"
	Mode    uint32            `json:"mode"` // permission and setuid/setgid/sticky bits
	UID     uint32            `json:"uid"`
	GID     uint32            `json:"gid"`
	Size    int64             `json:"size"`
	MtimeNS int64             `json:"mtime_ns"`
	SHA256  string            `json:"sha256,omitempty"`
	Link    string            `json:"link,omitempty"`
	Ino     uint64            `json:"ino"`
	Nlink   uint64            `json:"nlink"`
	Dev     uint64            `json:"dev"`
	Extents [][2]uint64       `json:"extents,omitempty"` // physical offset and length of each extent
	Xattrs  map[string]string `json:"xattrs,omitempty"`
}

// Matches says whether ev is of kind (any kind when ""), of the drive path (any when "") and
// has every property of match: a match value lists alternatives separated by "|", or is ">=N"
// (the property is a number at least N).
func Matches(ev Event, kind, path string, match map[string]string) bool {
	if kind != "" && ev.Kind != kind {
		return false
	}
	if path != "" && ev.Path != path {
		return false
	}
	for k, want := range match {
		got, ok := ev.Props[k]
		// A wait for a state matches the change into it, not a later change of another
		// property while the drive is still in that state.
		if !ok {
			return false
		}
		if lim, ok := strings.CutPrefix(want, ">="); ok {
			x, err1 := strconv.ParseFloat(got, 64)
			y, err2 := strconv.ParseFloat(lim, 64)
			if err1 != nil || err2 != nil || x < y {
				return false
			}
			continue
		}
		if !slices.Contains(strings.Split(want, "|"), got) {
			return false
		}
	}
	return true
}
