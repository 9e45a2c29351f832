package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"
)

// DefaultSystemBusAddress is the system bus when DBUS_SYSTEM_BUS_ADDRESS is not set.
const DefaultSystemBusAddress = "unix:path=/run/dbus/system_bus_socket"

// SystemBusAddress returns DBUS_SYSTEM_BUS_ADDRESS, or the default system bus.
func SystemBusAddress() string {
	if a := os.Getenv("DBUS_SYSTEM_BUS_ADDRESS"); a != "" {
		return a
	}
	return DefaultSystemBusAddress
}

// HandshakeTimeout limits authentication and Hello.
const HandshakeTimeout = 30 * time.Second

// DialBus connects to the bus at address (a D-Bus address; unix:path= and unix:abstract= are
// supported), authenticates and says Hello. plugvaultd, the CLI and the tray all connect
// this way.
//
// The connection does not negotiate UNIX fd passing, so the bus daemon refuses to deliver any
// message that carries file descriptors: the sender gets an error and this process never sees
// them. The contract takes no fds, and godbus v5.2.4 both leaks the fds of messages no handler
// takes (the default system bus policy lets any user send a unicast signal to any
// connection) and panics, killing the whole process, when a message carries fds in an array
// or dict ("ah", "a{sh}"): its decoder builds a []UnixFDIndex and appends a UnixFD to it.
//
// Once godbus has decoded a message, incoming (if not nil) sees it, and then the raw bytes the
// message was read from are zeroed: a call's secrets (ay passphrases and keys) must not stay
// behind in godbus's garbage. incoming is the connection's incoming interceptor: do not pass
// dbus.WithIncomingInterceptor in opts.
//
// ctx bounds the connection handshake (authentication and Hello), which is also limited to
// HandshakeTimeout: a bus that accepts the socket but never answers must not hang the caller.
func DialBus(ctx context.Context, address string, incoming func(*dbus.Message), opts ...dbus.ConnOption) (*dbus.Conn, error) {
	c, err := DialSocket(ctx, address)
	if err != nil {
		return nil, err
	}
	conn, err := handshake(ctx, c, incoming, opts)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to the bus at %s: %w", address, err)
	}
	return conn, nil
}

// DialSocket connects to the socket of the first usable entry of the bus address.
func DialSocket(ctx context.Context, address string) (*net.UnixConn, error) {
	var errs []error
	for _, a := range strings.Split(address, ";") {
		if a == "" {
			continue
		}
		sock, err := unixSocket(a)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", sock)
		if err != nil {
			errs = append(errs, fmt.Errorf("cannot connect to the bus at %s: %w", a, err))
			continue
		}
		return c.(*net.UnixConn), nil
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("cannot connect to the bus: empty address %q", address)
	}
	return nil, errors.Join(errs...)
}

// handshake authenticates on c and says Hello, giving up when ctx ends or HandshakeTimeout
// passes (the socket deadline makes godbus's blocked reads fail).
func handshake(ctx context.Context, c net.Conn, incoming func(*dbus.Message), opts []dbus.ConnOption) (*dbus.Conn, error) {
	_ = c.SetDeadline(time.Now().Add(HandshakeTimeout))
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	// Hiding the *net.UnixConn makes godbus use its generic stream transport, which does
	// not offer fd passing during authentication.
	s := &stream{ReadWriteCloser: c}
	opts = append(opts, dbus.WithIncomingInterceptor(func(msg *dbus.Message) {
		if incoming != nil {
			incoming(msg)
		}
		s.clearReads()
	}))
	conn, err := dbus.NewConn(s, opts...)
	if err != nil {
		c.Close()
		return nil, err
	}
	if err := conn.Auth(nil); err != nil {
		conn.Close()
		return nil, fmt.Errorf("cannot authenticate: %w", err)
	}
	if err := conn.Hello(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("no answer to Hello: %w", err)
	}
	if !stop() {
		conn.Close()
		return nil, ctx.Err()
	}
	_ = c.SetDeadline(time.Time{})
	return conn, nil
}

// stream is a net.Conn seen only as an io.ReadWriteCloser. It remembers the buffers godbus
// reads into until clearReads zeroes them.
//
// godbus's generic transport reads each message with exact-length reads into buffers of its
// own (no read-ahead) and calls the incoming interceptor on the same goroutine once the
// message is decoded, before it reads the next one; the decoded values are copies. So what
// was read before the interceptor runs is exactly the raw message, dead by then.
type stream struct {
	io.ReadWriteCloser
	mu    sync.Mutex
	reads [][]byte
}

func (s *stream) Read(p []byte) (int, error) {
	n, err := s.ReadWriteCloser.Read(p)
	if n > 0 {
		s.mu.Lock()
		s.reads = append(s.reads, p[:n])
		s.mu.Unlock()
	}
	return n, err
}

// clearReads zeroes every buffer read into since the last call.
func (s *stream) clearReads() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.reads {
		clear(b)
	}
	clear(s.reads)
	s.reads = s.reads[:0]
}

// unixSocket returns the socket of one unix: address ("@name" for an abstract socket).
func unixSocket(addr string) (string, error) {
	transport, params, ok := strings.Cut(addr, ":")
	if !ok || transport != "unix" {
		return "", fmt.Errorf("cannot use the bus address %q: only unix: addresses are supported", addr)
	}
	for _, kv := range strings.Split(params, ",") {
		k, v, _ := strings.Cut(kv, "=")
		v, err := url.PathUnescape(v)
		if err != nil {
			return "", fmt.Errorf("cannot use the bus address %q: %w", addr, err)
		}
		switch k {
		case "path":
			return v, nil
		case "abstract":
			return "@" + v, nil
		}
	}
	return "", fmt.Errorf("cannot use the bus address %q: it has neither path= nor abstract=", addr)
}
