package backup

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Guard limits: the mount guard runs before the first write and again after this many entries
// or bytes.
var (
	guardEvery      uint64 = 1000
	guardEveryBytes uint64 = 256 << 20
)

// guardGate calls the mount guard before each batch of writes.
type guardGate struct {
	fn    func() error
	mu    sync.Mutex
	ops   uint64
	bytes uint64
}

// check calls the guard now.
func (g *guardGate) check() error {
	if g.fn == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.ops, g.bytes = 0, 0
	if err := g.fn(); err != nil {
		return fmt.Errorf("cannot write to the backup drive: %w", err)
	}
	return nil
}

// tick counts one write of n bytes and calls the guard when a batch is full.
func (g *guardGate) tick(n uint64) error {
	if g.fn == nil {
		return nil
	}
	g.mu.Lock()
	g.ops++
	g.bytes += n
	full := g.ops >= guardEvery || g.bytes >= guardEveryBytes
	g.mu.Unlock()
	if full {
		return g.check()
	}
	return nil
}

// CheckMount returns nil only if target is the root of a mount of device dev, read from
// /proc/self/mountinfo. It is the engine child's mount guard (the daemon may use
// mount.Guard, which checks the same).
func CheckMount(target string, dev uint64) error {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("cannot read mountinfo: %w", err)
	}
	return checkMountinfo(data, target, dev)
}

func checkMountinfo(data []byte, target string, dev uint64) error {
	var found bool
	var got string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// id parent major:minor root mountpoint ...
		if len(f) < 5 || unescapeMount(f[4]) != target {
			continue
		}
		// The last mount on a mount point hides the ones below it.
		found = true
		got = f[2]
		// btrfs reports an anonymous device number: compare the mount source's device too.
		for i := 5; i+2 < len(f); i++ {
			if f[i] == "-" {
				if sourceDev(unescapeMount(f[i+2])) == dev {
					got = fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev))
				}
				break
			}
		}
		if f[3] != "/" {
			got += " (not the filesystem root)"
		}
	}
	want := fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev))
	if !found {
		return fmt.Errorf("%s is not mounted", target)
	}
	if got != want {
		return fmt.Errorf("%s is a mount of %s, not of the backup drive (%s)", target, got, want)
	}
	return nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space, ...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// sourceDev is the device number of a mount source that is a block device node, or 0.
var sourceDev = func(src string) uint64 {
	if !strings.HasPrefix(src, "/dev/") {
		return 0
	}
	var st unix.Stat_t
	if err := unix.Stat(src, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return 0
	}
	return st.Rdev
}
