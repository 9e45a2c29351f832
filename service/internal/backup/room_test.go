package backup

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/plugvault/plugvault/service/internal/mount"
	"golang.org/x/sys/unix"
)

// writeRandom makes src hold only name, of size random bytes.
func writeRandom(t *testing.T, src, name string, size int64, seed int64) {
	t.Helper()
	ents, _ := os.ReadDir(src)
	for _, e := range ents {
		os.RemoveAll(filepath.Join(src, e.Name()))
	}
	data := make([]byte, size)
	rand.New(rand.NewSource(seed)).Read(data)
	if err := os.WriteFile(filepath.Join(src, name), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func hostEntries(t *testing.T, job Job) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(job.Target, rootDir, job.Host))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func targetFree(t *testing.T, job Job) uint64 {
	t.Helper()
	fd, err := unix.Open(job.Target, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	_ = unix.Syncfs(fd)
	free, err := freeBytes(fd)
	if err != nil {
		t.Fatal(err)
	}
	return free
}

// testFullDrive fills a small real filesystem: a run that fits only once the oldest snapshot
// is gone thins it after a failed write and resumes its partial tree; a run that cannot fit
// even then fails with a FullError, leaves the newest snapshot as it was and no partial tree.
func testFullDrive(t *testing.T, fstype string, size int64) {
	mnt, dev := loopMount(t, fstype, size)
	src := t.TempDir()
	job := Job{Sources: []string{src}, Target: mnt, Host: "h", FSType: fstype, Dev: dev, NoDefaultExcludes: true}
	job.Retention.KeepAllHours = 1000 // retention alone deletes nothing here
	job.Retention.MinFreePercent = 1
	guard := func() error { return mount.Guard(job.Target, job.Dev) }
	runJob := func(j Job) (Result, error) {
		return run(context.Background(), j, guard, nil, testClock.now)
	}

	chunk := size / 5
	writeRandom(t, src, "one", chunk, 1)
	first, err := runJob(job)
	if err != nil {
		t.Fatal(err)
	}
	writeRandom(t, src, "two", chunk, 2)
	second, err := runJob(job)
	if err != nil {
		t.Fatal(err)
	}
	secondTree := scanTree(t, filepath.Join(job.Target, rootDir, job.Host, second.Snapshot), true)

	// Fits only once "one" is gone; the estimate before copying is skipped, so the copy
	// runs into ENOSPC first.
	free := targetFree(t, job)
	// btrfs' free space is an estimate (metadata comes out of it too): a quarter of the
	// freed space is left as margin.
	writeRandom(t, src, "three", int64(free)+chunk/4, 3)
	j := job
	j.SpaceChecked = true
	third, err := runJob(j)
	if err != nil {
		t.Fatalf("a run that fits after thinning failed: %v", err)
	}
	if third.Dropped != 1 {
		t.Errorf("the run that made room reports %d snapshots dropped, want 1", third.Dropped)
	}
	snaps, _ := List(job.Target, job.Host)
	var names []string
	for _, s := range snaps {
		names = append(names, s.Name)
	}
	if want := []string{second.Snapshot, third.Snapshot}; !reflect.DeepEqual(names, want) {
		t.Errorf("snapshots after thinning %v, want %v (the oldest, %s, deleted)", names, want, first.Snapshot)
	}
	if st := readStatsFile(t, job, third.Snapshot); !st.Resumed {
		t.Error("the run after thinning did not resume the partial tree")
	}
	compareTrees(t, src, snapPath(job, third.Snapshot, src))
	if got := scanTree(t, filepath.Join(job.Target, rootDir, job.Host, second.Snapshot), true); !reflect.DeepEqual(got, secondTree) {
		t.Error("the kept snapshot changed while room was made")
	}

	// Never fits.
	thirdTree := scanTree(t, filepath.Join(job.Target, rootDir, job.Host, third.Snapshot), true)
	writeRandom(t, src, "four", size, 4)
	_, err = runJob(job)
	var full *FullError
	if !errors.As(err, &full) {
		t.Fatalf("a run that cannot fit: got %v, want a FullError", err)
	}
	// The run needs the whole file; what is free is all it may have.
	if least := uint64(size) - targetFree(t, job); full.Short < least || full.Short > uint64(2*size) {
		t.Errorf("short by %d bytes, want at least %d (and not absurd)", full.Short, least)
	}
	snaps, _ = List(job.Target, job.Host)
	if len(snaps) != 1 || snaps[0].Name != third.Snapshot {
		t.Errorf("after the failed run: %+v, want only %s", snaps, third.Snapshot)
	}
	if got := scanTree(t, filepath.Join(job.Target, rootDir, job.Host, third.Snapshot), true); !reflect.DeepEqual(got, thirdTree) {
		t.Error("the newest snapshot changed in the failed run")
	}
	if _, problems, err := Verify(context.Background(), job.Target, job.Host, third.Snapshot, nil); err != nil || len(problems) > 0 {
		t.Errorf("verify: %v %q", err, problems)
	}
	for _, n := range hostEntries(t, job) {
		if n == workingDir || strings.HasSuffix(n, partialExt) || strings.HasSuffix(n, deleteExt) {
			t.Errorf("left on the drive after the failed run: %s", n)
		}
	}
}

func TestRootFullDriveExt4(t *testing.T)  { testFullDrive(t, "ext4", 96<<20) }
func TestRootFullDriveBtrfs(t *testing.T) { testFullDrive(t, "btrfs", 256<<20) }

// TestRoomBeforeCopy: when the engine's estimate says the run does not fit, the snapshots are
// thinned (oldest first, the newest kept) before the engine runs again, without its estimate.
func TestRoomBeforeCopy(t *testing.T) {
	src := t.TempDir()
	tree{t, src}.file("f", "x", 0o644)
	job := newJob(t, src, "ext4")
	job.Retention.KeepAllHours = 1000
	var made []string
	for i := 0; i < 3; i++ {
		made = append(made, mustRun(t, job).Snapshot)
	}
	var calls []bool
	var phases []string
	res, err := withRoom(job, nil, testClock.now, func(p Progress) { phases = append(phases, p.Phase) }, func(j Job) (Result, error) {
		calls = append(calls, j.SpaceChecked)
		if !j.SpaceChecked {
			return Result{}, &noRoomError{NoRoom: NoRoom{Need: 1 << 62, Total: 1 << 62}}
		}
		return Result{Snapshot: "done"}, nil
	})
	if err != nil || res.Snapshot != "done" || res.Dropped != 2 {
		t.Fatalf("withRoom: %+v %v; want done, 2 dropped", res, err)
	}
	if !reflect.DeepEqual(calls, []bool{false, true}) {
		t.Errorf("the engine ran with SpaceChecked %v, want [false true]", calls)
	}
	if !reflect.DeepEqual(phases, []string{PhasePruning}) {
		t.Errorf("progress phases %v, want [%s]", phases, PhasePruning)
	}
	snaps, _ := List(job.Target, job.Host)
	if len(snaps) != 1 || snaps[0].Name != made[2] {
		t.Errorf("left %+v, want only the newest %s", snaps, made[2])
	}
}

// TestRoomEstimate: the engine asks for room before copying only when other snapshots could
// be thinned and the files to copy exceed the free space; a sparse file counts by what it
// allocates, a file rewritten from a clone of its previous version not at all, one rewritten in
// place by what it grew.
func TestRoomEstimate(t *testing.T) {
	src := t.TempDir()
	job := newJob(t, src, "ext4")
	big := &Entry{Path: "big", Type: 'f', Size: 1 << 40}
	p := &plan{writes: map[string][]action{"": {{s: big, op: opCopy}, {s: &Entry{Path: "l", Type: 'l', Size: 9}, op: opCopy},
		{s: &Entry{Path: "same", Type: 'f', Size: 5}, op: opLink}}}}
	e := &engine{job: job, dest: linkTreeDest{}}
	if lo, hi := e.newBytes(p, nil); lo != 1<<40 || hi != 1<<40 {
		t.Errorf("estimate %d..%d, want %d (the copied file only)", lo, hi, 1<<40)
	}
	if lo, hi := e.newBytes(p, map[string]int64{"big": 4096}); lo != 4096 || hi != 4096 {
		t.Errorf("estimate with the file sparse %d..%d, want 4096", lo, hi)
	}
	e.dest, e.known = btrfsDest{}, map[string]*Entry{"big": big}
	if lo, hi := e.newBytes(p, nil); lo != 0 || hi != 1<<40 {
		t.Errorf("estimate of a file cloned from its previous version %d..%d, want 0..%d", lo, hi, 1<<40)
	}
	// Small files rewritten in place: one that grew counts what it grew by (it may be an
	// append), one that shrank nothing; high counts both whole.
	grew, shrank := &Entry{Path: "grew", Type: 'f', Size: 5000}, &Entry{Path: "shrank", Type: 'f', Size: 100}
	p = &plan{writes: map[string][]action{"": {{s: grew, op: opCopy}, {s: shrank, op: opCopy}}}}
	e.known = map[string]*Entry{"grew": {Path: "grew", Type: 'f', Size: 4000}, "shrank": {Path: "shrank", Type: 'f', Size: 300}}
	if lo, hi := e.newBytes(p, nil); lo != 1000 || hi != 5100 {
		t.Errorf("estimate of files rewritten in place %d..%d, want 1000..5100", lo, hi)
	}

	fd, err := unix.Open(job.Target, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	free, err := freeBytes(fd)
	if err != nil {
		t.Fatal(err)
	}
	e = &engine{job: job, destFd: fd, estimate: free + 1<<30}
	var nr *noRoomError
	if err := e.roomCheck([]string{"a", "b"}); !errors.As(err, &nr) || nr.Hit || nr.Need <= free {
		t.Errorf("too little room: %v, want a noRoomError before copying asking for more than %d", err, free)
	}
	if err := e.roomCheck([]string{"a"}); err != nil {
		t.Errorf("only the newest snapshot to thin: %v, want no check", err)
	}
	e.job.SpaceChecked = true
	if err := e.roomCheck([]string{"a", "b"}); err != nil {
		t.Errorf("SpaceChecked: %v, want no check", err)
	}
	e.estimate = 0
	e.job.SpaceChecked = false
	if err := e.roomCheck([]string{"a", "b"}); err != nil {
		t.Errorf("nothing to copy: %v", err)
	}
	// A failed write: what is still to write, and the whole.
	e.estimate, e.highEstimate = 10<<20, 100<<20
	e.bytesWritten.Store(40 << 20)
	err = e.noRoom(fmt.Errorf("cannot write: %w", unix.ENOSPC))
	if !errors.As(err, &nr) || !nr.Hit || nr.Need != 60<<20+slack(100<<20) || nr.Total != 100<<20+slack(100<<20) || !errors.Is(err, unix.ENOSPC) {
		t.Errorf("ENOSPC: %v %+v", err, nr)
	}
	if err := e.noRoom(unix.EIO); errors.As(err, &nr) {
		t.Errorf("EIO taken for a full drive: %v", err)
	}
}
