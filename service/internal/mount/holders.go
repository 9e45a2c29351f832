package mount

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Holder is a process that keeps a mount busy, and how.
type Holder struct {
	PID  int
	Comm string   // the process name (/proc/<pid>/comm)
	Uses []string // "cwd", "root", "exe", "fd 3", "mapped file"
}

func (h Holder) String() string {
	return fmt.Sprintf("pid %d (%s: %s)", h.PID, h.Comm, strings.Join(h.Uses, ", "))
}

// findHolders scans procRoot/<pid>/{cwd,root,exe,fd/*,maps} for paths at or below target,
// like fuser -m. Processes that vanish meanwhile are skipped.
func findHolders(procRoot, target string) ([]Holder, error) {
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, fmt.Errorf("cannot list processes: %w", err)
	}
	under := func(p string) bool {
		p = strings.TrimSuffix(p, " (deleted)")
		return p == target || strings.HasPrefix(p, target+"/")
	}
	var holders []Holder
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid <= 0 {
			continue
		}
		dir := filepath.Join(procRoot, ent.Name())
		var uses []string
		for _, link := range []string{"cwd", "root", "exe"} {
			if p, err := os.Readlink(filepath.Join(dir, link)); err == nil && under(p) {
				uses = append(uses, link)
			}
		}
		if fds, err := os.ReadDir(filepath.Join(dir, "fd")); err == nil {
			for _, fd := range fds {
				if p, err := os.Readlink(filepath.Join(dir, "fd", fd.Name())); err == nil && under(p) {
					uses = append(uses, "fd "+fd.Name())
				}
			}
		}
		if mappedUnder(filepath.Join(dir, "maps"), under) {
			uses = append(uses, "mapped file")
		}
		if len(uses) == 0 {
			continue
		}
		comm, _ := os.ReadFile(filepath.Join(dir, "comm"))
		holders = append(holders, Holder{PID: pid, Comm: strings.TrimSpace(string(comm)), Uses: uses})
	}
	sort.Slice(holders, func(i, j int) bool { return holders[i].PID < holders[j].PID })
	return holders, nil
}

// mappedUnder reports whether a maps file has a mapping of a file that under accepts. The path
// is the sixth field and may contain spaces.
func mappedUnder(maps string, under func(string) bool) bool {
	f, err := os.Open(maps)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.SplitN(sc.Text(), " ", 6)
		if len(fields) == 6 {
			if p := strings.TrimLeft(fields[5], " "); strings.HasPrefix(p, "/") && under(p) {
				return true
			}
		}
	}
	return false
}
