package polkit_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/apitest"
	"github.com/plugvault/plugvault/service/internal/polkit"
	"github.com/plugvault/plugvault/service/internal/testbus"
)

// Against the real polkitd (root level): the request is well formed, root is authorized, a
// non-root subject without an active session gets a challenge (auth_admin), and an unknown
// action is denied.
func TestRealPolkitd(t *testing.T) {
	apitest.RequireRoot(t)
	apitest.RequireTool(t, "dbus-daemon")
	bus := apitest.StartBus(t, apitest.BusOptions{Policy: testbus.RealPolkitBusPolicy})
	testbus.StartPolkitd(t, bus, "../../../polkit/org.plugvault.policy")
	conn := bus.Conn(t)
	auth := polkit.New(conn, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	details := map[string]string{"drive.name": "work", "polkit.message": "Authentication is required to back up to the drive work"}

	// This test runs as root, and so does its connection.
	if err := auth.Check(ctx, conn.Names()[0], api.ActionBackup, details, false); err != nil {
		t.Errorf("root caller: %v, want authorized", err)
	}
	// polkitd's own connection runs as the polkitd user, in no session.
	var polkitdName string
	if err := conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.GetNameOwner", 0, polkit.BusName).Store(&polkitdName); err != nil {
		t.Fatal(err)
	}
	for _, action := range []string{api.ActionBackup, api.ActionEnroll} {
		if err := auth.Check(ctx, polkitdName, action, details, false); !errors.Is(err, api.ErrNotAuthorizedCanObtain) {
			t.Errorf("non-root caller, %s: %v, want NotAuthorizedCanObtain", action, err)
		}
	}
	if err := auth.Check(ctx, conn.Names()[0], "org.plugvault.no-such-action", nil, false); !errors.Is(err, api.ErrNotAuthorized) {
		t.Errorf("unknown action: %v, want NotAuthorized", err)
	}
	if err := auth.Check(ctx, ":1.9999", api.ActionBackup, nil, false); !errors.Is(err, api.ErrNotAuthorized) {
		t.Errorf("vanished caller: %v, want NotAuthorized", err)
	}
}
