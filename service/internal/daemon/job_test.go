package daemon_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/apitest"
	"github.com/plugvault/plugvault/service/internal/daemon"
	"github.com/plugvault/plugvault/service/internal/drive"
	"github.com/plugvault/plugvault/service/internal/testbus"
)

type jobRun struct {
	res api.JobResult
	err error
}

// runJob runs start through Client.RunJob on its own goroutine. It returns the job's path
// (once started), the job's property updates and the result.
func runJob(ctx context.Context, c *api.Client, start func(context.Context) (dbus.ObjectPath, error)) (<-chan dbus.ObjectPath, <-chan api.JobStatus, <-chan jobRun) {
	paths := make(chan dbus.ObjectPath, 1)
	updates := make(chan api.JobStatus, 16)
	done := make(chan jobRun, 1)
	go func() {
		res, err := c.RunJob(ctx, func(ctx context.Context) (dbus.ObjectPath, error) {
			p, err := start(ctx)
			paths <- p
			return p, err
		}, func(st api.JobStatus) { updates <- st })
		done <- jobRun{res, err}
	}()
	return paths, updates, done
}

// A restore is a job: it reports its properties and progress while the work runs, completes
// with the backend's answer, and stays readable for a while after Completed.
func TestRestoreJob(t *testing.T) {
	clock := apitest.NewClock(time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC))
	env := startEnv(t, testbus.EnvOptions{Options: daemon.Options{Now: clock.Now}})
	ctx := ctxT(t)
	drv := api.DrivePath(uuidOne)
	hold := env.Backend.Hold(api.MethodRestore)
	paths, updates, done := runJob(ctx, env.Client, func(ctx context.Context) (dbus.ObjectPath, error) {
		return env.Client.StartRestore(ctx, drv, "20261126T083100Z", "home/ann", "/home/ann/out", nil)
	})
	<-hold.Entered()
	job := <-paths
	if !strings.HasPrefix(string(job), api.JobsPathPrefix) {
		t.Fatalf("job path %q", job)
	}
	first := <-updates
	want := api.JobStatus{Operation: api.OperationRestore, Drive: drv, Progress: -1, StartedByUID: uint32(os.Getuid()), Cancelable: true}
	if first != want {
		t.Errorf("new job: %+v, want %+v", first, want)
	}

	clock.Advance(10 * time.Second)
	hold.Progress(50, 200)
	st := <-updates
	want.Progress, want.BytesDone, want.BytesTotal = 50.0/200, 50, 200
	want.Rate = 50.0 / 10
	want.ExpectedEndTime = uint64(clock.Now().Add(150 / 5 * time.Second).UnixMicro())
	if st != want {
		t.Errorf("after progress: %+v, want %+v", st, want)
	}

	hold.Release(nil)
	r := <-done
	if r.err != nil || !r.res.Success {
		t.Fatalf("restore job: %+v, %v", r.res, r.err)
	}
	calls := env.Backend.Calls()
	if len(calls) != 1 || calls[0].Method != api.MethodRestore {
		t.Fatalf("backend calls %+v", calls)
	}
	if req := calls[0].Args[0].(drive.RestoreRequest); req.Path != "home/ann" || req.Destination != "/home/ann/out" || req.Caller.UID != uint32(os.Getuid()) {
		t.Errorf("restore request %+v", req)
	}
	// A late reader still finds the job; it cannot be cancelled any more, and cancelling it
	// does nothing.
	late, err := env.Client.JobStatus(ctx, job)
	if err != nil {
		t.Fatalf("the job is gone right after Completed: %v", err)
	}
	if late.Cancelable || late.Progress != want.Progress {
		t.Errorf("completed job: %+v", late)
	}
	if err := env.Client.CancelJob(ctx, job, nil); err != nil {
		t.Errorf("cancelling a completed job: %v", err)
	}
}

