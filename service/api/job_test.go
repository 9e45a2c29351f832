package api_test

import (
	"context"
	"errors"
	"testing"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
)

// RunJob follows a job that completes after its start returned: it reports each change of
// the job's properties and returns what Completed carries.
func TestRunJobFollowsProgress(t *testing.T) {
	_, fake, client := startFake(t)
	drive := fake.AddDrive(t, api.DriveStatus{Name: "blue", LuksUUID: "11111111-2222-3333-4444-555555555555", EtaSeconds: -1})
	fake.HoldJobs(true)
	updates := make(chan api.JobStatus, 16)
	type result struct {
		res api.JobResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := client.RunJob(ctx(t), func(ctx context.Context) (dbus.ObjectPath, error) {
			return client.StartVerify(ctx, drive, "", nil)
		}, func(st api.JobStatus) { updates <- st })
		done <- result{res, err}
	}()
	job := <-fake.Jobs()
	if first := <-updates; first.Operation != api.OperationVerify || first.Drive != drive || first.Progress != -1 || !first.Cancelable {
		t.Errorf("first status %+v", first)
	}
	job.SetProgress(30, 120)
	var st api.JobStatus
	for st.BytesDone != 30 || st.BytesTotal != 120 || st.Progress != 0.25 {
		st = <-updates // one PropertiesChanged per property
	}
	want := api.JobResult{Success: true, Checked: 7, Problems: []string{"home/a: size differs"}}
	job.Complete(want)
	r := <-done
	if r.err != nil || r.res.Checked != want.Checked || len(r.res.Problems) != 1 || r.res.Problems[0] != want.Problems[0] {
		t.Errorf("RunJob = %+v, %v; want %+v", r.res, r.err, want)
	}
}

// A job that fails returns the error it carries, with its sentinel; Completed may arrive
// before the reply that names the job.
func TestRunJobFailure(t *testing.T) {
	_, fake, client := startFake(t)
	drive := fake.AddDrive(t, api.DriveStatus{Name: "blue", LuksUUID: "11111111-2222-3333-4444-555555555555", EtaSeconds: -1})
	fake.FailNext(api.MethodRestore, &wrapped{"cannot restore: snapshot 20261126T083100Z is not on the drive", api.ErrNotFound})
	err := client.Restore(ctx(t), drive, "20261126T083100Z", "", "/tmp/x", nil)
	if !errors.Is(err, api.ErrNotFound) || err.Error() != "cannot restore: snapshot 20261126T083100Z is not on the drive" {
		t.Errorf("Restore = %v", err)
	}
	fake.FailNext(api.MethodRestore, &wrapped{"cannot restore: not authorized", api.ErrNotAuthorized})
	if err := client.Restore(ctx(t), drive, "20261126T083100Z", "", "/tmp/x", nil); !errors.Is(err, api.ErrNotAuthorized) {
		t.Errorf("Restore = %v, want NotAuthorized from the call", err)
	}
}

type wrapped struct {
	msg string
	err error
}

func (w *wrapped) Error() string { return w.msg }
func (w *wrapped) Unwrap() error { return w.err }
