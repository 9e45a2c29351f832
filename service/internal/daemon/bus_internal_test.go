package daemon

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
)

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
	if _, err := ConnectBus(context.Background(), ""); err == nil {
		t.Error("ConnectBus(\"\") succeeded")
	}
}

// A bus that accepts the connection but never answers does not hang ConnectBus: ending ctx
// ends the handshake.
func TestConnectBusGivesUpWithCtx(t *testing.T) {
	dir, err := os.MkdirTemp("", "pvmute")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "bus")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		cancel()                      // the client is now waiting for an answer that never comes
		_, _ = io.Copy(io.Discard, c) // until the client gives up and closes
	}()
	if conn, err := ConnectBus(ctx, "unix:path="+sock); err == nil {
		conn.Close()
		t.Fatal("ConnectBus succeeded against a mute bus")
	}
}