// A verification's job shows the bytes the backend reports through the callback the daemon
// gave it, each report as it comes.
func TestVerifyJobProgress(t *testing.T) {
	clock := apitest.NewClock(time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC))
	env := startEnv(t, testbus.EnvOptions{Options: daemon.Options{Now: clock.Now}})
	ctx := ctxT(t)
	hold := env.Backend.Hold(api.MethodVerify)
	_, updates, done := runJob(ctx, env.Client, func(ctx context.Context) (dbus.ObjectPath, error) {
		return env.Client.StartVerify(ctx, api.DrivePath(uuidOne), "", nil)
	})
	<-hold.Entered()
	if first := <-updates; first.Progress != -1 || first.BytesDone != 0 || first.BytesTotal != 0 {
		t.Errorf("new job: %+v, want no progress yet", first)
	}
	for _, b := range [][2]uint64{{0, 4096}, {1024, 4096}, {4096, 4096}} {
		clock.Advance(time.Second)
		hold.Progress(b[0], b[1])
		st := <-updates
		if st.BytesDone != b[0] || st.BytesTotal != b[1] || st.Progress != float64(b[0])/float64(b[1]) {
			t.Errorf("after the backend reported %d of %d: %+v", b[0], b[1], st)
		}
	}
	hold.Release(nil)
	if r := <-done; r.err != nil || !r.res.Success {
		t.Fatalf("verify job: %+v, %v", r.res, r.err)
	}
}

// Verify returns what the backend found, through the job's Completed signal; a failure comes
// back as the error it was in the daemon.
func TestVerifyJob(t *testing.T) {
	env := startEnv(t, testbus.EnvOptions{})
	ctx := ctxT(t)
	checked, problems, err := env.Client.Verify(ctx, api.DrivePath(uuidOne), "", nil)
	if err != nil || checked != 42 || len(problems) != 0 {
		t.Errorf("verify: %d, %v, %v", checked, problems, err)
	}
	env.Backend.Fail(api.MethodVerify, &wrapped{"cannot verify: the drive is not plugged in", api.ErrNotPresent})
	_, _, err = env.Client.Verify(ctx, api.DrivePath(uuidOne), "", nil)
	if !errors.Is(err, api.ErrNotPresent) || err.Error() != "cannot verify: the drive is not plugged in" {
		t.Errorf("failed verify: %v", err)
	}
}

type wrapped struct {
	msg string
	err error
}

func (w *wrapped) Error() string { return w.msg }
func (w *wrapped) Unwrap() error { return w.err }

// Cancel stops the job: the work's context ends and Completed says Cancelled.
func TestCancelJob(t *testing.T) {
	env := startEnv(t, testbus.EnvOptions{})
	ctx := ctxT(t)
	hold := env.Backend.Hold(api.MethodRestore)
	paths, _, done := runJob(ctx, env.Client, func(ctx context.Context) (dbus.ObjectPath, error) {
		return env.Client.StartRestore(ctx, api.DrivePath(uuidOne), "20261126T083100Z", "", "/home/ann/out", nil)
	})
	<-hold.Entered()
	if err := env.Client.CancelJob(ctx, <-paths, nil); err != nil {
		t.Fatal(err)
	}
	if err := hold.Result(); !errors.Is(err, context.Canceled) {
		t.Errorf("the work ended with %v, want its context cancelled", err)
	}
	r := <-done
	if !errors.Is(r.err, api.ErrCancelled) || r.res.Success || r.res.Message != "cannot restore: cancelled" {
		t.Errorf("cancelled job: %+v, %v", r.res, r.err)
	}
}

// When the waiting client's context ends, Client.Verify cancels the job.
func TestClientContextCancelsJob(t *testing.T) {
	env := startEnv(t, testbus.EnvOptions{})
	hold := env.Backend.Hold(api.MethodVerify)
	ctx, cancel := context.WithCancel(ctxT(t))
	errc := make(chan error, 1)
	go func() {
		_, _, err := env.Client.Verify(ctx, api.DrivePath(uuidOne), "", nil)
		errc <- err
	}()
	<-hold.Entered()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("Verify returned %v, want context.Canceled", err)
	}
	if err := hold.Result(); !errors.Is(err, context.Canceled) {
		t.Errorf("the work ended with %v, want its context cancelled", err)
	}
}

