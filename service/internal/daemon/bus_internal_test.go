package daemon

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
)

func TestConnectBusNeedsAnAddress(t *testing.T) {
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
