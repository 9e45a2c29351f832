package testbus

import (
	"context"
	"fmt"
	"os/user"
	"sync"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/apitest"
	"github.com/plugvault/plugvault/service/internal/daemon"
	"github.com/plugvault/plugvault/service/internal/drive"
	"github.com/plugvault/plugvault/service/internal/enroll"
)

// BackendCall is one call the fake backend or enroller received.
type BackendCall struct {
	Method string // "Unlock", "Enroll", …
	UUID   string // the drive ("" for Enroll and Adopt)
	// Secret is a copy of the passphrase or secret, taken when the call arrived.
	Secret []byte
	// SecretRef is the slice the daemon passed; it must be all zeros once the call returned.
	SecretRef []byte
	// Args holds the rest: a bool (Eject's power_off, Forget's remove_keyslot), a
	// drive.Caller (Browse), a drive.RestoreRequest, a snapshot name and a drive.Caller (Verify), a
	// enroll.Request or enroll.AdoptRequest (secrets in them are the passed slices).
	Args []any
}

// FakeBackend stands for the drive manager (service/internal/drive) and the enroller: it
// records every call and answers with the error the test scripted, or success.
type FakeBackend struct {
	mu     sync.Mutex
	calls  []BackendCall
	errs   map[string]error
	uuid   string // what Enroll and Adopt return
	header []byte // what Enroll returns as the header backup (default apitest.FakeHeaderBackup)
	snaps  []api.Snapshot
	browse string
	holds  map[string]*Held // by method, see Hold
	runAs  *string          // nil: the user running the test
	// Publisher, when set, receives AddDrive after Enroll/Adopt like the real enroller does.
	Publisher drive.Publisher
}

var (
	_ daemon.Backend  = (*FakeBackend)(nil)
	_ daemon.Enroller = (*FakeBackend)(nil)
)

// NewFakeBackend returns a fake that succeeds at everything.
func NewFakeBackend() *FakeBackend {
	return &FakeBackend{errs: map[string]error{}, uuid: "0b8c6f2e-1111-4a4a-9f9f-123456789abc", browse: "/run/plugvault/browse/fake"}
}

// Fail makes every later call of method return err (nil clears it).
func (b *FakeBackend) Fail(method string, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err == nil {
		delete(b.errs, method)
	} else {
		b.errs[method] = err
	}
}

// SetHeaderBackup sets the header backup that Enroll returns when asked for one.
func (b *FakeBackend) SetHeaderBackup(header []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.header = header
}

// SetEnrollUUID sets the LUKS UUID that Enroll and Adopt report.
func (b *FakeBackend) SetEnrollUUID(uuid string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.uuid = uuid
}

// SetRunAs sets the run_as user RunAs reports for every drive.
func (b *FakeBackend) SetRunAs(name string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.runAs = &name
}

// RunAs implements daemon.Backend: the name set by SetRunAs, by default the user running the
// test (so the caller owns every drive). It is not recorded as a call.
func (b *FakeBackend) RunAs(context.Context, string) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.runAs != nil {
		return *b.runAs, nil
	}
	u, err := user.Current()
	if err != nil {
		return "", fmt.Errorf("cannot tell who runs the test: %w", err)
	}
	return u.Username, nil
}

// SetSnapshots sets what ListSnapshots returns.
func (b *FakeBackend) SetSnapshots(s []api.Snapshot) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.snaps = s
}

// Calls returns every call so far.
func (b *FakeBackend) Calls() []BackendCall {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]BackendCall(nil), b.calls...)
}

// Reset forgets the recorded calls.
func (b *FakeBackend) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = nil
}

func (b *FakeBackend) record(method, uuid string, secret []byte, args ...any) error {
	c := BackendCall{Method: method, UUID: uuid, Args: args}
	if secret != nil {
		c.Secret = append([]byte(nil), secret...)
		c.SecretRef = secret
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, c)
	return b.errs[method]
}

// Unlock implements daemon.Backend.
func (b *FakeBackend) Unlock(_ context.Context, uuid string, passphrase []byte) error {
	return b.record("Unlock", uuid, passphrase)
}

// CheckPassphrase implements daemon.Backend.
func (b *FakeBackend) CheckPassphrase(_ context.Context, uuid string, passphrase []byte) error {
	return b.record("CheckPassphrase", uuid, passphrase)
}

