package udev

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Source is what the drive state machine consumes; *Monitor implements it, tests use fakes.
type Source interface {
	Events() <-chan Event
	Enumerate(ctx context.Context) ([]Event, error)
}

// udevGroup is the netlink multicast group udevd broadcasts processed events to (group 1 is
// the kernel's raw uevents, which lack udev's properties).
const udevGroup = 2

// Default roots; NewMonitorAt takes others (tests, a chroot).
const (
	DefaultSysRoot = "/sys"
	DefaultDBDir   = "/run/udev/data"
)

// Monitor is a subscription to udevd's block-device events.
type Monitor struct {
	logger  *slog.Logger
	sysRoot string
	dbDir   string
	file    *os.File // the netlink socket, nonblocking, in the runtime poller
	events  chan Event
	stop    chan struct{} // closed by Close: stop delivering
	done    chan struct{} // closed when the reader goroutine has exited
	once    sync.Once
}

// NewMonitor subscribes to udevd's events at once (so Enumerate afterwards misses nothing)
// and starts delivering them on Events.
func NewMonitor(logger *slog.Logger) (*Monitor, error) {
	return NewMonitorAt(logger, DefaultSysRoot, DefaultDBDir)
}

// NewMonitorAt is NewMonitor with other sysfs and udev database roots for Enumerate.
func NewMonitorAt(logger *slog.Logger, sysRoot, dbDir string) (*Monitor, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	fd, err := openSocket()
	if err != nil {
		return nil, err
	}
	m := &Monitor{
		logger:  logger,
		sysRoot: sysRoot,
		dbDir:   dbDir,
		file:    os.NewFile(uintptr(fd), "udev-netlink"),
		events:  make(chan Event, 64),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go m.loop()
	return m, nil
}

// openSocket creates the netlink socket: SO_PASSCRED and the BPF filter before bind, so no
// message is ever received without credentials or unfiltered.
func openSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return -1, fmt.Errorf("cannot open udev netlink socket: %w", err)
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("cannot %s on udev netlink socket: %w", what, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		return fail("enable SO_PASSCRED", err)
	}
	// udevd bursts events (a hub with several disks); a large buffer avoids ENOBUFS. FORCE needs
	// CAP_NET_ADMIN; fall back to the capped size.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20); err != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	}
	prog := blockFilter()
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}); err != nil {
		return fail("attach the block filter", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1 << (udevGroup - 1)}); err != nil {
		return fail("bind to group 2", err)
	}
	return fd, nil
}

// blockFilter is the classic BPF program libudev's udev_monitor_filter_update builds for one
// subsystem match ("block", no devtype). Unlike libudev it also drops messages without the
// udev magic (libudev passes them for kernel-group sockets; on group 2 they are never ours).
// BPF_ABS loads are big-endian, matching the network-order magic and hash.
func blockFilter() []unix.SockFilter {
	return []unix.SockFilter{
		/* 0 */ {Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: offMagic},
		/* 1 */ {Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 1, Jf: 0, K: udevMonitorMagic},
		/* 2 */ {Code: unix.BPF_RET | unix.BPF_K, K: 0}, // not a udevd message: drop
		/* 3 */ {Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: offSubsystemHash},
		/* 4 */ {Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: hashBlock},
		/* 5 */ {Code: unix.BPF_RET | unix.BPF_K, K: 0xffffffff}, // block: pass whole message
		/* 6 */ {Code: unix.BPF_RET | unix.BPF_K, K: 0}, // other subsystem: drop
	}
}

// Events delivers events until Close; then it is closed.
func (m *Monitor) Events() <-chan Event { return m.events }

// Enumerate lists the block devices present now that udevd has processed (see Enumerate).
func (m *Monitor) Enumerate(ctx context.Context) ([]Event, error) {
	return Enumerate(ctx, m.sysRoot, m.dbDir)
}

// Close stops the monitor, waits for its goroutine and closes Events.
func (m *Monitor) Close() error {
	var err error
	m.once.Do(func() {
		close(m.stop)
		err = m.file.Close() // wakes a blocked read with os.ErrClosed
		<-m.done
	})
	return err
}

func (m *Monitor) loop() {
	defer close(m.done)
	defer close(m.events)
	rc, err := m.file.SyscallConn()
	if err != nil {
		m.logger.Error("cannot read udev events", "error", err)
		return
	}
	buf := make([]byte, maxMessageSize+1) // one spare byte: a full buffer means truncation
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred)*2)
	for {
		var n, oobn, flags int
		var from unix.Sockaddr
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, oobn, flags, from, rerr = unix.Recvmsg(int(fd), buf, oob, 0)
			return rerr != unix.EAGAIN
		})
		if err != nil { // closed
			return
		}
		if rerr != nil {
			if errors.Is(rerr, unix.ENOBUFS) {
				m.logger.Warn("udev events were lost (receive buffer overflow)")
				continue
			}
			// Anything else is not transient (EINTR is restarted by SA_RESTART): stop rather
			// than spin. Closing Events tells the consumer that monitoring ended.
			m.logger.Error("cannot receive udev events; monitor stopped", "error", rerr)
			return
		}
		ev, err := receive(buf[:n], n > maxMessageSize, flags, from, oob[:oobn])
		if err != nil {
			m.logger.Warn("dropped udev message", "reason", err)
			continue
		}
		select {
		case m.events <- ev:
		case <-m.stop:
			return
		}
	}
}

// errUntrusted marks a message dropped by the trust checks.
var errUntrusted = errors.New("untrusted")

// receive applies libudev's socket-level trust checks to one received datagram, then parses it.
// It is separate from the socket so the checks can be tested with synthesized credentials.
func receive(msg []byte, overflow bool, flags int, from unix.Sockaddr, oob []byte) (Event, error) {
	if overflow || flags&unix.MSG_TRUNC != 0 {
		return Event{}, fmt.Errorf("%w: truncated message", errUntrusted)
	}
	if flags&unix.MSG_CTRUNC != 0 {
		return Event{}, fmt.Errorf("%w: truncated credentials", errUntrusted)
	}
	snl, ok := from.(*unix.SockaddrNetlink)
	if !ok {
		return Event{}, fmt.Errorf("%w: sender is not a netlink address", errUntrusted)
	}
	if snl.Groups == 0 {
		// libudev accepts unicast only from a configured trusted sender; we have none.
		return Event{}, fmt.Errorf("%w: unicast message from port %d", errUntrusted, snl.Pid)
	}
	if snl.Groups != 1<<(udevGroup-1) {
		return Event{}, fmt.Errorf("%w: message for groups %#x, not the udev group", errUntrusted, snl.Groups)
	}
	cred, err := credentials(oob)
	if err != nil {
		return Event{}, fmt.Errorf("%w: %v", errUntrusted, err)
	}
	if cred.Uid != 0 {
		return Event{}, fmt.Errorf("%w: sender uid %d is not 0 (pid %d)", errUntrusted, cred.Uid, cred.Pid)
	}
	return Parse(msg)
}

// credentials returns the SCM_CREDENTIALS of a message; it is an error if there are none.
func credentials(oob []byte) (*unix.Ucred, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("bad control message: %v", err)
	}
	for i := range msgs {
		if msgs[i].Header.Level == unix.SOL_SOCKET && msgs[i].Header.Type == unix.SCM_CREDENTIALS {
			return unix.ParseUnixCredentials(&msgs[i])
		}
	}
	return nil, errors.New("no sender credentials")
}
