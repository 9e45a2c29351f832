package props

import (
	"reflect"
	"sort"
	"testing"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"
)

const iface = "org.example.Thing"

func TestUpdateReportsOnlyChanges(t *testing.T) {
	p := New(iface, map[string]any{"Name": "blue", "Count": uint32(1), "Paths": []dbus.ObjectPath{"/a"}})
	if changed := p.Update(map[string]any{"Name": "blue", "Count": uint32(1), "Paths": []dbus.ObjectPath{"/a"}}); changed != nil {
		t.Errorf("the same values changed %v", changed)
	}
	changed := p.Update(map[string]any{"Name": "red", "Count": uint32(1), "Paths": []dbus.ObjectPath{"/a", "/b"}, "New": true})
	var names []string
	for k := range changed {
		names = append(names, k)
	}
	sort.Strings(names)
	if want := []string{"Name", "New", "Paths"}; !reflect.DeepEqual(names, want) {
		t.Errorf("changed %v, want %v", names, want)
	}
	if changed["Name"].Value() != "red" {
		t.Errorf("changed Name = %v", changed["Name"])
	}
	// A value of another type is a change even when it looks the same.
	if changed := p.Update(map[string]any{"Count": uint64(1)}); len(changed) != 1 {
		t.Errorf("a new type did not count as a change: %v", changed)
	}
	if v, err := (server{p}).Get(iface, "Name"); err != nil || v.Value() != "red" {
		t.Errorf("Get(Name) after Update = %v, %v", v, err)
	}
}

func TestServerIsReadOnly(t *testing.T) {
	s := server{New(iface, map[string]any{"Name": "blue"})}
	if v, err := s.Get(iface, "Name"); err != nil || v.Value() != "blue" {
		t.Errorf("Get = %v, %v", v, err)
	}
	for _, c := range []struct {
		iface, name, want string
	}{{"org.example.Other", "Name", ErrUnknownInterface}, {iface, "Nothing", ErrUnknownProperty}} {
		if _, err := s.Get(c.iface, c.name); err == nil || err.Name != c.want {
			t.Errorf("Get(%s, %s) = %v, want %s", c.iface, c.name, err, c.want)
		}
		if err := s.Set(c.iface, c.name, dbus.MakeVariant("x")); err == nil || err.Name != c.want {
			t.Errorf("Set(%s, %s) = %v, want %s", c.iface, c.name, err, c.want)
		}
	}
	if err := s.Set(iface, "Name", dbus.MakeVariant("red")); err == nil || err.Name != ErrReadOnly {
		t.Errorf("Set = %v, want %s", err, ErrReadOnly)
	}
	if v, _ := s.Get(iface, "Name"); v.Value() != "blue" {
		t.Errorf("Set changed the value to %v", v)
	}
	for _, name := range []string{iface, ""} {
		if all, err := s.GetAll(name); err != nil || len(all) != 1 || all["Name"].Value() != "blue" {
			t.Errorf("GetAll(%q) = %v, %v", name, all, err)
		}
	}
	if _, err := s.GetAll("org.example.Other"); err == nil || err.Name != ErrUnknownInterface {
		t.Errorf("GetAll of another interface = %v", err)
	}
}

// The introspection data describes exactly the methods the bus sees.
func TestIntrospectDataMatchesServer(t *testing.T) {
	sigs := func(ms []introspect.Method) map[string][]introspect.Arg {
		out := map[string][]introspect.Arg{}
		for _, m := range ms {
			var args []introspect.Arg
			for _, a := range m.Args {
				args = append(args, introspect.Arg{Type: a.Type, Direction: a.Direction})
			}
			out[m.Name] = args
		}
		return out
	}
	if got, want := sigs(introspect.Methods(server{})), sigs(IntrospectData.Methods); !reflect.DeepEqual(got, want) {
		t.Errorf("server serves %v, IntrospectData says %v", got, want)
	}
}
