package daemon

import (
	"reflect"

	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"
)

// CloseUnixFDs is the connection's incoming-message interceptor (dbus.WithIncomingInterceptor):
// it closes every UNIX file descriptor that arrives with any message. The contract takes no
// file descriptors at all, and godbus v5.2.4 never closes the ones attached to calls that no
// handler takes (wrong signature, unknown method or object, signals), so without this any
// local user could exhaust the daemon's descriptors.
//
// godbus has already received the descriptors when the interceptor runs: it replaces each 'h'
// in the body, at any depth (arrays, structs, dict values, variants), by a dbus.UnixFD holding
// the descriptor's number in this process. The guard walks the body and closes each one, then
// sets it to -1 where the value can be changed in place. Two cases are beyond its reach, which
// is why plugvaultd's own connection (ConnectBus) does not accept fds at all: fds that the
// header counts but the body never references (godbus drops them unseen), and arrays or dicts
// of fds, on which godbus v5.2.4 panics while decoding, before any interceptor runs.
func CloseUnixFDs(msg *dbus.Message) {
	if msg == nil {
		return
	}
	if n, ok := msg.Headers[dbus.FieldUnixFDs].Value().(uint32); !ok || n == 0 {
		return
	}
	for i := range msg.Body {
		v := reflect.ValueOf(&msg.Body[i]).Elem()
		closeFDs(v)
	}
}

var (
	unixFDType  = reflect.TypeOf(dbus.UnixFD(0))
	variantType = reflect.TypeOf(dbus.Variant{})
)

// closeFDs closes every dbus.UnixFD in v. Values reached through a settable path are set to
// -1 so that nothing can use (or close again) a number the process may have reused.
func closeFDs(v reflect.Value) {
	if !v.IsValid() {
		return
	}
	switch {
	case v.Type() == unixFDType:
		if fd := int(v.Int()); fd >= 0 {
			_ = unix.Close(fd)
		}
		if v.CanSet() {
			v.SetInt(-1)
		}
		return
	case v.Type() == variantType:
		closeFDs(reflect.ValueOf(v.Interface().(dbus.Variant).Value()))
		return
	}
	switch v.Kind() {
	case reflect.Interface, reflect.Pointer:
		if v.IsNil() {
			return
		}
		e := v.Elem()
		if e.Type() == unixFDType && v.Kind() == reflect.Interface {
			closeFDs(e)
			if v.CanSet() {
				v.Set(reflect.ValueOf(dbus.UnixFD(-1)))
			}
			return
		}
		closeFDs(e)
	case reflect.Slice, reflect.Array:
		for i := 0; i < v.Len(); i++ {
			closeFDs(v.Index(i))
		}
	case reflect.Map:
		iter := v.MapRange()
		for iter.Next() {
			closeFDs(iter.Key())
			closeFDs(iter.Value())
		}
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				closeFDs(v.Field(i))
			}
		}
	}
}
