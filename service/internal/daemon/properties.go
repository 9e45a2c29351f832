package daemon

import (
	"sync"

	"github.com/godbus/dbus/v5"
)

// properties serves org.freedesktop.DBus.Properties for one interface of one object. Every
// property is read-only: a property setter cannot learn who called it, so it could not be
// authorized. Changes are made by the daemon, which emits PropertiesChanged itself.
type properties struct {
	iface string
	mu    sync.RWMutex
	vals  map[string]dbus.Variant
}

func newProperties(iface string, vals map[string]any) *properties {
	p := &properties{iface: iface, vals: make(map[string]dbus.Variant, len(vals))}
	for k, v := range vals {
		p.vals[k] = dbus.MakeVariant(v)
	}
	return p
}

func (p *properties) update(changed map[string]dbus.Variant) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, v := range changed {
		p.vals[k] = v
	}
}

func (p *properties) check(iface, name string) *dbus.Error {
	if iface != p.iface {
		return dbus.NewError("org.freedesktop.DBus.Error.UnknownInterface", []any{"no such interface: " + iface})
	}
	if _, ok := p.vals[name]; !ok {
		return dbus.NewError("org.freedesktop.DBus.Error.UnknownProperty", []any{"no such property: " + name})
	}
	return nil
}

// Get implements org.freedesktop.DBus.Properties.Get.
func (p *properties) Get(iface, name string) (dbus.Variant, *dbus.Error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if err := p.check(iface, name); err != nil {
		return dbus.Variant{}, err
	}
	return p.vals[name], nil
}

// GetAll implements org.freedesktop.DBus.Properties.GetAll.
func (p *properties) GetAll(iface string) (map[string]dbus.Variant, *dbus.Error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if iface != p.iface && iface != "" {
		return nil, dbus.NewError("org.freedesktop.DBus.Error.UnknownInterface", []any{"no such interface: " + iface})
	}
	out := make(map[string]dbus.Variant, len(p.vals))
	for k, v := range p.vals {
		out[k] = v
	}
	return out, nil
}

// Set implements org.freedesktop.DBus.Properties.Set: it always refuses.
func (p *properties) Set(iface, name string, _ dbus.Variant) *dbus.Error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if err := p.check(iface, name); err != nil {
		return err
	}
	return dbus.NewError("org.freedesktop.DBus.Error.PropertyReadOnly", []any{"property " + name + " is read-only"})
}
