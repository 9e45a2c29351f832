package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"

	"github.com/plugvault/plugvault/service/api"
)

// inhibit takes a logind inhibitor lock and returns its fd. It speaks D-Bus itself on a
// connection that lives only for this call, because the reply carries an fd, so the
// connection must negotiate fd passing, and godbus's reader leaks the fds of messages nobody
// asked for and panics, killing the daemon, on a message carrying an array of fds. Here every
// message other than the awaited replies is decoded without its fds (godbus then cannot
// panic; a panic would still be recovered) and its fds are closed; the connection is closed
// as soon as the reply is in. The reply must come from logind's unique name, looked up first
// on the same connection.
func inhibit(ctx context.Context, address, what, who, why, mode string) (int, error) {
	c, err := api.DialSocket(ctx, address)
	if err != nil {
		return -1, fmt.Errorf("cannot take a %s inhibitor: %w", what, err)
	}
	defer c.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	fd, err := inhibitOn(c, what, who, why, mode)
	if err != nil {
		return -1, fmt.Errorf("cannot take a %s inhibitor: %w", what, err)
	}
	return fd, nil
}

// The serials of the calls inhibitOn makes.
const (
	serialHello = iota + 1
	serialOwner
	serialInhibit
)

func inhibitOn(c *net.UnixConn, what, who, why, mode string) (int, error) {
	if err := authWithFDs(c); err != nil {
		return -1, err
	}
	var out bytes.Buffer
	calls := []struct {
		serial uint32
		msg    *dbus.Message
	}{
		{serialHello, methodCall("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello")},
		{serialOwner, methodCall("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetNameOwner", logindDest)},
		{serialInhibit, methodCall(logindDest, logindPath, logindIface, "Inhibit", what, who, why, mode)},
	}
	for _, call := range calls {
		start := out.Len()
		if err := call.msg.EncodeTo(&out, binary.LittleEndian); err != nil {
			return -1, fmt.Errorf("internal error: %w", err)
		}
		// godbus has no way to set a serial: it sits at bytes 8-11 of the fixed header.
		binary.LittleEndian.PutUint32(out.Bytes()[start+8:], call.serial)
	}
	if _, err := c.Write(out.Bytes()); err != nil {
		return -1, err
	}
	r := &msgReader{c: c}
	defer r.closeAll()
	var owner string
	for {
		msg, fds, err := r.next()
		if err != nil {
			return -1, err
		}
		serial, _ := msg.Headers[dbus.FieldReplySerial].Value().(uint32)
		sender, _ := msg.Headers[dbus.FieldSender].Value().(string)
		reply := msg.Type == dbus.TypeMethodReply || msg.Type == dbus.TypeError
		switch {
		case !reply || (serial != serialOwner && serial != serialInhibit):
		case msg.Type == dbus.TypeError && (sender == "org.freedesktop.DBus" || sender == owner):
			// The bus refused a call (no logind, a policy) or logind refused the lock.
			closeAll(fds)
			return -1, replyError(msg)
		case serial == serialOwner && sender == "org.freedesktop.DBus" && len(msg.Body) == 1:
			owner, _ = msg.Body[0].(string)
		case serial == serialInhibit && owner != "" && sender == owner && len(msg.Body) == 1 && len(fds) == 1:
			if _, ok := msg.Body[0].(dbus.UnixFDIndex); ok {
				return fds[0], nil
			}
		}
		closeAll(fds)
	}
}

// methodCall builds a method call; the serial is set when it is encoded.
func methodCall(dest string, path dbus.ObjectPath, iface, member string, args ...any) *dbus.Message {
	msg := &dbus.Message{Type: dbus.TypeMethodCall, Headers: map[dbus.HeaderField]dbus.Variant{
		dbus.FieldDestination: dbus.MakeVariant(dest),
		dbus.FieldPath:        dbus.MakeVariant(path),
		dbus.FieldInterface:   dbus.MakeVariant(iface),
		dbus.FieldMember:      dbus.MakeVariant(member),
	}, Body: args}
	if len(args) > 0 {
		msg.Headers[dbus.FieldSignature] = dbus.MakeVariant(dbus.SignatureOf(args...))
	}
	return msg
}

func replyError(msg *dbus.Message) error {
	name, _ := msg.Headers[dbus.FieldErrorName].Value().(string)
	text := ""
	if len(msg.Body) > 0 {
		text, _ = msg.Body[0].(string)
	}
	return fmt.Errorf("%s: %s", name, text)
}