// BackupNow implements daemon.Backend.
func (b *FakeBackend) BackupNow(_ context.Context, uuid string) error {
	return b.record("BackupNow", uuid, nil)
}

// Cancel implements daemon.Backend.
func (b *FakeBackend) Cancel(_ context.Context, uuid string) error {
	return b.record("Cancel", uuid, nil)
}

// Eject implements daemon.Backend.
func (b *FakeBackend) Eject(_ context.Context, uuid string, powerOff bool) error {
	return b.record("Eject", uuid, nil, powerOff)
}

// ListSnapshots implements daemon.Backend.
func (b *FakeBackend) ListSnapshots(_ context.Context, uuid string) ([]api.Snapshot, error) {
	if err := b.record("ListSnapshots", uuid, nil); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]api.Snapshot(nil), b.snaps...), nil
}

// Browse implements daemon.Backend.
func (b *FakeBackend) Browse(_ context.Context, uuid string, caller drive.Caller) (string, error) {
	if err := b.record("Browse", uuid, nil, caller); err != nil {
		return "", err
	}
	return b.browse, nil
}

// Restore implements daemon.Backend; a test can hold it (Hold).
func (b *FakeBackend) Restore(ctx context.Context, uuid string, req drive.RestoreRequest, progress func(done, total uint64)) error {
	if err := b.record("Restore", uuid, nil, req); err != nil {
		return err
	}
	return b.hold(ctx, "Restore", progress)
}

// Verify implements daemon.Backend; a test can hold it (Hold).
func (b *FakeBackend) Verify(ctx context.Context, uuid, snapshot string, caller drive.Caller, progress func(done, total uint64)) (uint64, []string, error) {
	if err := b.record("Verify", uuid, nil, snapshot, caller); err != nil {
		return 0, nil, err
	}
	if err := b.hold(ctx, "Verify", progress); err != nil {
		return 0, nil, err
	}
	return 42, []string{}, nil
}

// Enroll implements daemon.Enroller; a test can hold it (Hold).
func (b *FakeBackend) Enroll(ctx context.Context, req enroll.Request) (enroll.Result, error) {
	if err := b.record("Enroll", "", req.Passphrase, req); err != nil {
		return enroll.Result{}, err
	}
	if err := b.hold(ctx, "Enroll", nil); err != nil {
		return enroll.Result{}, err
	}
	uuid, err := b.added(req.Name)
	if err != nil {
		return enroll.Result{}, err
	}
	res := enroll.Result{UUID: uuid}
	if req.HeaderBackup {
		b.mu.Lock()
		res.HeaderBackup = b.header
		b.mu.Unlock()
		if res.HeaderBackup == nil {
			res.HeaderBackup = apitest.FakeHeaderBackup
		}
	}
	return res, nil
}

// Adopt implements daemon.Enroller.
func (b *FakeBackend) Adopt(_ context.Context, req enroll.AdoptRequest) (string, error) {
	if err := b.record("Adopt", "", req.Secret, req); err != nil {
		return "", err
	}
	return b.added(req.Name)
}

func (b *FakeBackend) added(name string) (string, error) {
	b.mu.Lock()
	uuid, pub := b.uuid, b.Publisher
	b.mu.Unlock()
	if pub != nil {
		if err := pub.AddDrive(uuid, api.DriveStatus{Name: name, LuksUUID: uuid, State: api.StateAbsent, EtaSeconds: -1}); err != nil {
			return "", fmt.Errorf("cannot publish the new drive: %w", err)
		}
	}
	return uuid, nil
}

// SealKeys implements daemon.Enroller.
func (b *FakeBackend) SealKeys(_ context.Context) ([]string, error) {
	if err := b.record("SealKeys", "", nil); err != nil {
		return nil, err
	}
	return []string{"/etc/plugvault/keys/" + b.EnrollUUID() + ".key"}, nil
}

// Forget implements daemon.Enroller.
func (b *FakeBackend) Forget(_ context.Context, uuid string, removeKeyslot bool) error {
	return b.record("Forget", uuid, nil, removeKeyslot)
}

// EnrollUUID returns the LUKS UUID that Enroll and Adopt report.
func (b *FakeBackend) EnrollUUID() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.uuid
}
