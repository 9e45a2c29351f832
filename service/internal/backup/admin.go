package backup

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/mount"
	"github.com/plugvault/plugvault/service/internal/sysexec"
	"golang.org/x/sys/unix"
)

// Prepare is the privileged step before a run (the daemon calls it as root before Spawn): it
// creates plugvault/ (root, 0755) and plugvault/<host>/ owned by uid:gid, and on btrfs the
// .working subvolume owned by uid:gid (a fresh one is a snapshot of the newest complete
// snapshot, so nothing is copied again).
func Prepare(job Job, uid, gid int) error {
	if err := job.validate(); err != nil {
		return err
	}
	tfd, err := openDirPath(job.Target)
	if err != nil {
		return fmt.Errorf("cannot open target %q: %w", job.Target, err)
	}
	defer unix.Close(tfd)
	if err := mkdirOwned(tfd, rootDir, 0o755, -1, -1); err != nil {
		return err
	}
	if err := mkdirOwned(tfd, job.hostRel(), 0o755, uid, gid); err != nil {
		return err
	}
	hfd, err := openDirBeneath(tfd, job.hostRel())
	if err != nil {
		return fmt.Errorf("cannot open %s: %w", job.hostRel(), err)
	}
	defer unix.Close(hfd)
	if job.FSType != "btrfs" {
		return nil
	}
	if _, err := lstatAt(hfd, workingDir); err == nil {
		if !isSubvolume(hfd, workingDir) {
			return fmt.Errorf("cannot use %s/%s: not a btrfs subvolume", job.hostRel(), workingDir)
		}
	} else {
		latest := newestComplete(hfd)
		if latest != "" {
			sfd, err := openDirBeneath(hfd, latest)
			if err != nil {
				return fmt.Errorf("cannot open snapshot %s: %w", latest, err)
			}
			err = btrfsSnapshot(sfd, hfd, workingDir, false)
			unix.Close(sfd)
			if err != nil {
				return fmt.Errorf("cannot create the working subvolume: %w", err)
			}
		} else if err := btrfsCreateSubvol(hfd, workingDir); err != nil {
			return fmt.Errorf("cannot create the working subvolume: %w", err)
		}
	}
	wfd, err := openDirBeneath(hfd, workingDir)
	if err != nil {
		return fmt.Errorf("cannot open the working subvolume: %w", err)
	}
	defer unix.Close(wfd)
	if uid >= 0 {
		if err := unix.Fchown(wfd, uid, gid); err != nil {
			return fmt.Errorf("cannot hand the working subvolume to uid %d: %w", uid, err)
		}
		// The engine must be able to rewrite its own metadata directory.
		if mfd, err := openDirBeneath(wfd, metaDir); err == nil {
			_ = unix.Fchown(mfd, uid, gid)
			for _, n := range []string{"manifest", "journal", "stats.json", "result.json"} {
				_ = unix.Fchownat(mfd, n, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
			}
			unix.Close(mfd)
		}
	}
	return nil
}

// mkdirOwned creates rel below root if missing and gives it owner and mode.
func mkdirOwned(root int, rel string, mode uint32, uid, gid int) error {
	d, n := splitRel(rel)
	pfd, err := openDirBeneath(root, d)
	if err != nil {
		return fmt.Errorf("cannot open %q on the target: %w", d, err)
	}
	defer unix.Close(pfd)
	if err := unix.Mkdirat(pfd, n, mode); err != nil && err != unix.EEXIST {
		return fmt.Errorf("cannot create %q on the target: %w", rel, err)
	}
	fd, err := openDirBeneath(pfd, n)
	if err != nil {
		return fmt.Errorf("cannot open %q on the target: %w", rel, err)
	}
	defer unix.Close(fd)
	if uid >= 0 {
		if err := unix.Fchown(fd, uid, gid); err != nil {
			return fmt.Errorf("cannot set the owner of %q: %w", rel, err)
		}
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		return fmt.Errorf("cannot set the mode of %q: %w", rel, err)
	}
	return nil
}

func newestComplete(hfd int) string {
	names, _ := readDirNames(hfd)
	var best string
	for _, n := range names {
		if IsSnapshotName(n) && n > best {
			best = n
		}
	}
	return best
}

// Promote is the privileged step after a successful btrfs run: it takes the read-only snapshot
// name of .working and points "latest" at it. On ext4/xfs the engine has already promoted its
// partial, and Promote only checks that the snapshot exists.
func Promote(job Job, name string) error {
	if err := job.validate(); err != nil {
		return err
	}
	if !IsSnapshotName(name) {
		return fmt.Errorf("cannot promote: invalid snapshot name %q", name)
	}
	tfd, err := openDirPath(job.Target)
	if err != nil {
		return fmt.Errorf("cannot open target %q: %w", job.Target, err)
	}
	defer unix.Close(tfd)
	hfd, err := openDirBeneath(tfd, job.hostRel())
	if err != nil {
		return fmt.Errorf("cannot open %s: %w", job.hostRel(), err)
	}
	defer unix.Close(hfd)
	if job.FSType != "btrfs" {
		if _, err := lstatAt(hfd, name); err != nil {
			return fmt.Errorf("cannot find snapshot %s: %w", name, err)
		}
		// The engine set "latest" unless it was stopped between its rename and that step.
		if newest := newestComplete(hfd); newest != "" {
			if cur, err := readlinkAt(hfd, latestName); err != nil || cur != newest {
				return setLatest(hfd, newest)
			}
		}
		return nil
	}
	wfd, err := openDirBeneath(hfd, workingDir)
	if err != nil {
		return fmt.Errorf("cannot open the working subvolume: %w", err)
	}
	defer unix.Close(wfd)
	if _, err := lstatAt(wfd, metaDir+"/journal"); err == nil {
		return fmt.Errorf("cannot promote: the working subvolume holds an unfinished run")
	}
	if err := unix.Syncfs(wfd); err != nil {
		return fmt.Errorf("cannot sync the target: %w", err)
	}
	if err := btrfsSnapshot(wfd, hfd, name, true); err != nil {
		return fmt.Errorf("cannot create snapshot %s: %w", name, err)
	}
	if err := unix.Syncfs(hfd); err != nil {
		return fmt.Errorf("cannot sync the target: %w", err)
	}
	return setLatest(hfd, name)
}

// Prune is the privileged retention step: it deletes the complete snapshots the policy thins
// out, then the oldest ones while free space is under the floor; the newest complete snapshot
// is never deleted. It returns the names deleted.
func Prune(job Job, now time.Time) ([]string, error) {
	if err := job.validate(); err != nil {
		return nil, err
	}
	tfd, err := openDirPath(job.Target)
	if err != nil {
		return nil, fmt.Errorf("cannot open target %q: %w", job.Target, err)
	}
	defer unix.Close(tfd)
	hfd, err := openDirBeneath(tfd, job.hostRel())
	if err != nil {
		return nil, fmt.Errorf("cannot open %s: %w", job.hostRel(), err)
	}
	defer unix.Close(hfd)
	names, err := readDirNames(hfd)
	if err != nil {
		return nil, fmt.Errorf("cannot list the snapshots: %w", err)
	}
	var complete []string
	for _, n := range names {
		if IsSnapshotName(n) {
			complete = append(complete, n)
		} else if strings.HasSuffix(n, deleteExt) {
			_ = deleteSnapshot(hfd, n) // an interrupted delete
		}
	}
	sort.Strings(complete)
	r := effectiveRetention(job.Retention)
	var deleted []string
	gone := map[string]bool{}
	for _, n := range planRetention(complete, now, r) {
		if err := deleteSnapshot(hfd, n); err != nil {
			return deleted, err
		}
		deleted = append(deleted, n)
		gone[n] = true
	}
	var left []string
	for _, n := range complete {
		if !gone[n] {
			left = append(left, n)
		}
	}
	for len(left) > 1 {
		free, err := freePercent(hfd)
		if err != nil || free >= float64(r.MinFreePercent) {
			break
		}
		if err := deleteSnapshot(hfd, left[0]); err != nil {
			return deleted, err
		}
		deleted = append(deleted, left[0])
		left = left[1:]
		if job.FSType == "btrfs" {
			waitFreeChange(hfd, free)
		}
	}
	return deleted, nil
}

// deleteSnapshot renames a snapshot to <name>.deleting (so it is never taken for complete
// again), then removes it.
func deleteSnapshot(hfd int, name string) error {
	del := name
	if !strings.HasSuffix(name, deleteExt) {
		del = name + deleteExt
		if err := unix.Renameat(hfd, name, hfd, del); err != nil {
			return fmt.Errorf("cannot delete snapshot %s: %w", name, err)
		}
		if err := unix.Fsync(hfd); err != nil {
			return fmt.Errorf("cannot delete snapshot %s: %w", name, err)
		}
	}
	if isSubvolume(hfd, del) {
		if err := btrfsDestroy(hfd, del); err != nil {
			return fmt.Errorf("cannot delete snapshot %s: %w", name, err)
		}
		return nil
	}
	if err := removeAllAt(hfd, del); err != nil {
		return fmt.Errorf("cannot delete snapshot %s: %w", name, err)
	}
	return nil
}

func freePercent(fd int) (float64, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return 0, err
	}
	if st.Blocks == 0 {
		return 100, nil
	}
	return float64(st.Bavail) * 100 / float64(st.Blocks), nil
}

