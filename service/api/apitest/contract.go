package apitest

// This file checks a service against the contract (api.IntrospectXML): the daemon and the
// fake service of this package are checked with the same functions. The checks read the
// interfaces from the XML, so an interface added to the contract is checked with no change
// here; the caller lists what it serves.

import (
	"context"
	"encoding/xml"
	"errors"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/props"
)

// Contract returns the contract's interfaces by name.
func Contract(t testing.TB) map[string]introspect.Interface {
	t.Helper()
	var node introspect.Node
	if err := xml.Unmarshal([]byte(api.IntrospectXML), &node); err != nil {
		t.Fatalf("cannot parse the contract XML: %v", err)
	}
	out := make(map[string]introspect.Interface, len(node.Interfaces))
	for _, iface := range node.Interfaces {
		out[iface.Name] = iface
	}
	return out
}

// CheckMethods checks that served, which maps each interface a service exports to what it
// exports for it (a Go object given to dbus.Conn.Export, or a method table given to
// ExportMethodTable), serves every interface of the contract, each with exactly the
// contract's methods and their argument signatures. The dbus.Sender and dbus.Message
// parameters a handler may take, and its final *dbus.Error result, are not on the wire; every
// other exported method of an object is, so it counts.
func CheckMethods(t testing.TB, served map[string]any) {
	t.Helper()
	contract := Contract(t)
	for name := range served {
		if _, ok := contract[name]; !ok {
			t.Errorf("%s is served but is not in the contract", name)
		}
	}
	for name, iface := range contract {
		v, ok := served[name]
		if !ok {
			t.Errorf("the contract has interface %s, which is not served", name)
			continue
		}
		got, want := servedSignatures(v), contractSignatures(iface.Methods)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: served\n  %s\nthe contract says\n  %s", name, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
	}
}

// contractSignatures describes methods as "Name(in sigs) -> (out sigs)", sorted.
func contractSignatures(ms []introspect.Method) []string {
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
		out = append(out, signature(m.Name, in, res))
	}
	sort.Strings(out)
	return out
}

func signature(name string, in, out []string) string {
	return name + "(" + strings.Join(in, ",") + ") -> (" + strings.Join(out, ",") + ")"
}

var (
	senderType  = reflect.TypeFor[dbus.Sender]()
	messageType = reflect.TypeFor[dbus.Message]()
	errorType   = reflect.TypeFor[*dbus.Error]()
)

// servedSignatures describes what godbus serves for v (an object or a method table) the way
// contractSignatures describes the XML.
func servedSignatures(v any) []string {
	var out []string
	if table, ok := v.(map[string]any); ok {
		for name, fn := range table {
			out = append(out, funcSignature(name, reflect.TypeOf(fn), 0))
		}
	} else {
		t := reflect.TypeOf(v)
		for i := 0; i < t.NumMethod(); i++ {
			m := t.Method(i)
			out = append(out, funcSignature(m.Name, m.Type, 1)) // In(0) is the receiver
		}
	}
	sort.Strings(out)
	return out
}

func funcSignature(name string, ft reflect.Type, first int) string {
	if ft == nil || ft.Kind() != reflect.Func {
		return name + ": not a function"
	}
	var in, out []string
	for i := first; i < ft.NumIn(); i++ {
		if t := ft.In(i); t != senderType && t != messageType {
			in = append(in, dbus.SignatureOfType(t).String())
		}
	}
	for i := 0; i < ft.NumOut(); i++ {
		if t := ft.Out(i); i < ft.NumOut()-1 || t != errorType {
			out = append(out, dbus.SignatureOfType(t).String())
		}
	}
	return signature(name, in, out)
}

// CheckProperties reads the properties of each interface in paths (interface name -> an
// object serving it) from dest over conn, and checks them against the contract: GetAll
// returns exactly the contract's properties with its types, Get returns the same values, and
// Set is refused as read-only.
func CheckProperties(t testing.TB, conn *dbus.Conn, dest string, paths map[string]dbus.ObjectPath) {
	t.Helper()
	contract := Contract(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for name, path := range paths {
		iface, ok := contract[name]
		if !ok {
			t.Errorf("%s is not in the contract", name)
			continue
		}
		obj := conn.Object(dest, path)
		var all map[string]dbus.Variant
		if err := obj.CallWithContext(ctx, props.Interface+".GetAll", 0, name).Store(&all); err != nil {
			t.Errorf("%s GetAll(%s): %v", path, name, err)
			continue
		}
		if len(all) != len(iface.Properties) {
			t.Errorf("%s publishes %d properties, the contract has %d", name, len(all), len(iface.Properties))
		}
		for _, p := range iface.Properties {
			v, ok := all[p.Name]
			if !ok {
				t.Errorf("%s.%s is not published", name, p.Name)
				continue
			}
			if v.Signature().String() != p.Type {
				t.Errorf("%s.%s has type %s, the contract says %s", name, p.Name, v.Signature(), p.Type)
			}
			var one dbus.Variant
			if err := obj.CallWithContext(ctx, props.Interface+".Get", 0, name, p.Name).Store(&one); err != nil {
				t.Errorf("%s Get(%s.%s): %v", path, name, p.Name, err)
			} else if !reflect.DeepEqual(one.Value(), v.Value()) {
				t.Errorf("%s.%s: Get says %v, GetAll %v", name, p.Name, one, v)
			}
			err := obj.CallWithContext(ctx, props.Interface+".Set", 0, name, p.Name, v).Err
			var derr dbus.Error
			if !errors.As(err, &derr) || derr.Name != props.ErrReadOnly {
				t.Errorf("%s.%s: Set = %v, want %s", name, p.Name, err, props.ErrReadOnly)
			}
		}
	}
}
