// Package props serves org.freedesktop.DBus.Properties for one interface of an object of the
// contract, and emits its PropertiesChanged signal. plugvaultd and the fake service of
// service/api/apitest serve their properties with it, so a client sees the same Get, GetAll,
// Set and PropertiesChanged from both.
//
// Every property is read-only on the bus: a property setter cannot learn who called it, so it
// could not be authorized. The owner of the object changes values with Update and announces
// the change with Emit.
package props

import (
	"reflect"
	"sync"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"
)

// Interface is the standard interface this package serves.
const Interface = "org.freedesktop.DBus.Properties"

// Standard error names of the interface's failures.
const (
	ErrUnknownInterface = "org.freedesktop.DBus.Error.UnknownInterface"
	ErrUnknownProperty  = "org.freedesktop.DBus.Error.UnknownProperty"
	ErrReadOnly         = "org.freedesktop.DBus.Error.PropertyReadOnly"
)

// IntrospectData describes Interface for an object's introspection data.
var IntrospectData = introspect.Interface{
	Name: Interface,
	Methods: []introspect.Method{
		{Name: "Get", Args: []introspect.Arg{
			{Name: "interface", Type: "s", Direction: "in"},
			{Name: "property", Type: "s", Direction: "in"},
			{Name: "value", Type: "v", Direction: "out"},
		}},
		{Name: "GetAll", Args: []introspect.Arg{
			{Name: "interface", Type: "s", Direction: "in"},
			{Name: "props", Type: "a{sv}", Direction: "out"},
		}},
		{Name: "Set", Args: []introspect.Arg{
			{Name: "interface", Type: "s", Direction: "in"},
			{Name: "property", Type: "s", Direction: "in"},
			{Name: "value", Type: "v", Direction: "in"},
		}},
	},
	Signals: []introspect.Signal{
		{Name: "PropertiesChanged", Args: []introspect.Arg{
			{Name: "interface", Type: "s", Direction: "out"},
			{Name: "changed_properties", Type: "a{sv}", Direction: "out"},
			{Name: "invalidates_properties", Type: "as", Direction: "out"},
		}},
	},
}

// Properties holds the properties of one interface of one object. It is safe for concurrent
// use.
type Properties struct {
	iface string
	mu    sync.RWMutex
	vals  map[string]dbus.Variant
}

// New returns the properties of interface iface with the given initial values.
func New(iface string, vals map[string]any) *Properties {
	p := &Properties{iface: iface, vals: make(map[string]dbus.Variant, len(vals))}
	for k, v := range vals {
		p.vals[k] = dbus.MakeVariant(v)
	}
	return p
}

// Update sets the given values and returns those that differ from what was there before (a
// new property counts as changed), ready for Emit; nil when nothing changed.
func (p *Properties) Update(vals map[string]any) map[string]dbus.Variant {
	p.mu.Lock()
	defer p.mu.Unlock()
	var changed map[string]dbus.Variant
	for k, v := range vals {
		nv := dbus.MakeVariant(v)
		if old, ok := p.vals[k]; ok && old.Signature() == nv.Signature() && reflect.DeepEqual(old.Value(), nv.Value()) {
			continue
		}
		p.vals[k] = nv
		if changed == nil {
			changed = map[string]dbus.Variant{}
		}
		changed[k] = nv
	}
	return changed
}

// Export serves the properties as Interface at path on conn. conn.Export(nil, path,
// Interface) removes them again.
func (p *Properties) Export(conn *dbus.Conn, path dbus.ObjectPath) error {
	return conn.Export(server{p}, path, Interface)
}

// Emit sends PropertiesChanged for changed (as Update returned it) from path on conn; nothing
// when changed is empty.
func (p *Properties) Emit(conn *dbus.Conn, path dbus.ObjectPath, changed map[string]dbus.Variant) error {
	if len(changed) == 0 {
		return nil
	}
	return conn.Emit(path, Interface+".PropertiesChanged", p.iface, changed, []string{})
}

func (p *Properties) check(iface, name string) *dbus.Error {
	if iface != p.iface {
		return dbus.NewError(ErrUnknownInterface, []any{"no such interface: " + iface})
	}
	if _, ok := p.vals[name]; !ok {
		return dbus.NewError(ErrUnknownProperty, []any{"no such property: " + name})
	}
	return nil
}

// server is what the bus sees: its exported methods are exactly the interface's methods.
type server struct{ p *Properties }

// Get implements org.freedesktop.DBus.Properties.Get.
func (s server) Get(iface, name string) (dbus.Variant, *dbus.Error) {
	s.p.mu.RLock()
	defer s.p.mu.RUnlock()
	if err := s.p.check(iface, name); err != nil {
		return dbus.Variant{}, err
	}
	return s.p.vals[name], nil
}

// GetAll implements org.freedesktop.DBus.Properties.GetAll; an empty interface name means
// the one interface there is.
func (s server) GetAll(iface string) (map[string]dbus.Variant, *dbus.Error) {
	s.p.mu.RLock()
	defer s.p.mu.RUnlock()
	if iface != s.p.iface && iface != "" {
		return nil, dbus.NewError(ErrUnknownInterface, []any{"no such interface: " + iface})
	}
	out := make(map[string]dbus.Variant, len(s.p.vals))
	for k, v := range s.p.vals {
		out[k] = v
	}
	return out, nil
}

// Set implements org.freedesktop.DBus.Properties.Set: it always refuses.
func (s server) Set(iface, name string, _ dbus.Variant) *dbus.Error {
	s.p.mu.RLock()
	defer s.p.mu.RUnlock()
	if err := s.p.check(iface, name); err != nil {
		return err
	}
	return dbus.NewError(ErrReadOnly, []any{"property " + name + " is read-only"})
}