// waitFreeChange waits (bounded) for btrfs' cleaner to free a deleted snapshot's space, so the
// space floor does not delete more than needed.
func waitFreeChange(fd int, before float64) {
	_ = unix.Syncfs(fd)
	for i := 0; i < 40; i++ {
		if f, err := freePercent(fd); err != nil || f > before {
			return
		}
		time.Sleep(250 * time.Millisecond)
		_ = unix.Syncfs(fd)
	}
}

// Run does a whole backup in this process: Prepare, the engine, Promote and Prune. guard (the
// mount guard) is called before each batch of writes; progress a few times a second at most.
func Run(ctx context.Context, job Job, guard func() error, progress func(Progress)) (Result, error) {
	if err := job.validate(); err != nil {
		return Result{}, err
	}
	if guard != nil {
		if err := guard(); err != nil {
			return Result{}, fmt.Errorf("cannot write to the backup drive: %w", err)
		}
	}
	tr := newTracer()
	if err := Prepare(job, os.Geteuid(), os.Getegid()); err != nil {
		return Result{}, err
	}
	tr.step("prepare")
	res, err := runEngine(ctx, job, guard, progress, time.Now())
	tr = newTracer()
	if err != nil {
		return res, err
	}
	res, err = finishRun(job, guard, res)
	tr.step("promote and prune")
	return res, err
}

