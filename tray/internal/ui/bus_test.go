package ui

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/apitest"
	"github.com/plugvault/plugvault/tray/internal/model"
)

func nextEvent(t *testing.T, c *controller) model.Event {
	t.Helper()
	select {
	case ev := <-c.events:
		return ev
	case <-time.After(60 * time.Second): // only turns a hang into a failure
		t.Fatal("no event from the bus watcher")
	}
	return nil
}

// TestWatchServiceReconnects: the watcher reports the service's state, and when the bus
// connection itself drops (or cannot be made) it reports the service down and reconnects,
// after which it reads the state afresh. Calls go out with interactive authorization.
func TestWatchServiceReconnects(t *testing.T) {
	apitest.RequireTool(t, "dbus-daemon")
	bus := apitest.StartBus(t, apitest.BusOptions{})
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.Address)
	svc := apitest.StartFakeService(t, bus)
	st := api.DriveStatus{Name: "Blue stick", LuksUUID: "b1e5a7c0", State: api.StatePresent, Present: true}
	drive := svc.AddDrive(t, st)

	var mu sync.Mutex
	var clients []*api.Client
	attempts := 0
	c := &controller{log: slog.New(slog.NewTextHandler(io.Discard, nil)), events: make(chan model.Event, 64)}
	c.opts.Connect = func(ctx context.Context) (*api.Client, error) {
		mu.Lock()
		defer mu.Unlock()
		attempts++
		if attempts == 1 {
			return nil, errors.New("cannot connect to the system bus: no such file or directory")
		}
		cl, err := api.Connect(ctx)
		if err == nil {
			clients = append(clients, cl)
		}
		return cl, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.watchService(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	if _, ok := nextEvent(t, c).(model.ServiceDown); !ok {
		t.Fatal("a failed connection is not reported as the service down")
	}
	for round := 0; round < 2; round++ {
		up, ok := nextEvent(t, c).(model.ServiceUp)
		if !ok || len(up.Drives) != 1 || up.Drives[0].Path != drive || up.Drives[0].Status.Name != "Blue stick" || up.ReminderDays != 7 {
			t.Fatalf("round %d: %+v", round, up)
		}
		// A PropertiesChanged arrives as DriveChanged.
		st.State = api.StateSafeToRemove
		if round == 1 {
			st.State = api.StatePresent
		}
		svc.SetDrive(t, drive, st)
		if ch, ok := nextEvent(t, c).(model.DriveChanged); !ok || ch.Path != drive || ch.Status != st {
			t.Fatalf("round %d: %+v", round, ch)
		}
		// Calls allow interactive authorization.
		go c.call(ctx, model.Call{Drive: drive, Method: api.MethodEject})
		if done, ok := nextEvent(t, c).(model.CallDone); !ok || done.Err != nil || done.Method != api.MethodEject {
			t.Fatalf("call: %+v", done)
		}
		if calls := svc.Calls(); !calls[len(calls)-1].Interactive {
			t.Errorf("Eject without interactive authorization: %v", calls[len(calls)-1])
		}
		if round == 0 {
			mu.Lock()
			clients[len(clients)-1].Conn().Close() // the bus connection drops
			mu.Unlock()
			if _, ok := nextEvent(t, c).(model.ServiceDown); !ok {
				t.Fatal("a dropped connection is not reported as the service down")
			}
			// WatchDrives's own EventServiceDown and the watcher's may both arrive.
			for {
				ev := nextEvent(t, c)
				if up, ok := ev.(model.ServiceUp); ok {
					c.events <- up // hand it to the next round
					break
				}
				if _, ok := ev.(model.ServiceDown); !ok {
					t.Fatalf("unexpected %T while reconnecting", ev)
				}
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if attempts != 3 {
		t.Errorf("%d connection attempts, want 3 (fail, connect, reconnect)", attempts)
	}
}

// TestCallWithoutService: a click while the service is away ends in an error, not a hang.
func TestCallWithoutService(t *testing.T) {
	c := &controller{log: slog.New(slog.NewTextHandler(io.Discard, nil)), events: make(chan model.Event, 4)}
	c.call(context.Background(), model.Call{Drive: api.DrivePath("x"), Method: api.MethodBackupNow})
	if done, ok := (<-c.events).(model.CallDone); !ok || !errors.Is(done.Err, api.ErrFailed) {
		t.Errorf("%+v", done)
	}
	pass := []byte("secret")
	c.unlock(context.Background(), api.DrivePath("x"), pass, false)
	if done, ok := (<-c.events).(model.UnlockDone); !ok || done.Err == nil {
		t.Errorf("%+v", done)
	}
	for _, b := range pass {
		if b != 0 {
			t.Fatalf("passphrase not zeroed: %q", pass)
		}
	}
	pass = []byte("secret")
	c.unlock(context.Background(), api.DrivePath("x"), pass, true)
	if done, ok := (<-c.events).(model.PassCheckDone); !ok || !errors.Is(done.Err, api.ErrFailed) {
		t.Errorf("check: %+v", done)
	}
	if string(pass) != "\x00\x00\x00\x00\x00\x00" {
		t.Errorf("passphrase not zeroed after the check: %q", pass)
	}
}
