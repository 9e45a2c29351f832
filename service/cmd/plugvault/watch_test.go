package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/apitest"
)

func TestStatusWatchFollowsChangesAndRestarts(t *testing.T) {
	e := newEnv(t)
	blue := e.fake.AddDrive(t, blueStatus)
	w := e.startWatch("status", "--watch")
	out := w.out
	out.waitFor(t, "blue: present\n", 1)

	st := blueStatus
	st.State, st.Progress, st.FilesDone, st.FilesTotal, st.BytesDone, st.BytesTotal, st.Rate, st.EtaSeconds =
		api.StateBackingUp, 0.25, 5, 20, 1<<20, 4<<20, 1<<20, 3
	e.fake.SetDrive(t, blue, st)
	out.waitFor(t, "blue: backing-up 25%, 5/20 files, 1.0 of 4.2 MB, 1.0 MB/s, less than a minute left\n", 1)

	// plugvaultd restarts: the watch says so, and reads the drives of the new instance.
	e.fake.Conn.Close()
	out.waitFor(t, "plugvaultd is not running; waiting for it to start\n", 1)
	fake2 := apitest.StartFakeService(t, e.bus)
	st.State = api.StateSafeToRemove
	fake2.AddDrive(t, st)
	out.waitFor(t, "plugvaultd is running\n", 2)
	out.waitFor(t, "blue: safe-to-remove\n", 1)

	w.stop(t) // Ctrl-C ends a watch normally
	if strings.Contains(out.String(), "\r") || strings.Contains(out.String(), "\033") {
		t.Errorf("terminal control sequences in non-terminal output: %q", out.String())
	}
}

func TestStatusWatchJSON(t *testing.T) {
	e := newEnv(t)
	blue := e.fake.AddDrive(t, blueStatus)
	green := e.fake.AddDrive(t, greenStatus)
	w := e.startWatch("status", "blue", "--watch", "--json")
	out := w.out
	out.waitFor(t, "\n", 2)
	// green is not followed: its change, which comes before blue's, prints nothing.
	gst := greenStatus
	gst.State, gst.Present = api.StatePresent, true
	e.fake.SetDrive(t, green, gst)
	st := blueStatus
	st.State, st.StateReason = api.StateAwaitingPassphrase, "the keyfile was rejected"
	e.fake.SetDrive(t, blue, st)
	out.waitFor(t, "\n", 3)
	w.stop(t)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var evs []watchEvent
	for _, l := range lines {
		var ev watchEvent
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		evs = append(evs, ev)
	}
	if len(evs) != 3 || evs[0].Event != "service-up" || evs[0].Drive != nil ||
		evs[1].Event != "drive-changed" || evs[1].Path != string(blue) || evs[1].Drive.State != "present" ||
		evs[2].Event != "drive-changed" || evs[2].Drive.State != "awaiting-passphrase" ||
		evs[2].Drive.StateReason != "the keyfile was rejected" || evs[2].Drive.Name != "blue" {
		t.Errorf("events: %s", out.String())
	}
}

func TestLinerOnTerminal(t *testing.T) {
	var out strings.Builder
	a := newApp(strings.NewReader(""), &out, &out)
	l := &liner{a: a, tty: true, lastKey: map[dbusPath]string{}}
	st := blueStatus
	d := drive{path: "/p", st: st}
	st.State, st.FilesDone, st.FilesTotal, st.Progress = api.StateBackingUp, 1, 4, 0.25
	d2 := drive{path: "/p", st: st}
	st.FilesDone, st.Progress = 2, 0.5
	d3 := drive{path: "/p", st: st}
	st.FilesDone, st.Progress, st.StateReason = 3, 0.75, "Backing up 3 of 4 files"
	d4 := drive{path: "/p", st: st}
	st.State, st.StateReason = api.StateSafeToRemove, "Safe to remove"
	d5 := drive{path: "/p", st: st}
	for _, x := range []drive{d, d2, d3, d4, d5} {
		l.drive(x)
	}
	l.end()
	want := "blue: present\n" +
		"blue: backing-up 25%, 1/4 files, 0 bytes\n" + // a new state is a line that stays
		"\r\033[Kblue: backing-up 50%, 2/4 files, 0 bytes" + // progress rewrites the live line
		"\r\033[Kblue: Backing up 3 of 4 files (75%, 3/4 files, 0 bytes)" + // so does a reason that moves with it
		"\r\033[Kblue: Safe to remove\n"
	if out.String() != want {
		t.Errorf("terminal output\n%q\nwant\n%q", out.String(), want)
	}
}

