package main

import (
	"context"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/daemon"
)

// placeholderBackend stands in for the drive manager (service/internal/drive.Manager), which
// is not written yet; the integrator replaces it. It never pretends to have done anything:
// every method answers NotPresent.
type placeholderBackend struct{}

var _ daemon.Backend = placeholderBackend{}

// errNotWired is the answer to every call.
var errNotWired = notWired{}

type notWired struct{}

func (notWired) Error() string { return "drive handling is not wired yet" }
func (notWired) Unwrap() error { return api.ErrNotPresent }

func (placeholderBackend) Unlock(context.Context, string, []byte) error { return errNotWired }
func (placeholderBackend) BackupNow(context.Context, string) error      { return errNotWired }
func (placeholderBackend) Cancel(context.Context, string) error         { return errNotWired }
func (placeholderBackend) Eject(context.Context, string, bool) error    { return errNotWired }

func (placeholderBackend) ListSnapshots(context.Context, string) ([]api.Snapshot, error) {
	return nil, errNotWired
}

func (placeholderBackend) Browse(context.Context, string, daemon.Caller) (string, error) {
	return "", errNotWired
}

func (placeholderBackend) Restore(context.Context, string, daemon.RestoreRequest) error {
	return errNotWired
}

func (placeholderBackend) Verify(context.Context, string, string) (uint64, []string, error) {
	return 0, nil, errNotWired
}
