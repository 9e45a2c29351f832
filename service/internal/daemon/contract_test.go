package daemon_test

import (
	"encoding/xml"
	"os/exec"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/apitest"
	"github.com/plugvault/plugvault/service/internal/daemon"
	"github.com/plugvault/plugvault/service/internal/testbus"
)

// methodSigs describes methods as "Name(in sigs) -> (out sigs)", sorted.
func methodSigs(ms []introspect.Method) []string {
	var out []string
	for _, m := range ms {
		var in, res []string
		for _, a := range m.Args {
			if a.Direction == "out" {
				res = append(res, a.Type)
			} else {
				in = append(in, a.Type)
			}
		}
		out = append(out, m.Name+"("+strings.Join(in, ",")+") -> ("+strings.Join(res, ",")+")")
	}
	sort.Strings(out)
	return out
}

// The methods the exported Go objects serve (minus the Sender and Message parameters) are
// exactly the XML's methods with the same argument signatures, and every method in
// api.MethodActions exists; so XML, names.go and code cannot drift apart.
func TestServedMethodsMatchContract(t *testing.T) {
	var node introspect.Node
	if err := xml.Unmarshal([]byte(api.IntrospectXML), &node); err != nil {
		t.Fatal(err)
	}
	objects := map[string]any{api.ManagerInterface: &daemon.Manager{}, api.DriveInterface: &daemon.Drive{}, api.JobInterface: &daemon.Job{}}
	seen := 0
	for _, iface := range node.Interfaces {
		obj, ok := objects[iface.Name]
		if !ok {
			t.Errorf("the contract has interface %s that the daemon does not serve", iface.Name)
			continue
		}
		seen++
		want := methodSigs(iface.Methods)
		got := methodSigs(introspect.Methods(obj))
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: the Go object serves\n  %s\nthe contract says\n  %s", iface.Name, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
		// Every exported method of the object is a D-Bus method (nothing else leaks onto the bus).
		if n := reflect.TypeOf(obj).NumMethod(); n != len(iface.Methods) {
			t.Errorf("%s: the Go object has %d exported methods, the contract %d", iface.Name, n, len(iface.Methods))
		}
	}
	if seen != len(objects) {
		t.Errorf("the contract describes %d of the %d served interfaces", seen, len(objects))
	}
	for key := range api.MethodActions {
		i := strings.LastIndex(key, ".")
		iface, method := key[:i], key[i+1:]
		if _, ok := reflect.TypeOf(objects[iface]).MethodByName(method); !ok {
			t.Errorf("api.MethodActions names %s, which the daemon does not serve", key)
		}
	}
}

// Every published property has the type the XML gives it, and every XML property is published.
func TestPublishedPropertiesMatchContract(t *testing.T) {
	env := startEnv(t, testbus.EnvOptions{})
	ctx := ctxT(t)
	var node introspect.Node
	if err := xml.Unmarshal([]byte(api.IntrospectXML), &node); err != nil {
		t.Fatal(err)
	}
	hold := env.Backend.Hold("Verify")
	job, err := env.Client.StartVerify(ctx, api.DrivePath(uuidOne), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Release(nil)
	paths := map[string]dbus.ObjectPath{api.ManagerInterface: api.ManagerPath, api.DriveInterface: api.DrivePath(uuidOne), api.JobInterface: job}
	for _, iface := range node.Interfaces {
		var props map[string]dbus.Variant
		if err := env.ClientBus.Object(api.BusName, paths[iface.Name]).CallWithContext(ctx, "org.freedesktop.DBus.Properties.GetAll", 0, iface.Name).Store(&props); err != nil {
			t.Fatal(err)
		}
		if len(props) != len(iface.Properties) {
			t.Errorf("%s publishes %d properties, the contract has %d", iface.Name, len(props), len(iface.Properties))
		}
		for _, p := range iface.Properties {
			v, ok := props[p.Name]
			if !ok {
				t.Errorf("%s.%s is not published", iface.Name, p.Name)
			} else if v.Signature().String() != p.Type {
				t.Errorf("%s.%s has type %s, the contract says %s", iface.Name, p.Name, v.Signature(), p.Type)
			}
		}
	}
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
