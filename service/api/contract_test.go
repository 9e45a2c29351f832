package api

import (
	"encoding/xml"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"
)

func parseContract(t *testing.T) introspect.Node {
	t.Helper()
	var node introspect.Node
	if err := xml.Unmarshal([]byte(IntrospectXML), &node); err != nil {
		t.Fatalf("cannot parse the contract XML: %v", err)
	}
	return node
}

func contractInterface(t *testing.T, node introspect.Node, name string) introspect.Interface {
	t.Helper()
	for _, iface := range node.Interfaces {
		if iface.Name == name {
			return iface
		}
	}
	t.Fatalf("the contract has no interface %s", name)
	return introspect.Interface{}
}

// goConstants returns the string constants of names.go whose identifiers start with prefix.
func goConstants(t *testing.T, prefix string) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "names.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok {
			return true
		}
		for i, id := range vs.Names {
			if !strings.HasPrefix(id.Name, prefix) || i >= len(vs.Values) {
				continue
			}
			if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
				s, _ := strconv.Unquote(lit.Value)
				out[id.Name] = s
			}
		}
		return true
	})
	return out
}

func sortedValues(m map[string]string) []string {
	var vs []string
	for _, v := range m {
		vs = append(vs, v)
	}
	sort.Strings(vs)
	return vs
}

func uniqueSorted(vs []string) []string {
	sort.Strings(vs)
	var out []string
	for i, v := range vs {
		if i == 0 || v != vs[i-1] {
			out = append(out, v)
		}
	}
	return out
}

func TestContractNamesMatchGo(t *testing.T) {
	node := parseContract(t)
	if len(node.Interfaces) != 3 {
		t.Fatalf("contract has %d interfaces, want Manager, Drive and Job", len(node.Interfaces))
	}
	mgr := contractInterface(t, node, ManagerInterface)
	drv := contractInterface(t, node, DriveInterface)
	job := contractInterface(t, node, JobInterface)

	// A member name shared by two interfaces (Cancel, Progress, …) has one Go constant.
	var xmlMethods, xmlProps, xmlSignals []string
	for _, iface := range []introspect.Interface{mgr, drv, job} {
		for _, m := range iface.Methods {
			xmlMethods = append(xmlMethods, m.Name)
			if len(m.Args) == 0 || m.Args[len(m.Args)-1].Direction == "out" && len(m.Args) < 2 {
				t.Errorf("%s.%s: every method takes options", iface.Name, m.Name)
			}
			var lastIn *introspect.Arg
			for i := range m.Args {
				if m.Args[i].Direction == "in" {
					lastIn = &m.Args[i]
				}
				if m.Args[i].Name == "" {
					t.Errorf("%s.%s: argument %d has no name", iface.Name, m.Name, i)
				}
			}
			if lastIn == nil || lastIn.Name != "options" || lastIn.Type != "a{sv}" {
				t.Errorf("%s.%s: the last input must be a{sv} options", iface.Name, m.Name)
			}
		}
		for _, p := range iface.Properties {
			xmlProps = append(xmlProps, p.Name)
			if p.Access != "read" {
				t.Errorf("%s.%s: every property must be read-only, got access=%q", iface.Name, p.Name, p.Access)
			}
		}
		for _, s := range iface.Signals {
			xmlSignals = append(xmlSignals, s.Name)
		}
	}
	xmlMethods, xmlProps, xmlSignals = uniqueSorted(xmlMethods), uniqueSorted(xmlProps), uniqueSorted(xmlSignals)
	for _, c := range []struct {
		kind   string
		prefix string
		xml    []string
	}{{"methods", "Method", xmlMethods}, {"properties", "Prop", xmlProps}, {"signals", "Signal", xmlSignals}} {
		if got := uniqueSorted(sortedValues(goConstants(t, c.prefix))); !reflect.DeepEqual(got, c.xml) {
			t.Errorf("%s differ:\n names.go: %v\n XML:      %v", c.kind, got, c.xml)
		}
	}
}

