package apitest

import (
	"fmt"
	"strings"
	"testing"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
)

// The fake service is checked against the contract exactly as plugvaultd is
// (service/internal/daemon/contract_test.go): its methods, and the properties it publishes.
func TestFakeServiceMatchesContract(t *testing.T) {
	f := &FakeService{}
	CheckMethods(t, map[string]any{
		api.ManagerInterface: f.managerMethods(),
		api.DriveInterface:   f.driveMethods(api.DrivePath("x")),
	})
	RequireTool(t, "dbus-daemon")
	bus := StartBus(t, BusOptions{})
	fake := StartFakeService(t, bus)
	path := fake.AddDrive(t, api.DriveStatus{Name: "blue", LuksUUID: "2f8c6bd5-7a0e-4c7e-9a55-0c1d3e9f7b21", State: api.StateAbsent})
	CheckProperties(t, bus.Conn(t), api.BusName, map[string]dbus.ObjectPath{
		api.ManagerInterface: api.ManagerPath,
		api.DriveInterface:   path,
	})
}

// recorder is a testing.TB that collects what a check reports instead of failing.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// CheckMethods reports a missing method, a wrong signature, an extra method, an unserved
// interface and an interface the contract does not have.
func TestCheckMethodsFindsDrift(t *testing.T) {
	f := &FakeService{}
	drive := f.driveMethods(api.DrivePath("x"))
	mgr := f.managerMethods()
	delete(mgr, api.MethodListDrives)
	mgr[api.MethodForget] = func(dbus.ObjectPath) *dbus.Error { return nil }
	mgr["Extra"] = func() *dbus.Error { return nil }
	r := &recorder{TB: t}
	CheckMethods(r, map[string]any{api.ManagerInterface: mgr, "org.example.Unknown": drive})
	all := strings.Join(r.errs, "\n")
	for _, want := range []string{
		api.MethodListDrives + "(a{sv}) -> (ao)",
		api.MethodForget + "(o) -> ()",
		"Extra() -> ()",
		"org.example.Unknown is served but is not in the contract",
		"the contract has interface " + api.DriveInterface + ", which is not served",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("CheckMethods did not report %q; it said:\n%s", want, all)
		}
	}
	r = &recorder{TB: t}
	CheckMethods(r, map[string]any{api.ManagerInterface: f.managerMethods(), api.DriveInterface: drive})
	if len(r.errs) != 0 {
		t.Errorf("CheckMethods reported a matching service: %v", r.errs)
	}
}