func finishRun(job Job, guard func() error, res Result) (Result, error) {
	if guard != nil {
		if err := guard(); err != nil {
			return res, fmt.Errorf("cannot write to the backup drive: %w", err)
		}
	}
	if err := Promote(job, res.Snapshot); err != nil {
		return res, err
	}
	if _, err := Prune(job, time.Now()); err != nil {
		res.Warnings = append(res.Warnings, err.Error())
	}
	return res, nil
}

// ChildRequest is what the engine child reads on stdin.
type ChildRequest struct {
	Op        string `json:"op"` // "backup", "verify" or "restore"
	Job       *Job   `json:"job,omitempty"`
	Target    string `json:"target,omitempty"`
	Host      string `json:"host,omitempty"`
	Snapshot  string `json:"snapshot,omitempty"`
	Path      string `json:"path,omitempty"`
	Dest      string `json:"dest,omitempty"`
	Overwrite bool   `json:"overwrite,omitempty"`
}

// ChildMessage is one JSON line the engine child writes on stdout.
type ChildMessage struct {
	Progress *Progress `json:"progress,omitempty"`
	Result   *Result   `json:"result,omitempty"`
	Checked  uint64    `json:"checked,omitempty"`
	Problems []string  `json:"problems,omitempty"`
	Done     bool      `json:"done,omitempty"`
	Error    string    `json:"error,omitempty"`
}

