package packaging

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/apitest"
)

const (
	helperEnv = "PLUGVAULT_PACKAGING_BUS_HELPER" // the bus address for the helper
	nobodyUID = apitest.NobodyUID
)

// helperResult is what the unprivileged helper could do on the bus.
type helperResult struct {
	UID  int    `json:"uid"`
	Own  string `json:"own"`  // "ok" or the D-Bus error name
	Call string `json:"call"` // "ok" or the D-Bus error name
	Set  string `json:"set"`  // Properties.Set: the D-Bus error name ("ok" would be a hole)
}

// busHelper runs as uid 65534: it tries to own the name and to call ListDrives on it, and
// prints what happened as JSON.
func busHelper() int {
	res := helperResult{UID: os.Getuid()}
	conn, err := dbus.Connect(os.Getenv(helperEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, "cannot connect:", err)
		return 2
	}
	defer conn.Close()
	res.Own = dbusOutcome(func() error {
		reply, err := conn.RequestName(api.BusName, dbus.NameFlagDoNotQueue)
		if err == nil && reply != dbus.RequestNameReplyPrimaryOwner {
			return fmt.Errorf("reply %d", reply)
		}
		return err
	})
	res.Call = dbusOutcome(func() error {
		var paths []dbus.ObjectPath
		return conn.Object(api.BusName, api.ManagerPath).
			Call(api.ManagerInterface+"."+api.MethodListDrives, 0).Store(&paths)
	})
	res.Set = dbusOutcome(func() error {
		return conn.Object(api.BusName, api.ManagerPath).Call("org.freedesktop.DBus.Properties.Set", 0,
			api.ManagerInterface, api.PropReminderDays, dbus.MakeVariant(uint32(1))).Err
	})
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return 2
	}
	return 0
}

func dbusOutcome(f func() error) string {
	err := f()
	if err == nil {
		return "ok"
	}
	if de, ok := err.(dbus.Error); ok {
		return de.Name
	}
	if de, ok := err.(*dbus.Error); ok {
		return de.Name
	}
	return err.Error()
}

// fakeManager answers ListDrives like plugvaultd's Manager does with no drives.
type fakeManager struct{}

func (fakeManager) ListDrives() ([]dbus.ObjectPath, *dbus.Error) { return []dbus.ObjectPath{}, nil }

// TestBusPolicy starts a real dbus-daemon with the stock system-bus defaults and shows what
// our policy file adds: root may own org.plugvault.PlugVault1, uid 65534 may call it but
// not own it. The control runs prove each assertion depends on our file.
func TestBusPolicy(t *testing.T) {
	apitest.RequireRoot(t) // the helper runs as another uid
	apitest.RequireTool(t, "dbus-daemon")
	stock := apitest.StockSystemPolicy(t)
	ours, err := filepath.Abs(filepath.Join(repoRoot(t), "dbus-policy", api.BusName+".conf"))
	if err != nil {
		t.Fatal(err)
	}
	helper := apitest.UnprivilegedCopy(t)

	for _, tc := range []struct {
		name     string
		policy   string
		rootOwns bool
		nobody   helperResult
	}{{
		name:     "stock defaults and our policy",
		policy:   stock + "<include>" + ours + "</include>",
		rootOwns: true,
		// Set is refused by the bus itself: the fake service below has no Properties
		// interface, so a daemon-side refusal would read UnknownInterface, not AccessDenied.
		nobody: helperResult{UID: nobodyUID, Own: "org.freedesktop.DBus.Error.AccessDenied", Call: "ok", Set: "org.freedesktop.DBus.Error.AccessDenied"},
	}, {
		name:     "stock defaults only: root cannot own",
		policy:   stock,
		rootOwns: false,
		nobody:   helperResult{UID: nobodyUID, Own: "org.freedesktop.DBus.Error.AccessDenied", Call: "org.freedesktop.DBus.Error.ServiceUnknown", Set: "org.freedesktop.DBus.Error.ServiceUnknown"},
	}, {
		name:     "stock defaults and only the own rule: nobody cannot call",
		policy:   stock + `<policy user="root"><allow own="` + api.BusName + `"/></policy>`,
		rootOwns: true,
		nobody:   helperResult{UID: nobodyUID, Own: "org.freedesktop.DBus.Error.AccessDenied", Call: "org.freedesktop.DBus.Error.AccessDenied", Set: "org.freedesktop.DBus.Error.AccessDenied"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			bus := apitest.StartBus(t, apitest.BusOptions{Policy: tc.policy})
			// The socket lives in a root-only temporary directory; the helper must reach it.
			if err := os.Chmod(bus.Dir, 0o755); err != nil {
				t.Fatal(err)
			}
			root := bus.Conn(t)
			if err := root.Export(fakeManager{}, api.ManagerPath, api.ManagerInterface); err != nil {
				t.Fatal(err)
			}
			own := dbusOutcome(func() error {
				reply, err := root.RequestName(api.BusName, dbus.NameFlagDoNotQueue)
				if err == nil && reply != dbus.RequestNameReplyPrimaryOwner {
					return fmt.Errorf("reply %d", reply)
				}
				return err
			})
			if (own == "ok") != tc.rootOwns {
				t.Fatalf("root RequestName(%s) = %s, want owned=%v", api.BusName, own, tc.rootOwns)
			}
			got := runHelper(t, helper, bus.Address)
			if got != tc.nobody {
				t.Fatalf("uid %d on the bus: %+v, want %+v", nobodyUID, got, tc.nobody)
			}
		})
	}
}

func runHelper(t *testing.T, helper, addr string) helperResult {
	t.Helper()
	out := apitest.RunAsNobody(t, helper, helperEnv+"="+addr)
	var res helperResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("helper output %q: %v", out, err)
	}
	return res
}
