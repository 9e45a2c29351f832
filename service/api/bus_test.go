package api_test

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/apitest"
)

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
	raw, err := api.DialSocket(context.Background(), bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordingConn{Conn: raw}
	conn, err := api.Handshake(context.Background(), rec, nil, nil)
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
