package daemon_test

import (
	"testing"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/apitest"
	"github.com/plugvault/plugvault/service/internal/testbus"
)

// With the real polkitd (root level), the daemon's checks, details included, are accepted,
// and a root caller reaches the backend with every mutating method.
func TestRealPolkitdAuthorizesRoot(t *testing.T) {
	apitest.RequireRoot(t)
	apitest.RequireTool(t, "dbus-daemon")
	bus := apitest.StartBus(t, apitest.BusOptions{Policy: testbus.RealPolkitBusPolicy})
	testbus.StartPolkitd(t, bus, "../../../polkit/org.plugvault.policy")
	env := startEnv(t, testbus.EnvOptions{Bus: bus, RealPolkit: true})
	ctx := ctxT(t)
	for _, m := range mutatingMethods(t) {
		env.Backend.Reset()
		if err := m.call(ctx, env.Client, api.DrivePath(uuidOne), nil); err != nil {
			t.Errorf("%s: %v", m.method, err)
		}
		if calls := env.Backend.Calls(); len(calls) != 1 || calls[0].Method != m.method {
			t.Errorf("%s: backend calls %v", m.method, calls)
		}
		env.Daemon.RemoveDrive(env.Backend.EnrollUUID())
		if m.method == api.MethodForget {
			if err := env.Daemon.AddDrive(uuidOne, testbus.SampleDrive(uuidOne, "work")); err != nil {
				t.Fatal(err)
			}
		}
	}
}
