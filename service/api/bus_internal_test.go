package api

import "testing"

func TestUnixSocket(t *testing.T) {
	for addr, want := range map[string]string{
		"unix:path=/run/dbus/system_bus_socket":          "/run/dbus/system_bus_socket",
		"unix:path=/tmp/pvbus123/bus,guid=0123456789abc": "/tmp/pvbus123/bus",
		"unix:guid=0123,path=/tmp/a%20b":                 "/tmp/a b",
		"unix:abstract=/tmp/dbus-XYZ":                    "@/tmp/dbus-XYZ",
	} {
		got, err := unixSocket(addr)
		if err != nil || got != want {
			t.Errorf("unixSocket(%q) = %q, %v; want %q", addr, got, err, want)
		}
	}
	for _, addr := range []string{"tcp:host=localhost,port=1", "unix:tmpdir=/tmp", "garbage", "unix:path=%zz"} {
		if got, err := unixSocket(addr); err == nil {
			t.Errorf("unixSocket(%q) = %q, want an error", addr, got)
		}
	}
}
