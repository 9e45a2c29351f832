package apitest

import (
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/props"
)

// FakeJob is a job of the FakeService (a Restore or a Verify), exported on the bus as the
// daemon exports its jobs.
type FakeJob struct {
	f      *FakeService
	Path   dbus.ObjectPath
	Op     string // api.OperationRestore or api.OperationVerify
	result api.JobResult
	props  *props.Properties

	mu        sync.Mutex
	completed bool
	cancelled chan struct{} // closed by the job's Cancel
}

// HoldJobs makes the jobs started after it wait until the test completes them (FakeJob.Complete,
// or Cancel on the bus); each is delivered on Jobs when it starts. Without it a job completes
// before its start call returns, with the result set by SetResult or the error set by
// FailNext.
func (f *FakeService) HoldJobs(hold bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.holdJobs = hold
}

// Jobs delivers every job as it starts (buffered; tests that ignore it lose nothing).
func (f *FakeService) Jobs() <-chan *FakeJob { return f.jobCh }

// callError reports whether err fails the start call itself, as in the daemon: only
// authorization and validation happen before the job starts.
func callError(err error) bool {
	return errors.Is(err, api.ErrNotAuthorized) || errors.Is(err, api.ErrNotAuthorizedCanObtain) ||
		errors.Is(err, api.ErrNotAuthorizedDismissed) || errors.Is(err, api.ErrInvalidArgument)
}

// startJob answers a Restore or Verify call that record accepted or failed with err.
func (f *FakeService) startJob(drive dbus.ObjectPath, op, method string, err error) (dbus.ObjectPath, *dbus.Error) {
	if err != nil && callError(err) {
		return "", api.ToDBusError(err)
	}
	f.mu.Lock()
	f.lastJob++
	path := dbus.ObjectPath(api.JobsPathPrefix + strconv.FormatUint(f.lastJob, 10))
	hold := f.holdJobs
	f.mu.Unlock()
	j := &FakeJob{f: f, Path: path, Op: op, cancelled: make(chan struct{})}
	if err != nil {
		j.result = api.JobResult{Message: err.Error(), Error: api.ToDBusError(err).Name}
	} else {
		j.result = api.JobResult{Success: true}
		if op == api.OperationVerify {
			j.result.Checked = f.result(method, 0, uint64(0)).(uint64)
			j.result.Problems = f.result(method, 1, []string{}).([]string)
		}
	}
	st := api.JobStatus{Operation: op, Drive: drive, Progress: -1, StartedByUID: 0, Cancelable: true}
	j.props = props.New(api.JobInterface, st.Props())
	if perr := j.props.Export(f.Conn, path); perr != nil {
		return "", api.ToDBusError(perr)
	}
	if perr := f.Conn.ExportMethodTable(j.methods(), path, api.JobInterface); perr != nil {
		return "", api.ToDBusError(perr)
	}
	f.exportIntrospection(path)
	if !hold {
		j.Complete(j.result)
		return path, nil
	}
	select {
	case f.jobCh <- j:
	default:
	}
	return path, nil
}

// methods is the job's method table.
func (j *FakeJob) methods() map[string]any {
	return map[string]any{
		api.MethodCancel: func(msg dbus.Message, opts map[string]dbus.Variant) *dbus.Error {
			j.f.record(j.Path, api.MethodCancel, msg, opts)
			j.cancel()
			return nil
		},
	}
}

func (j *FakeJob) cancel() {
	j.mu.Lock()
	done := j.completed
	j.mu.Unlock()
	if done {
		return
	}
	close(j.cancelled)
	j.Complete(api.JobResult{Message: "cannot " + j.Op + ": cancelled", Error: api.ErrorName(api.ErrCancelled)})
}

// Cancelled is closed when a client called the job's Cancel.
func (j *FakeJob) Cancelled() <-chan struct{} { return j.cancelled }

// Result is what a job that is not held completes with (from SetResult and FailNext).
func (j *FakeJob) Result() api.JobResult { return j.result }

// SetProgress publishes the job's progress (each changed property is emitted).
func (j *FakeJob) SetProgress(bytesDone, bytesTotal uint64) {
	progress := -1.0
	if bytesTotal > 0 {
		progress = float64(bytesDone) / float64(bytesTotal)
	}
	j.emit(map[string]any{api.PropBytesDone: bytesDone, api.PropBytesTotal: bytesTotal, api.PropProgress: progress})
}

// emit updates the job's properties and announces those that changed.
func (j *FakeJob) emit(vals map[string]any) {
	if err := j.props.Emit(j.f.Conn, j.Path, j.props.Update(vals)); err != nil {
		panic(fmt.Sprintf("fake service cannot emit PropertiesChanged: %v", err))
	}
}

// Complete ends the job with res: Cancelable becomes false and Completed is emitted. The job
// stays exported (a late reader finds it). Only the first Complete counts.
func (j *FakeJob) Complete(res api.JobResult) {
	j.mu.Lock()
	if j.completed {
		j.mu.Unlock()
		return
	}
	j.completed = true
	j.mu.Unlock()
	j.emit(map[string]any{api.PropCancelable: false})
	if err := j.f.Conn.Emit(j.Path, api.JobInterface+"."+api.SignalCompleted, res.Body()...); err != nil {
		panic(fmt.Sprintf("fake service cannot emit Completed: %v", err))
	}
}