// authWithFDs authenticates with SASL EXTERNAL and negotiates fd passing.
func authWithFDs(c *net.UnixConn) error {
	uid := hex.EncodeToString([]byte(strconv.Itoa(os.Geteuid())))
	if _, err := c.Write([]byte("\x00AUTH EXTERNAL " + uid + "\r\n")); err != nil {
		return err
	}
	if line, err := readLine(c); err != nil || !strings.HasPrefix(line, "OK ") {
		return fmt.Errorf("cannot authenticate: %q %v", line, err)
	}
	if _, err := c.Write([]byte("NEGOTIATE_UNIX_FD\r\n")); err != nil {
		return err
	}
	if line, err := readLine(c); err != nil || line != "AGREE_UNIX_FD" {
		return fmt.Errorf("the bus does not pass fds: %q %v", line, err)
	}
	_, err := c.Write([]byte("BEGIN\r\n"))
	return err
}

// readLine reads one SASL line byte by byte, so that nothing after it is consumed.
func readLine(c *net.UnixConn) (string, error) {
	var line []byte
	b := make([]byte, 1)
	for len(line) < 512 {
		if _, err := c.Read(b); err != nil {
			return string(line), err
		}
		line = append(line, b[0])
		if bytes.HasSuffix(line, []byte("\r\n")) {
			return string(line[:len(line)-2]), nil
		}
	}
	return "", errors.New("overlong line")
}

// maxInhibitMessage bounds a message on the inhibitor's connection: replies and logind's
// signals are small, and a sender of huge messages only costs this call.
const maxInhibitMessage = 1 << 20

// msgReader splits the byte stream of a D-Bus connection into messages and hands each its
// fds, which the kernel delivers with a message's first bytes, in order.
type msgReader struct {
	c   *net.UnixConn
	buf []byte
	fds []int
}

func (r *msgReader) next() (*dbus.Message, []int, error) {
	for {
		if len(r.buf) >= 16 {
			n, err := messageLen(r.buf)
			if err != nil {
				return nil, nil, err
			}
			if len(r.buf) >= n {
				raw := r.buf[:n]
				r.buf = append([]byte(nil), r.buf[n:]...)
				msg, err := decodeWithoutFDs(raw)
				if err != nil {
					// The fd count is in the header that could not be read: the stream
					// cannot be followed any further.
					return nil, nil, err
				}
				count, _ := msg.Headers[dbus.FieldUnixFDs].Value().(uint32)
				if int(count) > len(r.fds) {
					return nil, nil, errors.New("a message announces more fds than arrived")
				}
				fds := r.fds[:count:count]
				r.fds = r.fds[count:]
				return msg, fds, nil
			}
		}
		if err := r.fill(); err != nil {
			return nil, nil, err
		}
	}
}

func (r *msgReader) fill() error {
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(253*4)) // the most fds a D-Bus message may carry
	// The net package receives with MSG_CMSG_CLOEXEC.
	n, oobn, flags, _, err := r.c.ReadMsgUnix(buf, oob)
	if oobn > 0 {
		if scms, perr := syscall.ParseSocketControlMessage(oob[:oobn]); perr == nil {
			for i := range scms {
				if fds, perr := syscall.ParseUnixRights(&scms[i]); perr == nil {
					r.fds = append(r.fds, fds...)
				}
			}
		}
	}
	if err != nil {
		return err
	}
	if flags&syscall.MSG_CTRUNC != 0 {
		return errors.New("fds were cut off")
	}
	if n == 0 {
		return errors.New("the bus closed the connection")
	}
	r.buf = append(r.buf, buf[:n]...)
	return nil
}

func (r *msgReader) closeAll() {
	closeAll(r.fds)
	r.fds = nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		_ = unix.Close(fd)
	}
}

// messageLen is the length of the message that starts the buffer (at least its 16-byte fixed
// header): the header, its fields padded to 8 bytes, and the body.
func messageLen(b []byte) (int, error) {
	var order binary.ByteOrder
	switch b[0] {
	case 'l':
		order = binary.LittleEndian
	case 'B':
		order = binary.BigEndian
	default:
		return 0, errors.New("invalid byte order")
	}
	body := uint64(order.Uint32(b[4:]))
	fields := uint64(order.Uint32(b[12:]))
	n := 16 + (fields+7)&^7 + body
	if n > maxInhibitMessage {
		return 0, fmt.Errorf("a message of %d bytes", n)
	}
	return int(n), nil
}

// decodeWithoutFDs decodes a message leaving its fds as indexes (dbus.UnixFDIndex). Given no
// fds, godbus's decoder builds arrays of fds without the type mix-up that makes it panic;
// should it panic anyway, the message is an error.
func decodeWithoutFDs(raw []byte) (msg *dbus.Message, err error) {
	defer func() {
		if v := recover(); v != nil {
			msg, err = nil, fmt.Errorf("cannot decode a message: %v", v)
		}
	}()
	return dbus.DecodeMessage(bytes.NewReader(raw))
}