// Spawn runs a backup with the engine in a child process (service/cmd/plugvault-engine at
// enginePath) with cred's identity, at idle I/O and batch CPU priority, in its own process
// group that is killed at once when ctx ends. The daemon (root) does Prepare before and
// Promote and Prune after it; cred nil runs the child as the daemon's user.
func Spawn(ctx context.Context, enginePath string, job Job, cred *syscall.Credential, progress func(Progress)) (Result, error) {
	if err := job.validate(); err != nil {
		return Result{}, err
	}
	guard := func() error { return mount.Guard(job.Target, job.Dev) }
	if job.Dev == 0 {
		guard = nil
	}
	uid, gid := os.Geteuid(), os.Getegid()
	if cred != nil {
		uid, gid = int(cred.Uid), int(cred.Gid)
	}
	if guard != nil {
		if err := guard(); err != nil {
			return Result{}, fmt.Errorf("cannot write to the backup drive: %w", err)
		}
	}
	if err := Prepare(job, uid, gid); err != nil {
		return Result{}, err
	}
	var msg ChildMessage
	err := runChild(ctx, enginePath, cred, ChildRequest{Op: "backup", Job: &job}, progress, &msg)
	if err != nil {
		return Result{}, err
	}
	if msg.Result == nil {
		return Result{}, fmt.Errorf("cannot back up: the engine reported no result")
	}
	return finishRun(job, guard, *msg.Result)
}

// childEnv is the engine child's environment (nil: sysexec's fixed one); tests add a marker.
var childEnv []string

// runChild runs the engine child with req on stdin and collects its final message.
func runChild(ctx context.Context, enginePath string, cred *syscall.Credential, req ChildRequest, progress func(Progress), final *ChildMessage) error {
	in, err := json.Marshal(req)
	if err != nil {
		return err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("cannot start the engine: %w", err)
	}
	var stderr bytes.Buffer
	child, err := sysexec.StartChild(ctx, sysexec.ChildSpec{Path: enginePath, Stdin: bytes.NewReader(in),
		Stdout: pw, Stderr: &limitedWriter{w: &stderr, n: 64 << 10}, Credential: cred, Env: childEnv})
	pw.Close()
	if err != nil {
		pr.Close()
		return err
	}
	defer pr.Close()
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var got bool
	for sc.Scan() {
		var m ChildMessage
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		if m.Progress != nil {
			if progress != nil {
				progress(*m.Progress)
			}
			continue
		}
		*final, got = m, true
	}
	werr := child.Wait()
	if ctx.Err() != nil {
		return fmt.Errorf("cannot finish: %w", ctx.Err())
	}
	if got && final.Error != "" {
		return errors.New(final.Error)
	}
	if werr != nil || !got || !final.Done {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" && werr != nil {
			msg = werr.Error()
		}
		return fmt.Errorf("cannot run the backup engine: %s", msg)
	}
	return nil
}

type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		q := p
		if len(q) > l.n {
			q = q[:l.n]
		}
		l.w.Write(q)
		l.n -= len(q)
	}
	return len(p), nil
}

// SpawnVerify runs Verify in the engine child with cred's identity.
func SpawnVerify(ctx context.Context, enginePath string, cred *syscall.Credential, target, host, snapshot string) (uint64, []string, error) {
	var msg ChildMessage
	err := runChild(ctx, enginePath, cred, ChildRequest{Op: "verify", Target: target, Host: host, Snapshot: snapshot}, nil, &msg)
	return msg.Checked, msg.Problems, err
}

