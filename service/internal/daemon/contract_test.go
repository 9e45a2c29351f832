package daemon_test

import (
	"os/exec"
	"reflect"
	"strings"
	"testing"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/apitest"
	"github.com/plugvault/plugvault/service/internal/daemon"
	"github.com/plugvault/plugvault/service/internal/testbus"
)

// The methods the exported Go objects serve are exactly the XML's methods with the same
// argument signatures (apitest.CheckMethods, which checks the fake service the same way), and
// every method in api.MethodActions exists; so XML, names.go and code cannot drift apart.
func TestServedMethodsMatchContract(t *testing.T) {
	objects := map[string]any{api.ManagerInterface: &daemon.Manager{}, api.DriveInterface: &daemon.Drive{}, api.JobInterface: &daemon.Job{}}
	apitest.CheckMethods(t, objects)
	for key := range api.MethodActions {
		i := strings.LastIndex(key, ".")
		iface, method := key[:i], key[i+1:]
		if obj, ok := objects[iface]; !ok {
			t.Errorf("api.MethodActions names %s, an interface the daemon does not serve", key)
		} else if _, ok := reflect.TypeOf(obj).MethodByName(method); !ok {
			t.Errorf("api.MethodActions names %s, which the daemon does not serve", key)
		}
	}
}

// Every published property has the type the XML gives it, and every XML property is published
// (apitest.CheckProperties, which checks the fake service the same way).
func TestPublishedPropertiesMatchContract(t *testing.T) {
	env := startEnv(t, testbus.EnvOptions{})
	_, job := heldVerifyJob(t, env)
	apitest.CheckProperties(t, env.ClientBus, api.BusName, map[string]dbus.ObjectPath{
		api.ManagerInterface: api.ManagerPath,
		api.DriveInterface:   api.DrivePath(uuidOne),
		api.JobInterface:     job,
	})
}

// busctl, a client that knows nothing of godbus, sees the documented interface.
func TestBusctlIntrospect(t *testing.T) {
	busctl := apitest.RequireTool(t, "busctl")
	env := startEnv(t, testbus.EnvOptions{Options: daemon.Options{ReminderDays: 7}})
	out, err := exec.Command(busctl, "--address="+env.Bus.Address, "introspect", api.BusName, string(api.ManagerPath)).CombinedOutput()
	if err != nil {
		t.Fatalf("busctl introspect: %v\n%s", err, out)
	}
	text := string(out)
	// Generic tools find every object from the root.
	tree, err := exec.Command(busctl, "--address="+env.Bus.Address, "--list", "tree", api.BusName).CombinedOutput()
	if err != nil {
		t.Fatalf("busctl tree: %v\n%s", err, tree)
	}
	for _, p := range []dbus.ObjectPath{api.ManagerPath, api.DrivePath(uuidOne), api.DrivePath(uuidTwo)} {
		if !strings.Contains(string(tree), string(p)+"\n") {
			t.Errorf("busctl tree does not list %s:\n%s", p, tree)
		}
	}
	for _, want := range [][]string{
		{api.ManagerInterface, "interface"},
		{"." + api.MethodListDrives, "method", "a{sv}", "ao"},
		{"." + api.MethodEnroll, "method", "saya{sv}", "os"},
		{"." + api.MethodAdopt, "method", "saya{sv}", "o"},
		{"." + api.MethodForget, "method", "oa{sv}", "-"},
		{"." + api.MethodSealKeys, "method", "a{sv}", "as"},
		{"." + api.PropVersion, "property", "s", `"0.1.0-test"`},
		{"." + api.PropReminderDays, "property", "u", "7"},
		{"." + api.PropDrives, "property", "ao", "2"},
		{"." + api.SignalDriveAdded, "signal", "o"},
		{"." + api.SignalDriveRemoved, "signal", "o"},
	} {
		found := false
		for _, line := range strings.Split(text, "\n") {
			f := strings.Fields(line)
			if len(f) >= len(want) && reflect.DeepEqual(f[:len(want)], want) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("busctl introspect shows no line starting %q:\n%s", strings.Join(want, " "), text)
		}
	}
}
