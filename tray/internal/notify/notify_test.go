package notify

import (
	"context"
	"testing"

	"github.com/plugvault/plugvault/service/api/apitest"
	"github.com/plugvault/plugvault/tray/internal/traytest"
)

// TestNotifyReplacesPerTag: each tag keeps one notification on screen (replaces_id), urgent
// ones are critical, and the notification names the app.
func TestNotifyReplacesPerTag(t *testing.T) {
	apitest.RequireTool(t, "dbus-daemon")
	bus := apitest.StartBus(t, apitest.BusOptions{Type: "session"})
	server := traytest.StartNotifications(t, bus.Conn(t))
	n := New(bus.Conn(t), "plugvault")
	ctx := context.Background()
	for _, c := range []struct {
		tag, summary string
		urgent       bool
	}{{"a", "first", false}, {"b", "other drive", true}, {"a", "second", true}} {
		if err := n.Notify(ctx, c.tag, "plugvault-safe", c.summary, "body", c.urgent); err != nil {
			t.Fatal(err)
		}
	}
	got := server.All()
	if len(got) != 3 {
		t.Fatalf("%d notifications", len(got))
	}
	if got[0].ReplacesID != 0 || got[1].ReplacesID != 0 || got[2].ReplacesID != 1 {
		t.Errorf("replaces ids %d %d %d, want 0 0 1", got[0].ReplacesID, got[1].ReplacesID, got[2].ReplacesID)
	}
	if got[0].Hints["urgency"].Value() != byte(1) || got[1].Hints["urgency"].Value() != byte(2) {
		t.Errorf("urgency hints %v %v", got[0].Hints, got[1].Hints)
	}
	if got[2].AppName != "plugvault" || got[2].Summary != "second" || got[2].Icon != "plugvault-safe" {
		t.Errorf("%+v", got[2])
	}
}

func TestNotifyWithoutServer(t *testing.T) {
	apitest.RequireTool(t, "dbus-daemon")
	bus := apitest.StartBus(t, apitest.BusOptions{Type: "session"})
	if err := New(bus.Conn(t), "plugvault").Notify(context.Background(), "a", "", "s", "b", false); err == nil {
		t.Error("no error without a notification server")
	}
}