// SpawnRestore runs Restore in the engine child with the calling user's credentials.
func SpawnRestore(ctx context.Context, enginePath string, cred *syscall.Credential, target, host, snapshot, path, dest string, overwrite bool) error {
	var msg ChildMessage
	return runChild(ctx, enginePath, cred, ChildRequest{Op: "restore", Target: target, Host: host,
		Snapshot: snapshot, Path: path, Dest: dest, Overwrite: overwrite}, nil, &msg)
}

// ServeChild is the engine child's main loop: it reads a ChildRequest from in, does it and
// writes ChildMessages to out. guard is the mount guard for a job (nil: mount.Guard).
func ServeChild(ctx context.Context, in io.Reader, out io.Writer, guard func(target string, dev uint64) error) error {
	var req ChildRequest
	if err := json.NewDecoder(io.LimitReader(in, 1<<20)).Decode(&req); err != nil {
		return fmt.Errorf("cannot read the job: %w", err)
	}
	enc := json.NewEncoder(out)
	var encMu = make(chan struct{}, 1)
	send := func(m ChildMessage) {
		encMu <- struct{}{}
		_ = enc.Encode(m)
		<-encMu
	}
	if guard == nil {
		guard = mount.Guard
	}
	var final ChildMessage
	switch req.Op {
	case "backup":
		if req.Job == nil {
			return fmt.Errorf("cannot back up: no job")
		}
		job := *req.Job
		var g func() error
		if job.Dev != 0 {
			g = func() error { return guard(job.Target, job.Dev) }
		}
		res, err := runEngine(ctx, job, g, func(p Progress) { send(ChildMessage{Progress: &p}) }, time.Now())
		if err != nil {
			final.Error = err.Error()
		} else {
			final.Result = &res
		}
	case "verify":
		n, probs, err := Verify(ctx, req.Target, req.Host, req.Snapshot)
		final.Checked, final.Problems = n, probs
		if err != nil {
			final.Error = err.Error()
		}
	case "restore":
		if err := Restore(ctx, req.Target, req.Host, req.Snapshot, req.Path, req.Dest, req.Overwrite); err != nil {
			final.Error = err.Error()
		}
	default:
		return fmt.Errorf("cannot serve: unknown operation %q", req.Op)
	}
	final.Done = true
	send(final)
	return nil
}

// List returns the snapshots of host on the target, oldest first: complete ones and partial
// (interrupted) ones.
func List(target, host string) ([]api.Snapshot, error) {
	if !validHost(host) {
		return nil, fmt.Errorf("cannot list snapshots: invalid host name %q", host)
	}
	tfd, err := openDirPath(target)
	if err != nil {
		return nil, fmt.Errorf("cannot open target %q: %w", target, err)
	}
	defer unix.Close(tfd)
	hfd, err := openDirBeneath(tfd, rootDir+"/"+host)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, fmt.Errorf("cannot open %s/%s: %w", rootDir, host, err)
	}
	defer unix.Close(hfd)
	names, err := readDirNames(hfd)
	if err != nil {
		return nil, fmt.Errorf("cannot list the snapshots: %w", err)
	}
	var out []api.Snapshot
	for _, n := range names {
		base, status := n, api.SnapshotComplete
		if strings.HasSuffix(n, partialExt) {
			base, status = strings.TrimSuffix(n, partialExt), api.SnapshotPartial
		}
		if !IsSnapshotName(base) {
			continue
		}
		t, _ := time.Parse(timeLayout, base)
		s := api.Snapshot{Name: base, Created: t.Unix(), Status: status}
		if st := readStats(hfd, n); st != nil {
			s.Files, s.Bytes = st.Entries, st.Bytes
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