// completed watches for Completed signals on conn.
func completed(t *testing.T, conn *dbus.Conn) <-chan *dbus.Signal {
	t.Helper()
	if err := conn.AddMatchSignal(dbus.WithMatchInterface(api.JobInterface), dbus.WithMatchMember(api.SignalCompleted)); err != nil {
		t.Fatal(err)
	}
	sigs := make(chan *dbus.Signal, 16)
	conn.Signal(sigs)
	t.Cleanup(func() { conn.RemoveSignal(sigs) })
	return sigs
}

func waitCompleted(t *testing.T, sigs <-chan *dbus.Signal, job dbus.ObjectPath) api.JobResult {
	t.Helper()
	for s := range sigs {
		if s.Path != job || s.Name != api.JobInterface+"."+api.SignalCompleted {
			continue
		}
		var r api.JobResult
		if err := dbus.Store(s.Body, &r.Success, &r.Message, &r.Error, &r.Checked, &r.Problems); err != nil {
			t.Fatal(err)
		}
		return r
	}
	t.Fatal("no Completed signal")
	return api.JobResult{}
}

// A job ends when the connection that started it leaves the bus (Ctrl-C on the CLI).
func TestJobEndsWhenCallerLeaves(t *testing.T) {
	env := startEnv(t, testbus.EnvOptions{})
	ctx := ctxT(t)
	sigs := completed(t, env.ClientBus)
	conn := env.Bus.Conn(t)
	hold := env.Backend.Hold(api.MethodVerify)
	job, err := api.NewClient(conn).StartVerify(ctx, api.DrivePath(uuidOne), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	<-hold.Entered()
	conn.Close()
	if err := hold.Result(); !errors.Is(err, context.Canceled) {
		t.Errorf("the work ended with %v, want its context cancelled", err)
	}
	r := waitCompleted(t, sigs, job)
	if r.Success || r.Error != api.ErrorName(api.ErrCancelled) || !strings.Contains(r.Message, "left the bus") {
		t.Errorf("Completed %+v", r)
	}
}

func TestMayCancel(t *testing.T) {
	for _, c := range []struct {
		uid, owner uint32
		want       bool
	}{{1000, 1000, true}, {0, 1000, true}, {1001, 1000, false}, {1000, 0, false}, {0, 0, true}} {
		if got := daemon.MayCancel(c.uid, c.owner); got != c.want {
			t.Errorf("uid %d cancels a job of uid %d: %v, want %v", c.uid, c.owner, got, c.want)
		}
	}
}

func TestProgressStatus(t *testing.T) {
	t0 := time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)
	base := api.JobStatus{Operation: api.OperationVerify, Progress: -1, Cancelable: true}
	for _, c := range []struct {
		name        string
		elapsed     time.Duration
		done, total uint64
		progress    float64
		rate        float64
		end         time.Duration // since t0; 0 = unknown
	}{
		{"nothing yet", 0, 0, 0, -1, 0, 0},
		{"total unknown", 4 * time.Second, 100, 0, -1, 25, 0},
		{"half way", 4 * time.Second, 100, 200, 0.5, 25, 8 * time.Second},
		{"no time passed", 0, 100, 200, 0.5, 0, 0},
		{"done past the total", 2 * time.Second, 300, 200, 1, 100, 2 * time.Second},
	} {
		st := daemon.ProgressStatus(base, t0, t0.Add(c.elapsed), c.done, c.total)
		var end uint64
		if c.end != 0 {
			end = uint64(t0.Add(c.end).UnixMicro())
		}
		if st.Progress != c.progress || st.Rate != c.rate || st.ExpectedEndTime != end || st.Operation != base.Operation || !st.Cancelable {
			t.Errorf("%s: %+v, want progress %v, rate %v, end %d", c.name, st, c.progress, c.rate, end)
		}
	}
}

