package daemon

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/props"
)

// DefaultJobLinger is how long a completed job stays on the bus, so that a client that reads it
// after Completed still finds it.
const DefaultJobLinger = 10 * time.Second

// Job is the object of one running job at /org/plugvault/PlugVault1/jobs/N. Its exported
// methods are exactly the methods of org.plugvault.PlugVault1.Job in the contract (a test
// checks it).
type Job struct {
	d *Daemon
	j *job
}

// jobWork is what a job does; checked and problems are Verify's answer.
type jobWork func(ctx context.Context) (checked uint64, problems []string, err error)

// job is one job's state. The work runs on its own goroutine, owned by the Daemon (d.bg).
type job struct {
	d      *Daemon
	path   dbus.ObjectPath
	verb   string // for messages: "restore", "verify"
	sender string // the caller's unique name: the job ends when it leaves the bus
	props  *props.Properties

	mu      sync.Mutex
	status  api.JobStatus
	started time.Time
	cancel  context.CancelCauseFunc
	done    bool
}

// Why a job was cancelled, in the words of its Completed message.
const (
	whyCallerLeft = "cancelled: the program that started it left the bus"
	whyStopping   = "cancelled: plugvaultd is stopping"
)

// errJobCancelled is the cause of a job's end by Cancel, by its caller leaving the bus or by
// plugvaultd stopping; the text says which.
type errJobCancelled struct{ why string }

func (e *errJobCancelled) Error() string { return e.why }

// startJob exports a job for the call c and runs work on its own goroutine; it returns the
// job's path at once. The job's context is not the call's: it ends with Cancel, when the
// caller leaves the bus, or when the daemon stops.
func (d *Daemon) startJob(c *call, op string, drive dbus.ObjectPath, work jobWork) (dbus.ObjectPath, error) {
	uid, err := c.uid()
	if err != nil {
		return "", err
	}
	d.mu.Lock()
	if d.draining || d.closed {
		d.mu.Unlock()
		return "", errStopping(op)
	}
	d.lastJob++
	path := dbus.ObjectPath(api.JobsPathPrefix + strconv.FormatUint(d.lastJob, 10))
	ctx, cancel := context.WithCancelCause(d.ctx)
	j := &job{d: d, path: path, verb: op, sender: c.sender, started: d.opts.Now(), cancel: cancel,
		status: api.JobStatus{Operation: op, Drive: drive, Progress: -1, StartedByUID: uid, Cancelable: true}}
	j.props = props.New(api.JobInterface, j.status.Props())
	d.jobs[path] = j
	d.inflight++ // the work counts as a call in flight: Drain waits for it
	d.mu.Unlock()

	if err := d.exportObject(path, api.JobInterface, &Job{d: d, j: j}, j.props); err != nil {
		d.unexportObject(path, api.JobInterface)
		d.forgetJob(j)
		d.leave()
		cancel(nil)
		return "", err
	}
	watch := []dbus.MatchOption{dbus.WithMatchSender("org.freedesktop.DBus"), dbus.WithMatchInterface("org.freedesktop.DBus"),
		dbus.WithMatchMember("NameOwnerChanged"), dbus.WithMatchArg(0, j.sender)}
	if err := d.conn.AddMatchSignalContext(c.ctx, watch...); err != nil {
		d.log.Warn("cannot watch a job's caller; the job runs until it ends or is cancelled", "job", string(path), "error", err)
		watch = nil
	}
	// The caller may have left before the match was in place.
	var has bool
	if err := d.conn.BusObject().CallWithContext(c.ctx, "org.freedesktop.DBus.NameHasOwner", 0, j.sender).Store(&has); err == nil && !has {
		j.stop(whyCallerLeft)
	}
	d.log.Info("job started", "job", string(path), "operation", op, "drive", string(drive), "sender", c.sender, "uid", uid)
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		d.runJob(context.WithValue(ctx, jobKey{}, j), j, work)
		if watch != nil {
			_ = d.conn.RemoveMatchSignal(watch...)
		}
	}()
	return path, nil
}

