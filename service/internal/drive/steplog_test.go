package drive

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

// recorder keeps every log record as "msg k=v k=v".
type recorder struct{ lines []string }

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	var b strings.Builder
	b.WriteString(rec.Level.String() + " " + rec.Message)
	rec.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.Key + "=" + a.Value.String())
		return true
	})
	r.lines = append(r.lines, b.String())
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

type luksStub struct {
	LUKS
	openErr error
	opened  []byte
}

func (l *luksStub) Open(_ context.Context, _, _ string, key []byte, _ int, _ bool) error {
	l.opened = key
	return l.openErr
}

type engineStub struct{ Engine }

func (engineStub) Run(_ context.Context, _ Job, progress func(Progress)) (Result, error) {
	// Room is made before the copy; retention prunes after the run.
	for _, ph := range []string{"scanning", "scanning", "pruning", "scanning", "copying", "finishing", "pruning"} {
		progress(Progress{Phase: ph})
	}
	return Result{Snapshot: "s1"}, nil
}

// The step log brackets each step with begin and end at debug level, names the error of a
// failed step, passes calls and results through, and never logs the key.
func TestStepLog(t *testing.T) {
	rec := &recorder{}
	l := &luksStub{openErr: errors.New("cannot open: bad key")}
	var seen []string
	deps := withStepLog(Deps{Logger: slog.New(rec), LUKS: l, Engine: engineStub{}, Mounter: nil,
		PowerOff: func(context.Context, string) error { return nil }})
	key := []byte("secret-key-bytes")
	if err := deps.LUKS.Open(context.Background(), "/dev/sdb", "plugvault-u1", key, -1, false); err != l.openErr {
		t.Errorf("Open returned %v, want the wrapped error", err)
	}
	if string(l.opened) != string(key) {
		t.Errorf("the key did not reach the wrapped Open")
	}
	res, err := deps.Engine.Run(context.Background(), Job{Target: "/run/plugvault/u1"}, func(p Progress) { seen = append(seen, p.Phase) })
	if err != nil || res.Snapshot != "s1" || len(seen) != 7 {
		t.Errorf("Run: %+v %v, progress %v", res, err, seen)
	}
	if err := deps.PowerOff(context.Background(), "/devices/usb1"); err != nil {
		t.Error(err)
	}
	want := []string{
		"DEBUG step begins step=cryptsetup-open phase=begin device=/dev/sdb mapping=plugvault-u1 with=passphrase",
		"DEBUG step ends step=cryptsetup-open phase=end device=/dev/sdb mapping=plugvault-u1 with=passphrase err=cannot open: bad key",
		"DEBUG step begins step=engine phase=begin target=/run/plugvault/u1",
		"DEBUG step begins step=engine-scanning phase=begin target=/run/plugvault/u1",
		"DEBUG step begins step=prune phase=begin target=/run/plugvault/u1",
		"DEBUG step ends step=prune phase=end target=/run/plugvault/u1",
		"DEBUG step begins step=engine-scanning phase=begin target=/run/plugvault/u1",
		"DEBUG step begins step=engine-copying phase=begin target=/run/plugvault/u1",
		"DEBUG step begins step=engine-finishing phase=begin target=/run/plugvault/u1",
		"DEBUG step begins step=prune phase=begin target=/run/plugvault/u1",
		"DEBUG step ends step=prune phase=end target=/run/plugvault/u1",
		"DEBUG step ends step=engine phase=end target=/run/plugvault/u1",
		"DEBUG step begins step=power-off phase=begin devpath=/devices/usb1",
		"DEBUG step ends step=power-off phase=end devpath=/devices/usb1",
	}
	if got := strings.Join(rec.lines, "\n"); got != strings.Join(want, "\n") {
		t.Errorf("logged:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	if strings.Contains(strings.Join(rec.lines, ""), string(key)) {
		t.Errorf("the key reached the log")
	}
}