func TestBackupWait(t *testing.T) {
	for _, tc := range []struct {
		name   string
		final  api.DriveStatus
		code   int
		result string
	}{
		{"success", api.DriveStatus{State: api.StateSafeToRemove, LastResult: api.ResultSuccess}, 0, "success"},
		{"failed", api.DriveStatus{State: api.StateFailed, StateReason: "the drive is full", LastResult: api.ResultFailed}, exitFailed, "failed"},
		{"cancelled", api.DriveStatus{State: api.StateSafeToRemove, LastResult: api.ResultCancelled}, exitCancelled, "cancelled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			blue := e.fake.AddDrive(t, blueStatus)
			out := newSyncBuffer()
			var errb strings.Builder
			done := e.runAsync(t.Context(), strings.NewReader(""), out, &errb, "backup", "--wait", "--json")
			for c := range e.fake.CallCh() {
				if c.Method == api.MethodBackupNow {
					break
				}
			}
			st := blueStatus
			for _, s := range []api.State{api.StateUnlocking, api.StateMounting, api.StateBackingUp, api.StateLocking} {
				st.State = s
				e.fake.SetDrive(t, blue, st)
			}
			st.State, st.StateReason, st.LastResult = tc.final.State, tc.final.StateReason, tc.final.LastResult
			e.fake.SetDrive(t, blue, st)
			if code := waitCode(t, done); code != tc.code {
				t.Errorf("exit %d, want %d: %s", code, tc.code, errb.String())
			}
			var doc map[string]string
			if err := json.Unmarshal([]byte(out.String()), &doc); err != nil || doc["result"] != tc.result ||
				doc["state"] != string(tc.final.State) || doc["drive"] != string(blue) || doc["action"] != "backup" {
				t.Errorf("JSON %q (%v)", out.String(), err)
			}
			if tc.final.StateReason != "" && !strings.Contains(errb.String(), tc.final.StateReason) {
				t.Errorf("the reason is not reported: %s", errb.String())
			}
		})
	}
}

// A watch started while plugvaultd is not running waits for it and shows its drives.
func TestStatusWatchWaitsForTheService(t *testing.T) {
	e := newEnv(t)
	gone := e.bus.Conn(t)
	if err := gone.AddMatchSignal(dbus.WithMatchSender("org.freedesktop.DBus"), dbus.WithMatchMember("NameOwnerChanged"),
		dbus.WithMatchArg(0, api.BusName)); err != nil {
		t.Fatal(err)
	}
	released := make(chan *dbus.Signal, 4)
	gone.Signal(released)
	e.fake.Conn.Close()
	select {
	case <-released:
	case <-time.After(10 * time.Second): // only turns a hang into a failure
		t.Fatal("the fake service's name was not released")
	}

	w := e.startWatch("status", "--watch")
	out := w.out
	out.waitFor(t, "plugvaultd is not running; waiting for it to start\n", 1)
	fake := apitest.StartFakeService(t, e.bus)
	fake.AddDrive(t, blueStatus)
	out.waitFor(t, "blue: present\n", 1)
	w.stop(t)
	if !strings.Contains(out.String(), "plugvaultd is running\n") {
		t.Errorf("the start is not reported: %q", out.String())
	}
}

// watching is a CLI command that follows plugvaultd, running in the background.
type watching struct {
	out    *syncBuffer
	errb   *strings.Builder
	done   <-chan int
	cancel context.CancelFunc
}

// startWatch runs the CLI with args in the background until stop.
func (e *env) startWatch(args ...string) *watching {
	ctx, cancel := context.WithCancel(e.t.Context())
	e.t.Cleanup(cancel)
	w := &watching{out: newSyncBuffer(), errb: &strings.Builder{}, cancel: cancel}
	w.done = e.runAsync(ctx, strings.NewReader(""), w.out, w.errb, args...)
	return w
}

// stop ends the command as Ctrl-C does, which ends a watch normally.
func (w *watching) stop(t *testing.T) {
	t.Helper()
	w.cancel()
	if code := waitCode(t, w.done); code != 0 {
		t.Fatalf("exit %d: %s", code, w.errb.String())
	}
}
