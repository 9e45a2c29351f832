package daemon_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/apitest"
	"github.com/plugvault/plugvault/service/internal/testbus"
)

type fdShape struct {
	name string
	send func(ctx context.Context, conn *dbus.Conn, dest string, fd dbus.UnixFD) error
}

// survivableShapes are messages carrying fds that godbus v5.2.4 can decode: wrong signature,
// unknown method, interface and object, fds in structs and variants, a unicast signal.
var survivableShapes = []fdShape{
	{"unknown method", func(ctx context.Context, conn *dbus.Conn, dest string, fd dbus.UnixFD) error {
		return conn.Object(dest, api.ManagerPath).CallWithContext(ctx, api.ManagerInterface+".Nope", 0, fd).Err
	}},
	{"wrong signature", func(ctx context.Context, conn *dbus.Conn, dest string, fd dbus.UnixFD) error {
		return conn.Object(dest, api.DrivePath(uuidOne)).CallWithContext(ctx, api.DriveInterface+"."+api.MethodBackupNow, 0, fd).Err
	}},
	{"unknown object", func(ctx context.Context, conn *dbus.Conn, dest string, fd dbus.UnixFD) error {
		return conn.Object(dest, "/no/such/object").CallWithContext(ctx, api.DriveInterface+"."+api.MethodCancel, 0, fd, fd).Err
	}},
	{"unknown interface, struct", func(ctx context.Context, conn *dbus.Conn, dest string, fd dbus.UnixFD) error {
		return conn.Object(dest, api.DrivePath(uuidOne)).CallWithContext(ctx, "org.example.Nope.Take", 0,
			struct {
				S string
				F dbus.UnixFD
			}{"a", fd}).Err
	}},
	{"right signature, fd in an option variant", func(ctx context.Context, conn *dbus.Conn, dest string, fd dbus.UnixFD) error {
		return conn.Object(dest, api.DrivePath(uuidOne)).CallWithContext(ctx, api.DriveInterface+"."+api.MethodEject, 0,
			map[string]dbus.Variant{"x": dbus.MakeVariant(fd)}).Err
	}},
	{"array of structs", func(ctx context.Context, conn *dbus.Conn, dest string, fd dbus.UnixFD) error {
		return conn.Object(dest, api.ManagerPath).CallWithContext(ctx, api.ManagerInterface+"."+api.MethodListDrives, 0,
			[]struct {
				S string
				F dbus.UnixFD
			}{{"a", fd}, {"b", fd}}).Err
	}},
	{"unicast signal", func(ctx context.Context, conn *dbus.Conn, dest string, fd dbus.UnixFD) error {
		msg := &dbus.Message{Type: dbus.TypeSignal, Headers: map[dbus.HeaderField]dbus.Variant{
			dbus.FieldPath:        dbus.MakeVariant(dbus.ObjectPath("/x")),
			dbus.FieldInterface:   dbus.MakeVariant("org.example.Sig"),
			dbus.FieldMember:      dbus.MakeVariant("Fd"),
			dbus.FieldDestination: dbus.MakeVariant(dest),
			dbus.FieldSignature:   dbus.MakeVariant(dbus.SignatureOf(fd)),
		}, Body: []any{fd}}
		return (<-conn.SendWithContext(ctx, msg, make(chan *dbus.Call, 1)).Done).Err
	}},
}

// fdArrayShape is a message that kills a godbus v5.2.4 process that negotiated fd passing.
var fdArrayShape = fdShape{"array of fds", func(ctx context.Context, conn *dbus.Conn, dest string, fd dbus.UnixFD) error {
	return conn.Object(dest, api.ManagerPath).CallWithContext(ctx, api.ManagerInterface+"."+api.MethodListDrives, 0, []dbus.UnixFD{fd, fd}).Err
}}

// sendFDs sends n messages of the given shapes, each carrying fds, and waits until dest has
// read them all. It returns the errors the calls got.
func sendFDs(t *testing.T, ctx context.Context, conn *dbus.Conn, dest string, shapes []fdShape, n int) []error {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	var errs []error
	for i := 0; i < n; i++ {
		errs = append(errs, shapes[i%len(shapes)].send(ctx, conn, dest, dbus.UnixFD(r.Fd())))
	}
	// dest reads its messages in order: once it answered this, it has seen every one above.
	if err := conn.Object(dest, "/").CallWithContext(ctx, "org.freedesktop.DBus.Peer.Ping", 0).Err; err != nil {
		t.Fatal(err)
	}
	return errs
}

