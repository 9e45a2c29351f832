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
// ctx bounds the connection handshake (authentication and Hello), which is also limited to
// HandshakeTimeout: a bus that accepts the socket but never answers must not hang the caller.
func DialBus(ctx context.Context, address string, opts ...dbus.ConnOption) (*dbus.Conn, error) {
	c, err := DialSocket(ctx, address)
	if err != nil {
		return nil, err
	}
	conn, err := handshake(ctx, c, opts)
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
func handshake(ctx context.Context, c net.Conn, opts []dbus.ConnOption) (*dbus.Conn, error) {
	_ = c.SetDeadline(time.Now().Add(HandshakeTimeout))
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	// Hiding the *net.UnixConn makes godbus use its generic stream transport, which does
	// not offer fd passing during authentication.
	conn, err := dbus.NewConn(stream{c}, opts...)
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

// stream is a net.Conn seen only as an io.ReadWriteCloser.
type stream struct{ io.ReadWriteCloser }

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