// logWatch is a slog handler that closes a channel when a message is logged.
type logWatch struct {
	msg  string
	once sync.Once
	seen chan struct{}
}

func (l *logWatch) Enabled(context.Context, slog.Level) bool { return true }
func (l *logWatch) Handle(_ context.Context, r slog.Record) error {
	if r.Message == l.msg {
		l.once.Do(func() { close(l.seen) })
	}
	return nil
}
func (l *logWatch) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logWatch) WithGroup(string) slog.Handler      { return l }

// Drain waits for a call in flight (an Enroll held in the backend) to finish, and refuses new
// calls meanwhile with a clear error.
func TestDrainWaitsForCallsInFlight(t *testing.T) {
	draining := &logWatch{msg: "waiting for the calls in progress", seen: make(chan struct{})}
	env := startEnv(t, testbus.EnvOptions{Logger: slog.New(draining)})
	ctx := ctxT(t)
	hold := env.Backend.Hold(api.MethodEnroll)
	enrolled := make(chan error, 1)
	dev := blockDevice(t)
	go func() {
		_, _, err := env.Client.Enroll(ctx, dev, []byte("pw"), nil)
		enrolled <- err
	}()
	<-hold.Entered()
	drained := make(chan error, 1)
	go func() { drained <- env.Daemon.Drain(ctx) }()
	<-draining.seen
	err := env.Client.BackupNow(ctx, api.DrivePath(uuidOne), nil)
	if !errors.Is(err, api.ErrFailed) || !strings.Contains(err.Error(), "plugvaultd is stopping") {
		t.Errorf("a call during Drain: %v, want Failed saying plugvaultd is stopping", err)
	}
	if _, err := env.Client.StartVerify(ctx, api.DrivePath(uuidOne), "", nil); !strings.Contains(fmtErr(err), "plugvaultd is stopping") {
		t.Errorf("a job started during Drain: %v", err)
	}
	select {
	case err := <-drained:
		t.Fatalf("Drain returned (%v) while an Enroll was in flight", err)
	default:
	}
	hold.Release(nil)
	if err := <-enrolled; err != nil {
		t.Errorf("the Enroll in flight failed: %v", err)
	}
	if err := <-drained; err != nil {
		t.Errorf("Drain: %v", err)
	}
	for _, c := range env.Backend.Calls() {
		if c.Method != api.MethodEnroll {
			t.Errorf("the backend got %s during Drain", c.Method)
		}
	}
}

func fmtErr(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// Drain cancels running jobs and waits until they have ended.
func TestDrainCancelsJobs(t *testing.T) {
	env := startEnv(t, testbus.EnvOptions{})
	ctx := ctxT(t)
	hold := env.Backend.Hold(api.MethodVerify)
	_, _, done := runJob(ctx, env.Client, func(ctx context.Context) (dbus.ObjectPath, error) {
		return env.Client.StartVerify(ctx, api.DrivePath(uuidOne), "", nil)
	})
	<-hold.Entered()
	if err := env.Daemon.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-hold.Returned():
	default:
		t.Error("Drain returned before the job's work")
	}
	r := <-done
	if !errors.Is(r.err, api.ErrCancelled) || !strings.Contains(r.res.Message, "plugvaultd is stopping") {
		t.Errorf("job during Drain: %+v, %v", r.res, r.err)
	}
}

// Drain gives up when its context ends first.
func TestDrainGivesUp(t *testing.T) {
	env := startEnv(t, testbus.EnvOptions{})
	ctx := ctxT(t)
	hold := env.Backend.Hold(api.MethodEnroll)
	defer hold.Release(nil)
	dev := blockDevice(t)
	go func() { _, _, _ = env.Client.Enroll(ctx, dev, []byte("pw"), nil) }()
	<-hold.Entered()
	expired, cancel := context.WithCancel(ctx)
	cancel()
	if err := env.Daemon.Drain(expired); !errors.Is(err, context.Canceled) {
		t.Errorf("Drain with an ended context: %v", err)
	}
}

