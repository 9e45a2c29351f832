package ui

import (
	"context"
	"testing"

	"github.com/plugvault/plugvault/service/api/apitest"
)

// TestAwaitSessionBus: a session bus that answers ends the wait at once; with none at the
// address the wait ends only with its context, and with an error.
func TestAwaitSessionBus(t *testing.T) {
	apitest.RequireTool(t, "dbus-daemon")
	bus := apitest.StartBus(t, apitest.BusOptions{Type: "session"})
	t.Setenv("DBUS_SESSION_BUS_ADDRESS", bus.Address)
	if err := AwaitSessionBus(context.Background()); err != nil {
		t.Errorf("with the bus there: %v", err)
	}

	t.Setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path="+bus.Dir+"/gone")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := AwaitSessionBus(ctx); err == nil {
		t.Error("without a bus and with the context ended: no error")
	}
}