// TestDriveStatusMatchesContract checks that DriveStatus has exactly the Drive properties, with
// the D-Bus types the XML declares, so Props and Apply round-trip through the wire.
func TestDriveStatusMatchesContract(t *testing.T) {
	drv := contractInterface(t, parseContract(t), DriveInterface)
	props := DriveStatus{}.Props()
	if len(props) != len(drv.Properties) {
		t.Errorf("DriveStatus has %d fields, the Drive interface %d properties", len(props), len(drv.Properties))
	}
	for _, p := range drv.Properties {
		v, ok := props[p.Name]
		if !ok {
			t.Errorf("DriveStatus lacks %s", p.Name)
			continue
		}
		if sig := dbus.SignatureOf(v).String(); sig != p.Type {
			t.Errorf("%s: Go type has signature %s, XML says %s", p.Name, sig, p.Type)
		}
	}
	var snaps []Snapshot
	m := findMethod(t, drv, MethodListSnapshots)
	if sig := dbus.SignatureOf(snaps).String(); sig != m.Args[len(m.Args)-1].Type {
		t.Errorf("Snapshot has signature %s, ListSnapshots returns %s", sig, m.Args[len(m.Args)-1].Type)
	}
}

// TestJobStatusMatchesContract checks that JobStatus has exactly the Job properties with the
// XML's types, that Props and Apply round-trip, and that JobResult.Body is Completed's signature.
func TestJobStatusMatchesContract(t *testing.T) {
	job := contractInterface(t, parseContract(t), JobInterface)
	in := JobStatus{Operation: OperationVerify, Drive: DrivePath("u"), Progress: 0.25, BytesDone: 1, BytesTotal: 4,
		Rate: 2, ExpectedEndTime: 1700000000000000, StartedByUID: 1000, Cancelable: true}
	props := in.Props()
	if len(props) != len(job.Properties) {
		t.Errorf("JobStatus has %d properties, the Job interface %d", len(props), len(job.Properties))
	}
	vars := map[string]dbus.Variant{}
	for _, p := range job.Properties {
		v, ok := props[p.Name]
		if !ok {
			t.Errorf("JobStatus lacks %s", p.Name)
			continue
		}
		if sig := dbus.SignatureOf(v).String(); sig != p.Type {
			t.Errorf("%s: Go type has signature %s, XML says %s", p.Name, sig, p.Type)
		}
		vars[p.Name] = dbus.MakeVariant(v)
	}
	var out JobStatus
	if err := out.Apply(vars); err != nil {
		t.Fatal(err)
	}
	if out != in {
		t.Errorf("round trip: got %+v, want %+v", out, in)
	}
	if err := out.Apply(map[string]dbus.Variant{PropBytesDone: dbus.MakeVariant("many")}); err == nil {
		t.Error("a property of the wrong type must be an error")
	}
	if len(job.Signals) != 1 || job.Signals[0].Name != SignalCompleted {
		t.Fatalf("the Job interface has signals %v, want Completed", job.Signals)
	}
	var sig string
	for _, a := range job.Signals[0].Args {
		sig += a.Type
	}
	res := JobResult{Message: "cannot verify: no such snapshot", Error: ErrorPrefix + "NotFound", Checked: 3}
	if got := dbus.SignatureOf(res.Body()...).String(); got != sig {
		t.Errorf("JobResult.Body has signature %s, Completed %s", got, sig)
	}
	back, err := parseCompleted(res.Body())
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(back.Err(), ErrNotFound) || back.Err().Error() != res.Message || back.Checked != 3 {
		t.Errorf("Completed round trip: %+v, error %v", back, back.Err())
	}
	if (JobResult{Success: true}).Err() != nil {
		t.Error("a successful job must have no error")
	}
}

func findMethod(t *testing.T, iface introspect.Interface, name string) introspect.Method {
	t.Helper()
	for _, m := range iface.Methods {
		if m.Name == name {
			return m
		}
	}
	t.Fatalf("%s has no method %s", iface.Name, name)
	return introspect.Method{}
}