// With fd passing negotiated, 100 messages carrying fds leave the daemon process's fd count
// flat thanks to CloseUnixFDs. The same messages to a connection without the guard leak,
// which proves the count sees a leak.
func TestIncomingFDsAreClosed(t *testing.T) {
	env := startEnv(t, testbus.EnvOptions{FDPassing: true})
	ctx := ctxT(t)
	env.Polkit.SetOutcome(t, testbus.Deny)

	unguarded := env.Bus.Conn(t)
	before := apitest.OpenFDs(t)
	sendFDs(t, ctx, env.ClientBus, unguarded.Names()[0], survivableShapes, 20)
	if leaked := apitest.OpenFDs(t) - before; leaked < 20 {
		t.Fatalf("control: an unguarded connection leaked %d fds for 20 messages, expected at least 20", leaked)
	}

	before = apitest.OpenFDs(t)
	sendFDs(t, ctx, env.ClientBus, env.Conn.Names()[0], survivableShapes, 100)
	if after := apitest.OpenFDs(t); after != before {
		t.Errorf("the daemon has %d open fds after 100 messages carrying fds, %d before", after, before)
	}
	if calls := env.Backend.Calls(); len(calls) != 0 {
		t.Errorf("backend got %v", calls)
	}
	if _, err := env.Client.ListDrives(ctx); err != nil {
		t.Error(err)
	}
}

// plugvaultd's own connection (ConnectBus) does not negotiate fd passing: the bus refuses
// every message with fds for it, including the arrays of fds that crash godbus, and the
// daemon never sees them.
func TestConnectBusRefusesFDs(t *testing.T) {
	env := startEnv(t, testbus.EnvOptions{})
	ctx := ctxT(t)
	if env.Conn.SupportsUnixFDs() {
		t.Fatal("the daemon's connection negotiated fd passing")
	}
	before := apitest.OpenFDs(t)
	shapes := append(append([]fdShape(nil), survivableShapes...), fdArrayShape)
	errs := sendFDs(t, ctx, env.ClientBus, env.Conn.Names()[0], shapes, 2*len(shapes))
	for i, err := range errs {
		if shapes[i%len(shapes)].name == "unicast signal" {
			continue // the bus drops it; there is no reply
		}
		var derr dbus.Error
		if !errors.As(err, &derr) || !strings.HasPrefix(derr.Name, "org.freedesktop.DBus.Error.") || derr.Name == "org.freedesktop.DBus.Error.UnknownMethod" {
			t.Errorf("%s: %v, want the bus to refuse the message", shapes[i%len(shapes)].name, err)
		}
	}
	if after := apitest.OpenFDs(t); after != before {
		t.Errorf("%d open fds after, %d before", after, before)
	}
	if calls := env.Backend.Calls(); len(calls) != 0 {
		t.Errorf("backend got %v", calls)
	}
	if _, err := env.Client.ListDrives(ctx); err != nil {
		t.Errorf("the daemon no longer answers: %v", err)
	}
}

// Pins the godbus v5.2.4 bug that ConnectBus works around: a process whose connection
// negotiated fd passing dies when a message with an array of fds arrives. If this test fails,
// godbus was fixed (see ConnectBus).
func TestGodbusDiesOnFDArrays(t *testing.T) {
	if addr := os.Getenv("PLUGVAULT_FDARRAY_VICTIM"); addr != "" {
		conn, err := dbus.Connect(addr, dbus.WithIncomingInterceptor(func(*dbus.Message) {}))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.RequestName("org.example.Victim", 0); err != nil {
			t.Fatal(err)
		}
		select {} // until killed
	}
	apitest.RequireTool(t, "dbus-daemon")
	bus := apitest.StartBus(t, apitest.BusOptions{})
	ctx := ctxT(t)
	conn := bus.Conn(t)
	if err := conn.AddMatchSignalContext(ctx, dbus.WithMatchSender("org.freedesktop.DBus"), dbus.WithMatchMember("NameOwnerChanged"), dbus.WithMatchArg(0, "org.example.Victim")); err != nil {
		t.Fatal(err)
	}
	sigs := make(chan *dbus.Signal, 8)
	conn.Signal(sigs)
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestGodbusDiesOnFDArrays$")
	cmd.Env = append(os.Environ(), "PLUGVAULT_FDARRAY_VICTIM="+bus.Address)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	for sig := range sigs {
		if len(sig.Body) == 3 && sig.Body[2] != "" {
			break // the victim owns its name
		}
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	_ = fdArrayShape.send(ctx, conn, "org.example.Victim", dbus.UnixFD(r.Fd()))
	err = cmd.Wait()
	if err == nil || !strings.Contains(stderr.String(), "not assignable to type dbus.UnixFDIndex") {
		t.Errorf("the victim did not die of the godbus panic: %v\n%s", err, stderr.String())
	}
}