// Only the user who started a job (or root) may cancel it: uid 65534 is refused, and the job
// runs on.
func TestCancelJobOfAnotherUser(t *testing.T) {
	apitest.Require(t, os.Geteuid() == 0, "needs root to run a client as another user")
	apitest.RequireTool(t, "dbus-daemon")
	bus := apitest.StartBus(t, apitest.BusOptions{Policy: apitest.StockSystemPolicy(t) +
		`<policy context="default"><allow send_destination="*"/><allow own="*"/></policy>`})
	if err := os.Chmod(bus.Dir, 0o755); err != nil { // the socket's directory, for uid 65534
		t.Fatal(err)
	}
	env := startEnv(t, testbus.EnvOptions{Bus: bus})
	ctx := ctxT(t)
	hold, job := heldVerifyJob(t, env)
	out := apitest.RunAsNobody(t, apitest.UnprivilegedCopy(t), cancelJobEnv+"="+bus.Address+";"+string(job))
	if got := string(out); got != api.ErrorName(api.ErrNotAuthorized) {
		t.Errorf("Cancel by uid %d: %q, want NotAuthorized", apitest.NobodyUID, got)
	}
	select {
	case <-hold.Returned():
		t.Error("the job ended after another user's Cancel")
	default:
	}
	st, err := env.Client.JobStatus(ctx, job)
	if err != nil || !st.Cancelable {
		t.Errorf("the job after another user's Cancel: %+v, %v", st, err)
	}
}

// Close cancels a running job and returns only once its work has returned.
func TestCloseEndsJobs(t *testing.T) {
	env := startEnv(t, testbus.EnvOptions{})
	ctx := ctxT(t)
	hold := env.Backend.Hold(api.MethodRestore)
	if _, err := env.Client.StartRestore(ctx, api.DrivePath(uuidOne), "20261126T083100Z", "", "/home/ann/out", nil); err != nil {
		t.Fatal(err)
	}
	<-hold.Entered()
	env.Daemon.Close()
	select {
	case <-hold.Returned():
	default:
		t.Fatal("Close returned while the job's work was running")
	}
	if err := hold.Result(); !errors.Is(err, context.Canceled) {
		t.Errorf("the work ended with %v, want its context cancelled", err)
	}
}

// busctl, a client that knows nothing of godbus, sees a running job's documented interface.
func TestBusctlIntrospectJob(t *testing.T) {
	busctl := apitest.RequireTool(t, "busctl")
	env := startEnv(t, testbus.EnvOptions{})
	_, job := heldVerifyJob(t, env)
	out, err := exec.Command(busctl, "--address="+env.Bus.Address, "introspect", api.BusName, string(job)).CombinedOutput()
	if err != nil {
		t.Fatalf("busctl introspect: %v\n%s", err, out)
	}
	for _, want := range [][]string{
		{api.JobInterface, "interface"},
		{"." + api.MethodCancel, "method", "a{sv}", "-"},
		{"." + api.PropOperation, "property", "s", `"verify"`},
		{"." + api.PropDrive, "property", "o", `"` + string(api.DrivePath(uuidOne)) + `"`},
		{"." + api.PropProgress, "property", "d", "-1"},
		{"." + api.PropCancelable, "property", "b", "true"},
		{"." + api.SignalCompleted, "signal", "bsstas"},
	} {
		found := false
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) >= len(want) && slices.Equal(f[:len(want)], want) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("busctl introspect shows no line starting %q:\n%s", strings.Join(want, " "), out)
		}
	}
}

// heldVerifyJob starts a Verify job of drive one whose work waits (released at the end of the
// test) and returns once the work has begun.
func heldVerifyJob(t *testing.T, env *testbus.Env) (*testbus.Held, dbus.ObjectPath) {
	t.Helper()
	hold := env.Backend.Hold(api.MethodVerify)
	t.Cleanup(func() { hold.Release(nil) })
	job, err := env.Client.StartVerify(ctxT(t), api.DrivePath(uuidOne), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	<-hold.Entered()
	return hold, job
}
