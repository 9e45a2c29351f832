package daemon

import (
	"context"
	"fmt"

	"github.com/plugvault/plugvault/service/api"
)

// startingBackend answers every drive method while the real Backend is not set yet (see
// SetBackends). It never pretends to have done anything.
type startingBackend struct{}

var errStarting = fmt.Errorf("plugvaultd is still starting; try again in a moment: %w", api.ErrFailed)

func (startingBackend) Unlock(context.Context, string, []byte) error { return errStarting }
func (startingBackend) BackupNow(context.Context, string) error      { return errStarting }
func (startingBackend) Cancel(context.Context, string) error         { return errStarting }
func (startingBackend) Eject(context.Context, string, bool) error    { return errStarting }
func (startingBackend) ListSnapshots(context.Context, string) ([]api.Snapshot, error) {
	return nil, errStarting
}
func (startingBackend) Browse(context.Context, string, Caller) (string, error) {
	return "", errStarting
}
func (startingBackend) Restore(context.Context, string, RestoreRequest) error { return errStarting }
func (startingBackend) Verify(context.Context, string, string, Caller) (uint64, []string, error) {
	return 0, nil, errStarting
}
func (startingBackend) RunAs(context.Context, string) (string, error) { return "", errStarting }