// runJob does the work, announces how it ended (Completed), and after DefaultJobLinger (or
// when the daemon closes) removes the job from the bus.
func (d *Daemon) runJob(ctx context.Context, j *job, work jobWork) {
	checked, problems, err := work(ctx)
	// Work that ends because the job was cancelled reports that in its own words ("context
	// canceled"); Completed says why instead.
	var cancelled *errJobCancelled
	if err != nil && errors.As(context.Cause(ctx), &cancelled) {
		err = &userError{msg: fmt.Sprintf("cannot %s: %s", j.verb, cancelled.why), sentinel: api.ErrCancelled}
	}
	j.cancel(nil)
	res := api.JobResult{Success: err == nil, Checked: checked, Problems: problems}
	if err != nil {
		derr := api.ToDBusError(err)
		res.Error = derr.Name
		res.Message = err.Error()
		res.Checked, res.Problems = 0, nil
		d.log.Info("job failed", "job", string(j.path), "operation", j.verb, "error", err)
	} else {
		d.log.Info("job done", "job", string(j.path), "operation", j.verb, "checked", checked, "problems", len(problems))
	}
	j.mu.Lock()
	j.done = true
	j.status.Cancelable = false
	changed := j.props.Update(map[string]any{api.PropCancelable: false})
	j.mu.Unlock()
	d.emitJobChanged(j, changed)
	if err := d.conn.Emit(j.path, api.JobInterface+"."+api.SignalCompleted, res.Body()...); err != nil {
		d.log.Warn("cannot announce the end of a job", "job", string(j.path), "error", err)
	}
	d.leave()
	linger := time.NewTimer(d.opts.JobLinger)
	select {
	case <-linger.C:
	case <-d.ctx.Done():
		linger.Stop()
	}
	d.unexportObject(j.path, api.JobInterface)
	d.forgetJob(j)
}

func (d *Daemon) forgetJob(j *job) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.jobs, j.path)
}

func (d *Daemon) emitJobChanged(j *job, changed map[string]dbus.Variant) {
	if err := j.props.Emit(d.conn, j.path, changed); err != nil {
		d.log.Warn("cannot emit PropertiesChanged", "job", string(j.path), "error", err)
	}
}

// stop cancels the job's work with the reason why.
func (j *job) stop(why string) {
	j.cancel(&errJobCancelled{why: why})
}

// stopJobsOf cancels the jobs that sender started: it left the bus.
func (d *Daemon) stopJobsOf(sender string) {
	d.mu.Lock()
	var jobs []*job
	for _, j := range d.jobs {
		if j.sender == sender {
			jobs = append(jobs, j)
		}
	}
	d.mu.Unlock()
	for _, j := range jobs {
		d.log.Info("cancelling a job: its caller left the bus", "job", string(j.path), "sender", sender)
		j.stop(whyCallerLeft)
	}
}

// watchCallers cancels the jobs of callers that leave the bus, until ctx ends. sigs receives
// every signal of the connection; only NameOwnerChanged from the bus itself counts (anyone
// may send a signal to the daemon directly).
func (d *Daemon) watchCallers(ctx context.Context, sigs <-chan *dbus.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case s, ok := <-sigs:
			if !ok {
				return
			}
			if s.Sender != "org.freedesktop.DBus" || s.Name != "org.freedesktop.DBus.NameOwnerChanged" {
				continue
			}
			var name, oldOwner, newOwner string
			if dbus.Store(s.Body, &name, &oldOwner, &newOwner) == nil && name != "" && name[0] == ':' && newOwner == "" {
				d.stopJobsOf(name)
			}
		}
	}
}

// jobKey is the context key of the job whose work runs under the context.
type jobKey struct{}

