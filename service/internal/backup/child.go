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
	"strings"
	"syscall"
	"time"

	"github.com/plugvault/plugvault/service/internal/mount"
	"github.com/plugvault/plugvault/service/internal/sysexec"
)

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
	// NoRoom: the backup stopped for want of room on the target (with Error).
	NoRoom *NoRoom `json:"no_room,omitempty"`
}

// Spawn runs a backup with the engine in a child process (service/cmd/plugvault-engine at
// enginePath) with cred's identity, at idle I/O and batch CPU priority, in its own process
// group that is killed at once when ctx ends. The daemon (root) does Prepare before and
// Promote and Prune after it, and thins snapshots when the child stops for want of room (then
// it runs the child again); cred nil runs the child as the daemon's user.
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
	res, err := withRoom(job, guard, time.Now, progress, func(job Job) (Result, error) {
		if err := Prepare(job, uid, gid); err != nil {
			return Result{}, err
		}
		var msg ChildMessage
		if err := runChild(ctx, enginePath, cred, ChildRequest{Op: "backup", Job: &job}, progress, &msg); err != nil {
			return Result{}, err
		}
		if msg.Result == nil {
			return Result{}, fmt.Errorf("cannot back up: the engine reported no result")
		}
		return *msg.Result, nil
	})
	if err != nil {
		return res, err
	}
	return finishRun(job, guard, res, time.Now, progress)
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
		if final.NoRoom != nil {
			return &noRoomError{NoRoom: *final.NoRoom, err: errors.New(final.Error)}
		}
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

// SpawnVerify runs Verify in the engine child with cred's identity; progress (may be nil) gets
// the child's reports of bytes done and total.
func SpawnVerify(ctx context.Context, enginePath string, cred *syscall.Credential, target, host, snapshot string, progress func(done, total uint64)) (uint64, []string, error) {
	var msg ChildMessage
	err := runChild(ctx, enginePath, cred, ChildRequest{Op: "verify", Target: target, Host: host, Snapshot: snapshot}, bytesOnly(progress), &msg)
	return msg.Checked, msg.Problems, err
}

// SpawnRestore runs Restore in the engine child with the calling user's credentials; progress
// (may be nil) gets the child's reports of bytes done and total.
func SpawnRestore(ctx context.Context, enginePath string, cred *syscall.Credential, target, host, snapshot, path, dest string, overwrite bool, progress func(done, total uint64)) error {
	var msg ChildMessage
	return runChild(ctx, enginePath, cred, ChildRequest{Op: "restore", Target: target, Host: host,
		Snapshot: snapshot, Path: path, Dest: dest, Overwrite: overwrite}, bytesOnly(progress), &msg)
}

// bytesOnly adapts a bytes-done callback to the child's progress messages (nil stays nil).
func bytesOnly(progress func(done, total uint64)) func(Progress) {
	if progress == nil {
		return nil
	}
	return func(p Progress) { progress(p.BytesDone, p.BytesTotal) }
}

// sendBytes sends a bytes-done report of phase as a child progress message.
func sendBytes(send func(ChildMessage), phase string) func(done, total uint64) {
	return func(done, total uint64) {
		send(ChildMessage{Progress: &Progress{Phase: phase, BytesDone: done, BytesTotal: total, ETA: -1}})
	}
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
		res, err := runEngine(ctx, job, g, func(p Progress) { send(ChildMessage{Progress: &p}) }, time.Now(), true)
		if err != nil {
			final.Error = err.Error()
			var nr *noRoomError
			if errors.As(err, &nr) {
				final.NoRoom = &nr.NoRoom
			}
		} else {
			final.Result = &res
		}
	case "verify":
		n, probs, err := Verify(ctx, req.Target, req.Host, req.Snapshot, sendBytes(send, PhaseVerifying))
		final.Checked, final.Problems = n, probs
		if err != nil {
			final.Error = err.Error()
		}
	case "restore":
		if err := Restore(ctx, req.Target, req.Host, req.Snapshot, req.Path, req.Dest, req.Overwrite, sendBytes(send, PhaseRestoring)); err != nil {
			final.Error = err.Error()
		}
	default:
		return fmt.Errorf("cannot serve: unknown operation %q", req.Op)
	}
	final.Done = true
	send(final)
	return nil
}
