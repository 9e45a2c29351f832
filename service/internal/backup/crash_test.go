package backup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/sysexec"
)

// TestMain lets the test binary act as the engine child (plugvault-engine) for Spawn and the
// crash tests.
func TestMain(m *testing.M) {
	if mode := os.Getenv("PLUGVAULT_TEST_OPEN_BENEATH"); mode != "" {
		os.Exit(openBeneathChild(mode == "walk", os.Args[len(os.Args)-2], os.Args[len(os.Args)-1]))
	}
	if os.Getenv("PLUGVAULT_TEST_ENGINE_CHILD") == "1" {
		if ms, err := strconv.Atoi(os.Getenv("PLUGVAULT_TEST_COMMIT_MS")); err == nil {
			commitInterval = time.Duration(ms) * time.Millisecond
		}
		if err := ServeChild(context.Background(), os.Stdin, os.Stdout, nil); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// buildMany makes n files of mixed sizes in a few hundred directories, some hard links and
// symlinks.
func buildMany(t *testing.T, n int, seed int64) string {
	t.Helper()
	src := t.TempDir()
	rng := rand.New(rand.NewSource(seed))
	tr := tree{t, src}
	for i := 0; i < n; i++ {
		size := rng.Intn(8 << 10)
		if i%97 == 0 {
			size = 1<<20 + rng.Intn(1<<20)
		}
		data := make([]byte, size)
		rng.Read(data)
		p := fmt.Sprintf("d%02d/s%02d/f%05d", i%23, i%7, i)
		tr.file(p, string(data), 0o644)
		switch i % 50 {
		case 1:
			tr.symlink(fmt.Sprintf("f%05d", i), p+".lnk")
		case 2:
			tr.link(p, p+".hard")
		}
	}
	return src
}

func TestResumeReusesWhatThePartialHolds(t *testing.T) {
	old := commitInterval
	commitInterval = 5 * time.Millisecond
	t.Cleanup(func() { commitInterval = old })
	src := buildMany(t, 3000, 1)
	job := newJob(t, src, "ext4")
	job.Workers = 2
	var ops atomic.Int64
	yanked := errors.New("drive yanked")
	guard := func() error {
		if ops.Add(1) > 10 {
			return yanked
		}
		return nil
	}
	// Make the guard run often: a tiny batch.
	_, err := runWithGuardEvery(job, guard, 1)
	if !errors.Is(err, yanked) {
		t.Fatalf("want the guard's error, got %v", err)
	}
	names, _ := os.ReadDir(filepath.Join(job.Target, rootDir, job.Host))
	var partial string
	for _, n := range names {
		if strings.HasSuffix(n.Name(), partialExt) {
			partial = n.Name()
		}
		if api.IsSnapshotName(n.Name()) || n.Name() == latestName {
			t.Errorf("an interrupted run left %s", n.Name())
		}
	}
	if partial == "" {
		t.Fatal("no partial snapshot left behind")
	}
	res := mustRun(t, job)
	st := readStatsFile(t, job, res.Snapshot)
	if !st.Resumed || st.Written >= st.Entries {
		t.Errorf("the resumed run rewrote %d of %d entries (resumed=%v)", st.Written, st.Entries, st.Resumed)
	}
	compareSnapshot(t, job, src)
}

func runWithGuardEvery(job Job, guard func() error, every uint64) (Result, error) {
	old := guardEvery
	guardEvery = every
	defer func() { guardEvery = old }()
	return Run(context.Background(), job, guard, nil)
}

func readStatsFile(t *testing.T, job Job, snap string) Stats {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(job.Target, rootDir, job.Host, snap, metaDir, "stats.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st Stats
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// startEngineChild starts this test binary as the engine child on job; it commits every
// commitMS milliseconds.
func startEngineChild(ctx context.Context, t *testing.T, job Job, commitMS int) (*sysexec.Child, *bytes.Buffer) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	in, _ := json.Marshal(ChildRequest{Op: "backup", Job: &job})
	var out bytes.Buffer
	c, err := sysexec.StartChild(ctx, sysexec.ChildSpec{Path: exe, Stdin: bytes.NewReader(in), Stdout: &syncWriter{w: &out},
		Env: append(os.Environ(), "PLUGVAULT_TEST_ENGINE_CHILD=1", fmt.Sprintf("PLUGVAULT_TEST_COMMIT_MS=%d", commitMS))})
	if err != nil {
		t.Fatal(err)
	}
	return c, &out
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// crashLoop kills the engine child at random points, checks that "latest" only ever names a
// complete snapshot, then lets a run finish and compares the result with the source.
func crashLoop(t *testing.T, job Job, src string, kills int) {
	t.Helper()
	old := commitInterval
	commitInterval = 20 * time.Millisecond
	t.Cleanup(func() { commitInterval = old })
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	if err := Prepare(job, os.Geteuid(), os.Getegid()); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < kills; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		c, _ := startEngineChild(ctx, t, job, 20)
		time.Sleep(time.Duration(20+rng.Intn(400)) * time.Millisecond)
		c.Kill()
		_ = c.Wait()
		cancel()
		host := filepath.Join(job.Target, rootDir, job.Host)
		if l, err := os.Readlink(filepath.Join(host, latestName)); err == nil {
			if !api.IsSnapshotName(l) {
				t.Fatalf("latest names %q", l)
			}
			if _, err := os.Stat(filepath.Join(host, l, metaDir, "manifest")); err != nil {
				t.Fatalf("latest names an incomplete snapshot: %v", err)
			}
		}
		if job.FSType == "btrfs" {
			// Whatever the child finished is promoted by the daemon side; an unfinished
			// working tree must refuse promotion.
			if err := Promote(job, time.Now().UTC().Format(api.SnapshotLayout)); err == nil {
				t.Log("a finished run was promoted between kills")
			}
		}
	}
	res := mustRun(t, job)
	compareSnapshot(t, job, src)
	if _, problems, err := Verify(context.Background(), job.Target, job.Host, res.Snapshot, nil); err != nil || len(problems) > 0 {
		t.Errorf("Verify after crashes: %v %q", err, problems)
	}
}

// crashTwoRounds runs crashLoop on a fresh target, then again after changing every step-th
// file and removing directory gone.
func crashTwoRounds(t *testing.T, job Job, src string, step int, gone string) {
	crashLoop(t, job, src, 6)
	tr := tree{t, src}
	for i := 0; i < 4000; i += step {
		tr.file(fmt.Sprintf("d%02d/s%02d/f%05d", i%23, i%7, i), "changed", 0o600)
	}
	os.RemoveAll(filepath.Join(src, gone))
	crashLoop(t, job, src, 4)
}

func TestCrashInjectionExt4(t *testing.T) {
	src := buildMany(t, 4000, 2)
	crashTwoRounds(t, newJob(t, src, "ext4"), src, 37, "d03")
}

// TestSpawnCancel stops the engine child when the context ends, and the next run completes.
func TestSpawnCancel(t *testing.T) {
	src := buildMany(t, 3000, 7)
	job := newJob(t, src, "ext4")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	childEnv = append(append([]string(nil), sysexec.Env...), "PLUGVAULT_TEST_ENGINE_CHILD=1")
	t.Cleanup(func() { childEnv = nil })
	ctx, cancel := context.WithCancel(context.Background())
	var once sync.Once
	_, err = Spawn(ctx, exe, job, nil, func(p Progress) {
		if p.Phase == PhaseCopying && p.FilesDone > 0 {
			once.Do(cancel)
		}
	})
	cancel()
	if err == nil {
		t.Log("the backup finished before the cancellation reached it")
	} else if !errors.Is(err, context.Canceled) {
		t.Errorf("want a cancellation error, got %v", err)
	}
	res, err := Spawn(context.Background(), exe, job, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Files == 0 {
		t.Error("empty result")
	}
	compareSnapshot(t, job, src)
}
