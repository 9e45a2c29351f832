package daemon

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api/apitest"
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

// recordingConn stands for the socket and keeps every buffer the connection read into.
type recordingConn struct {
	net.Conn
	mu    sync.Mutex
	reads [][]byte
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.reads = append(c.reads, p[:n])
	c.mu.Unlock()
	return n, err
}

// secretTaker is a handler that takes a secret as ay.
type secretTaker struct{ got chan []byte }

func (s secretTaker) Take(secret []byte) *dbus.Error {
	s.got <- append([]byte(nil), secret...)
	return nil
}

// The raw bytes of a call, which hold its ay secret, are zeroed once godbus has decoded it:
// nothing the connection read from the socket still holds the secret when the handler runs.
func TestRawMessageBytesAreZeroed(t *testing.T) {
	bus := apitest.StartBus(t, apitest.BusOptions{})
	sock, err := unixSocket(bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordingConn{Conn: raw}
	conn, err := handshake(context.Background(), rec, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	taker := secretTaker{got: make(chan []byte, 1)}
	if err := conn.Export(taker, "/test", "org.plugvault.Test"); err != nil {
		t.Fatal(err)
	}
	secret := []byte("correct horse battery staple")
	client := bus.Conn(t)
	if err := client.Object(conn.Names()[0], "/test").Call("org.plugvault.Test.Take", 0, secret).Err; err != nil {
		t.Fatal(err)
	}
	if got := <-taker.got; !bytes.Equal(got, secret) {
		t.Fatalf("the handler got %q", got)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.reads) == 0 {
		t.Fatal("nothing was read")
	}
	for _, b := range rec.reads {
		if bytes.Contains(b, secret) {
			t.Fatalf("a buffer read from the socket still holds the secret: %q", b)
		}
	}
}
