package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/plugvault/plugvault/service/api"
)

// Ctrl-C during a restore cancels the restore job and exits 130 with a message that says so.
func TestRestoreInterrupted(t *testing.T) {
	e := newEnv(t)
	e.twoDrives()
	e.fake.HoldJobs(true)
	ctx, interrupt := context.WithCancel(context.Background())
	defer interrupt()
	var out, errb bytes.Buffer
	done := e.runAsync(ctx, strings.NewReader(""), &out, &errb, "restore", "-d", "blue", "20261124T080000Z", t.TempDir())
	job := <-e.fake.Jobs()
	if job.Op != api.OperationRestore {
		t.Errorf("job %s does %q", job.Path, job.Op)
	}
	interrupt()
	if code := waitCode(t, done); code != exitCancelled {
		t.Errorf("exit %d, want %d; stderr %q", code, exitCancelled, errb.String())
	}
	select {
	case <-job.Cancelled():
	default:
		t.Error("the CLI exited without cancelling the job")
	}
	if got, want := errb.String(), "plugvault: cannot restore from blue: interrupted; the restore is cancelled\n"; got != want {
		t.Errorf("stderr %q, want %q", got, want)
	}
}

// A verify job that fails reports the job's error like a failed call.
func TestVerifyJobFails(t *testing.T) {
	e := newEnv(t)
	e.twoDrives()
	e.fake.FailNext(api.MethodVerify, errorf("cannot verify: the drive is not plugged in: %w", api.ErrNotPresent))
	code, _, errOut := e.run("", "verify", "-d", "blue")
	if code != exitNotPresent || !strings.Contains(errOut, "cannot verify: the drive is not plugged in") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}