// TestEveryMutatingMethodHasAnAction: the methods without a polkit action are exactly the two
// read-only listings and Job.Cancel (which compares the caller's uid with the job's), and every
// action is declared in the polkit policy.
func TestEveryMutatingMethodHasAnAction(t *testing.T) {
	node := parseContract(t)
	var unauthorized []string
	for _, iface := range node.Interfaces {
		for _, m := range iface.Methods {
			if _, ok := MethodActions[iface.Name+"."+m.Name]; !ok {
				unauthorized = append(unauthorized, iface.Name+"."+m.Name)
			}
		}
	}
	sort.Strings(unauthorized)
	want := []string{DriveInterface + "." + MethodListSnapshots, JobInterface + "." + MethodCancel, ManagerInterface + "." + MethodListDrives}
	sort.Strings(want)
	if !reflect.DeepEqual(unauthorized, want) {
		t.Errorf("methods without authorization: %v, want %v", unauthorized, want)
	}
	for _, iface := range node.Interfaces {
		for _, m := range iface.Methods {
			action, ok := MethodActions[iface.Name+"."+m.Name]
			if ok && !strings.Contains(IntrospectXML, action) {
				t.Errorf("%s.%s: the XML does not document its polkit action %s", iface.Name, m.Name, action)
			}
		}
	}
	policy, err := os.ReadFile("../../polkit/org.plugvault.policy")
	if err != nil {
		t.Fatal(err)
	}
	for name, id := range goConstants(t, "Action") {
		if !strings.Contains(string(policy), `<action id="`+id+`">`) {
			t.Errorf("%s (%s) is not declared in polkit/org.plugvault.policy", name, id)
		}
	}
}

func TestErrorsAreDocumented(t *testing.T) {
	for _, name := range ErrorNames() {
		short := strings.TrimPrefix(name, ErrorPrefix)
		if !strings.Contains(IntrospectXML, "\n    "+short+" ") {
			t.Errorf("error %s is not documented in the XML header", name)
		}
	}
}

func TestErrorRoundTrip(t *testing.T) {
	for _, e := range errorTable {
		wrapped := &wrapErr{msg: "cannot do it: " + e.err.Error(), err: e.err}
		derr := ToDBusError(wrapped)
		if derr.Name != e.name {
			t.Errorf("%v -> %s, want %s", e.err, derr.Name, e.name)
		}
		back := FromDBusError(*derr)
		if !errors.Is(back, e.err) {
			t.Errorf("%s did not come back as %v: %v", e.name, e.err, back)
		}
		if back.Error() != wrapped.Error() {
			t.Errorf("message %q came back as %q", wrapped.Error(), back.Error())
		}
	}
	if got := ToDBusError(errPlain("disk on fire")).Name; got != ErrorPrefix+"Failed" {
		t.Errorf("an error outside the table maps to %s, want Failed", got)
	}
	foreign := FromDBusError(dbus.Error{Name: "org.freedesktop.DBus.Error.ServiceUnknown", Body: []any{"no such service"}})
	var derr dbus.Error
	if !errors.Is(foreign, ErrFailed) || !errors.As(foreign, &derr) || derr.Name != "org.freedesktop.DBus.Error.ServiceUnknown" {
		t.Errorf("a foreign D-Bus error must unwrap to ErrFailed and to the dbus.Error: %#v", foreign)
	}
	if ToDBusError(nil) != nil {
		t.Error("ToDBusError(nil) must be nil")
	}
}

func TestDrivePath(t *testing.T) {
	for in, want := range map[string]dbus.ObjectPath{
		"2f1c0a7e-3b1d-4c55-9f00-0123456789ab": "/org/plugvault/PlugVault1/drives/2f1c0a7e_3b1d_4c55_9f00_0123456789ab",
		"../x":                                 "/org/plugvault/PlugVault1/drives/___x",
	} {
		if got := DrivePath(in); got != want || !got.IsValid() {
			t.Errorf("DrivePath(%q) = %q (valid %v), want %q", in, got, got.IsValid(), want)
		}
	}
}

func TestDriveStatusApplyRoundTrip(t *testing.T) {
	in := DriveStatus{Name: "blue", LuksUUID: "u", State: StateFailed, FailedIn: StateLocking, Progress: 0.5, FilesDone: 3,
		EtaSeconds: -1, LastBackup: 1700000000, LastResult: ResultSuccess, SnapshotCount: 7, Present: true}
	vars := map[string]dbus.Variant{}
	for k, v := range in.Props() {
		vars[k] = dbus.MakeVariant(v)
	}
	var out DriveStatus
	if err := out.Apply(vars); err != nil {
		t.Fatal(err)
	}
	if out != in {
		t.Errorf("round trip: got %+v, want %+v", out, in)
	}
	if err := out.Apply(map[string]dbus.Variant{PropFilesDone: dbus.MakeVariant("many")}); err == nil {
		t.Error("a property of the wrong type must be an error")
	}
	if err := out.Apply(map[string]dbus.Variant{"FutureProperty": dbus.MakeVariant(1)}); err != nil {
		t.Errorf("unknown properties must be ignored: %v", err)
	}
}
