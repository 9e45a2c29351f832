package backup

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// swapLoop keeps replacing dir with a symlink to target and back until stop is closed.
func swapLoop(dir, target string, stop <-chan struct{}, swaps *atomic.Int64) {
	aside := dir + ".aside"
	for {
		select {
		case <-stop:
			if _, err := os.Lstat(aside); err == nil {
				os.Remove(dir)
				os.Rename(aside, dir)
			}
			return
		default:
		}
		if os.Rename(dir, aside) == nil {
			if os.Symlink(target, dir) == nil {
				swaps.Add(1)
			}
			time.Sleep(50 * time.Microsecond)
			os.Remove(dir)
			os.Rename(aside, dir)
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// TestSymlinkRaces swaps directories for symlinks in the source (to /etc) and in the target
// (to a directory outside it) while backups run: nothing outside the source may be read,
// nothing outside the target written.
func TestSymlinkRaces(t *testing.T) {
	src := buildMany(t, 1500, 3)
	outside := t.TempDir()
	job := newJob(t, src, "ext4")
	stop := make(chan struct{})
	var swaps atomic.Int64
	var wg sync.WaitGroup
	for _, d := range []string{"d01", "d02/s02", "d05"} {
		wg.Add(1)
		go func(d string) {
			defer wg.Done()
			swapLoop(filepath.Join(src, d), "/etc", stop, &swaps)
		}(d)
	}
	// Target side: swap directories of the partial snapshot under construction.
	host := filepath.Join(job.Target, rootDir, job.Host)
	wg.Add(1)
	go func() {
		defer wg.Done()
		rel := strings.TrimPrefix(src, "/")
		for {
			select {
			case <-stop:
				return
			default:
			}
			matches, _ := filepath.Glob(filepath.Join(host, "*"+partialExt, rel, "d0[3-4]"))
			for _, m := range matches {
				if os.Rename(m, m+".x") == nil {
					if os.Symlink(outside, m) == nil {
						swaps.Add(1)
					}
					time.Sleep(100 * time.Microsecond)
					os.Remove(m)
					os.Rename(m+".x", m)
				}
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	for i := 0; i < 3; i++ {
		// Errors are allowed (a directory of the target vanished under the engine); escapes
		// are not.
		if _, err := Run(context.Background(), job, nil, nil); err != nil {
			t.Logf("run %d: %v", i, err)
		}
		tree{t, src}.file("d06/touch", time.Now().String(), 0o644)
	}
	close(stop)
	wg.Wait()
	if swaps.Load() == 0 {
		t.Fatal("the swapper never swapped")
	}
	t.Logf("%d swaps", swaps.Load())
	// Nothing written outside the target.
	if names, _ := os.ReadDir(outside); len(names) != 0 {
		t.Errorf("the engine wrote through a symlink outside the target: %v", names)
	}
	// Nothing read from /etc: no snapshot holds a file named like /etc's.
	etc, _ := os.ReadDir("/etc")
	etcNames := map[string]bool{}
	for _, e := range etc {
		etcNames[e.Name()] = true
	}
	filepath.Walk(host, func(p string, fi os.FileInfo, err error) error {
		if err == nil && etcNames[fi.Name()] && !strings.HasPrefix(fi.Name(), "d") {
			t.Errorf("%s looks read from /etc", p)
		}
		if err == nil && fi.Mode()&os.ModeSymlink != 0 {
			if l, _ := os.Readlink(p); l == "/etc" {
				// A symlink recorded as a symlink is fine: it is stored, not followed.
				return nil
			}
		}
		return nil
	})
	// Finally a quiet run must give an exact copy.
	mustRun(t, job)
	compareSnapshot(t, job, src)
}