// ReportProgress sets the progress of the job whose work runs under ctx: bytesDone of
// bytesTotal (0 when not known yet). From the time since the job started it derives the Rate
// and the ExpectedEndTime. Outside a job it does nothing, so a backend can call it
// unconditionally.
func ReportProgress(ctx context.Context, bytesDone, bytesTotal uint64) {
	j, _ := ctx.Value(jobKey{}).(*job)
	if j == nil {
		return
	}
	j.setProgress(bytesDone, bytesTotal)
}

// jobProgress is a progress callback that reports on the job whose work runs under ctx; the
// backend calls it from its own goroutines and contexts.
func jobProgress(ctx context.Context) func(done, total uint64) {
	return func(done, total uint64) { ReportProgress(ctx, done, total) }
}

// setProgress publishes the progress and what follows from it.
func (j *job) setProgress(bytesDone, bytesTotal uint64) {
	j.mu.Lock()
	if j.done {
		j.mu.Unlock()
		return
	}
	j.status = progressStatus(j.status, j.started, j.d.opts.Now(), bytesDone, bytesTotal)
	changed := j.props.Update(j.status.Props())
	j.mu.Unlock()
	if len(changed) > 0 {
		j.d.emitJobChanged(j, changed)
	}
}

// progressStatus is st with the progress of bytesDone of bytesTotal at now, for a job that
// started at started: Progress is -1 and ExpectedEndTime 0 while the total is unknown, and
// the expected end assumes the average rate so far holds.
func progressStatus(st api.JobStatus, started, now time.Time, bytesDone, bytesTotal uint64) api.JobStatus {
	if bytesTotal > 0 && bytesDone > bytesTotal {
		bytesDone = bytesTotal
	}
	st.BytesDone, st.BytesTotal = bytesDone, bytesTotal
	st.Progress, st.Rate, st.ExpectedEndTime = -1, 0, 0
	if bytesTotal > 0 {
		st.Progress = float64(bytesDone) / float64(bytesTotal)
	}
	elapsed := now.Sub(started)
	if elapsed <= 0 || bytesDone == 0 {
		return st
	}
	st.Rate = float64(bytesDone) / elapsed.Seconds()
	if bytesTotal > 0 {
		left := time.Duration(float64(bytesTotal-bytesDone) / st.Rate * float64(time.Second))
		st.ExpectedEndTime = uint64(now.Add(left).UnixMicro())
	}
	return st
}

// Cancel stops the job. Only the user who started it, or root, may: the caller's uid comes
// from the bus daemon, and no polkit check is made.
func (jo *Job) Cancel(sender dbus.Sender, opts map[string]dbus.Variant) *dbus.Error {
	d, j := jo.d, jo.j
	if _, err := checkOptions(api.MethodCancel, opts); err != nil {
		return api.ToDBusError(err)
	}
	ctx, cancel := context.WithTimeout(d.ctx, d.opts.AuthTimeout)
	defer cancel()
	c := &call{d: d, ctx: ctx, cancel: cancel, sender: string(sender), iface: api.JobInterface, method: api.MethodCancel, opts: opts}
	uid, err := c.uid()
	if err != nil {
		return api.ToDBusError(err)
	}
	j.mu.Lock()
	owner, done := j.status.StartedByUID, j.done
	j.mu.Unlock()
	if !mayCancel(uid, owner) {
		d.log.Info("job cancel refused", "job", string(j.path), "sender", c.sender, "uid", uid)
		return api.ToDBusError(fmt.Errorf("cannot cancel the %s: another user started it: %w", j.verb, api.ErrNotAuthorized))
	}
	if !done {
		d.log.Info("cancelling a job", "job", string(j.path), "sender", c.sender, "uid", uid)
		j.stop("cancelled")
	}
	return nil
}

// mayCancel reports whether the user uid may cancel a job that the user owner started: only
// that user and root may.
func mayCancel(uid, owner uint32) bool {
	return uid == owner || uid == 0
}
