package api

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"
)

// JobStatus holds the properties of a Job object.
type JobStatus struct {
	Operation       string // OperationRestore or OperationVerify
	Drive           dbus.ObjectPath
	Progress        float64 // 0..1, or -1 when unknown
	BytesDone       uint64
	BytesTotal      uint64
	Rate            float64 // bytes per second, 0 when unknown
	ExpectedEndTime uint64  // Unix microseconds, 0 when unknown
	StartedByUID    uint32
	Cancelable      bool
}

// Props returns the status as a property map, the inverse of Apply. The daemon exports it.
func (s JobStatus) Props() map[string]any {
	return map[string]any{
		PropOperation:       s.Operation,
		PropDrive:           s.Drive,
		PropProgress:        s.Progress,
		PropBytesDone:       s.BytesDone,
		PropBytesTotal:      s.BytesTotal,
		PropRate:            s.Rate,
		PropExpectedEndTime: s.ExpectedEndTime,
		PropStartedByUID:    s.StartedByUID,
		PropCancelable:      s.Cancelable,
	}
}

// Apply stores the properties in props (as from GetAll or PropertiesChanged) into s. Unknown
// names are ignored; a known name with the wrong type is an error.
func (s *JobStatus) Apply(props map[string]dbus.Variant) error {
	var bad []string
	for name, v := range props {
		ok := true
		switch name {
		case PropOperation:
			s.Operation, ok = v.Value().(string)
		case PropDrive:
			s.Drive, ok = v.Value().(dbus.ObjectPath)
		case PropProgress:
			s.Progress, ok = v.Value().(float64)
		case PropBytesDone:
			s.BytesDone, ok = v.Value().(uint64)
		case PropBytesTotal:
			s.BytesTotal, ok = v.Value().(uint64)
		case PropRate:
			s.Rate, ok = v.Value().(float64)
		case PropExpectedEndTime:
			s.ExpectedEndTime, ok = v.Value().(uint64)
		case PropStartedByUID:
			s.StartedByUID, ok = v.Value().(uint32)
		case PropCancelable:
			s.Cancelable, ok = v.Value().(bool)
		}
		if !ok {
			bad = append(bad, fmt.Sprintf("%s has type %s", name, v.Signature()))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("cannot read job properties: %s", strings.Join(bad, ", "))
	}
	return nil
}

// JobResult is what a Job's Completed signal says.
type JobResult struct {
	Success  bool
	Message  string // why it failed; "" on success
	Error    string // the D-Bus error name of the failure; "" on success
	Checked  uint64 // Verify: entries compared with the manifest
	Problems []string
}

// Err is nil for a job that succeeded, else the failure as a Go error that wraps the sentinel
// of its D-Bus error name (as a failed call's error does).
func (r JobResult) Err() error {
	if r.Success {
		return nil
	}
	name := r.Error
	if name == "" {
		name = ErrorPrefix + "Failed"
	}
	return FromDBusError(dbus.Error{Name: name, Body: []any{r.Message}})
}

// Body returns the arguments of the Completed signal that carries r.
func (r JobResult) Body() []any {
	problems := r.Problems
	if problems == nil {
		problems = []string{}
	}
	return []any{r.Success, r.Message, r.Error, r.Checked, problems}
}

// parseCompleted reads the body of a Completed signal.
func parseCompleted(body []any) (JobResult, error) {
	var r JobResult
	if err := dbus.Store(body, &r.Success, &r.Message, &r.Error, &r.Checked, &r.Problems); err != nil {
		return r, fmt.Errorf("cannot read a job's Completed signal: %w", err)
	}
	return r, nil
}

// StartRestore starts copying path out of snapshot into destination and returns the Job at
// once. Restore does the same and waits for the job.
func (c *Client) StartRestore(ctx context.Context, drive dbus.ObjectPath, snapshot, path, destination string, opts Options) (dbus.ObjectPath, error) {
	var job dbus.ObjectPath
	err := c.call(ctx, drive, DriveInterface, MethodRestore, []any{&job}, snapshot, path, destination, c.options(opts))
	return job, err
}

// StartVerify starts re-reading a snapshot and returns the Job at once. Verify does the same
// and waits for the job.
func (c *Client) StartVerify(ctx context.Context, drive dbus.ObjectPath, snapshot string, opts Options) (dbus.ObjectPath, error) {
	var job dbus.ObjectPath
	err := c.call(ctx, drive, DriveInterface, MethodVerify, []any{&job}, snapshot, c.options(opts))
	return job, err
}

// CancelJob asks a job to stop; its Completed signal follows.
func (c *Client) CancelJob(ctx context.Context, job dbus.ObjectPath, opts Options) error {
	return c.call(ctx, job, JobInterface, MethodCancel, nil, c.options(opts))
}

// JobStatus reads every property of a job in one call.
func (c *Client) JobStatus(ctx context.Context, job dbus.ObjectPath) (JobStatus, error) {
	var props map[string]dbus.Variant
	var st JobStatus
	if err := c.call(ctx, job, "org.freedesktop.DBus.Properties", "GetAll", []any{&props}, JobInterface); err != nil {
		return st, err
	}
	err := st.Apply(props)
	return st, err
}

// Restore copies path out of snapshot into destination: it starts the job and waits until it
// completes. When ctx ends first, it cancels the job and returns ctx's error.
func (c *Client) Restore(ctx context.Context, drive dbus.ObjectPath, snapshot, path, destination string, opts Options) error {
	_, err := c.RunJob(ctx, func(ctx context.Context) (dbus.ObjectPath, error) {
		return c.StartRestore(ctx, drive, snapshot, path, destination, opts)
	}, nil)
	return err
}

// Verify re-reads a snapshot and compares it with its manifest: it starts the job and waits
// until it completes. When ctx ends first, it cancels the job and returns ctx's error.
func (c *Client) Verify(ctx context.Context, drive dbus.ObjectPath, snapshot string, opts Options) (checked uint64, problems []string, err error) {
	res, err := c.RunJob(ctx, func(ctx context.Context) (dbus.ObjectPath, error) {
		return c.StartVerify(ctx, drive, snapshot, opts)
	}, nil)
	if err != nil {
		return 0, nil, err
	}
	return res.Checked, res.Problems, nil
}

// jobCancelTimeout bounds the Cancel call made when a waiting caller's ctx ends.
const jobCancelTimeout = 25 * time.Second

// RunJob starts a job with start and waits until it completes, returning its result and
// JobResult.Err. It watches for Completed before it starts the job, so a job that ends at
// once is not missed. progress, when not nil, gets the job's properties whenever they change.
// When ctx ends first, RunJob cancels the job and returns ctx's error; when plugvaultd leaves
// the bus first, it returns an error that says so.
func (c *Client) RunJob(ctx context.Context, start func(context.Context) (dbus.ObjectPath, error), progress func(JobStatus)) (JobResult, error) {
	rules := [][]dbus.MatchOption{
		{dbus.WithMatchInterface(JobInterface), dbus.WithMatchMember(SignalCompleted), dbus.WithMatchPathNamespace(dbus.ObjectPath(strings.TrimSuffix(JobsPathPrefix, "/")))},
		{dbus.WithMatchSender("org.freedesktop.DBus"), dbus.WithMatchInterface("org.freedesktop.DBus"), dbus.WithMatchMember("NameOwnerChanged"), dbus.WithMatchArg(0, BusName)},
	}
	if progress != nil {
		rules = append(rules, []dbus.MatchOption{dbus.WithMatchInterface("org.freedesktop.DBus.Properties"), dbus.WithMatchMember("PropertiesChanged"),
			dbus.WithMatchArg(0, JobInterface), dbus.WithMatchPathNamespace(dbus.ObjectPath(strings.TrimSuffix(JobsPathPrefix, "/")))})
	}
	for i, r := range rules {
		if err := c.conn.AddMatchSignalContext(ctx, r...); err != nil {
			for _, added := range rules[:i] {
				_ = c.conn.RemoveMatchSignal(added...)
			}
			return JobResult{}, fmt.Errorf("cannot watch the job: %w", err)
		}
	}
	defer func() {
		for _, r := range rules {
			_ = c.conn.RemoveMatchSignal(r...)
		}
	}()
	sigs := make(chan *dbus.Signal, 16)
	c.conn.Signal(sigs)
	defer c.conn.RemoveSignal(sigs)
	// Anyone may send a signal to this connection directly: only plugvaultd's count.
	var owner string
	if err := c.conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.GetNameOwner", 0, BusName).Store(&owner); err != nil {
		return JobResult{}, FromDBusError(err)
	}

	type started struct {
		job dbus.ObjectPath
		err error
	}
	// The start call outlives ctx by up to jobCancelTimeout: a job that started just as ctx
	// ended is cancelled once its path is known.
	startCtx, stopStart := context.WithCancel(context.WithoutCancel(ctx))
	defer stopStart()
	startc := make(chan started, 1)
	go func() {
		job, err := start(startCtx)
		startc <- started{job, err}
	}()
	var job dbus.ObjectPath
	// Completed signals that arrive before the reply that names the job (the job may end
	// before the reply is sent).
	early := map[dbus.ObjectPath]JobResult{}
	var st JobStatus
	for {
		select {
		case s := <-startc:
			if s.err != nil {
				return JobResult{}, s.err
			}
			job, startc = s.job, nil
			if r, ok := early[job]; ok {
				return r, r.Err()
			}
			early = nil
			if progress != nil {
				if cur, err := c.JobStatus(ctx, job); err == nil {
					st = cur
					progress(st)
				}
			}
		case sig := <-sigs:
			switch {
			case sig.Name == JobInterface+"."+SignalCompleted && sig.Sender == owner:
				r, err := parseCompleted(sig.Body)
				if err != nil {
					continue
				}
				if job == "" {
					early[sig.Path] = r
				} else if sig.Path == job {
					return r, r.Err()
				}
			case sig.Name == "org.freedesktop.DBus.NameOwnerChanged" && sig.Sender == "org.freedesktop.DBus":
				var name, oldOwner, newOwner string
				if dbus.Store(sig.Body, &name, &oldOwner, &newOwner) == nil && name == BusName && oldOwner != "" {
					return JobResult{}, errors.New("plugvaultd stopped before the job completed")
				}
			case sig.Name == "org.freedesktop.DBus.Properties.PropertiesChanged" && sig.Sender == owner && progress != nil && job != "" && sig.Path == job:
				var iface string
				var changed map[string]dbus.Variant
				var invalidated []string
				if dbus.Store(sig.Body, &iface, &changed, &invalidated) == nil && iface == JobInterface && st.Apply(changed) == nil {
					progress(st)
				}
			}
		case <-ctx.Done():
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), jobCancelTimeout)
			defer cancel()
			if job == "" {
				select {
				case s := <-startc:
					job = s.job
				case <-cctx.Done():
				}
			}
			if job != "" {
				_ = c.CancelJob(cctx, job, nil)
			}
			return JobResult{}, ctx.Err()
		}
	}
}
