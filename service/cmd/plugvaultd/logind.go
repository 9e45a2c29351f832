package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/plugvault/plugvault/service/internal/drive"
)

const (
	logindDest  = "org.freedesktop.login1"
	logindPath  = "/org/freedesktop/login1"
	logindIface = "org.freedesktop.login1.Manager"
)

// busLogind talks to logind on the system bus. It never keeps a connection that accepts UNIX
// fds: any local user may send a unicast signal to any connection, and godbus v5.2.4 leaks
// the fds such messages carry and panics on an array of fds (see api.DialBus). PrepareForSleep
// arrives on the daemon's own connection, which accepts no fds; each inhibitor is taken on a
// connection of its own that lives for that one call (see inhibit).
type busLogind struct {
	conn    *dbus.Conn // the daemon's connection (api.DialBus): signals only
	address string     // the bus address, for the inhibitor's connection
	log     *slog.Logger
	once    sync.Once
	ch      chan bool
	owner   string // logind's unique name: only its PrepareForSleep counts
}

// inhibitTimeout bounds one Inhibit call, connection included.
const inhibitTimeout = 25 * time.Second

// newLogind returns the Logind of the system bus. conn is the daemon's connection (it must not
// accept fds: api.DialBus), on which PrepareForSleep is received; address is the bus's
// address, to which each Inhibit connects anew. Without a connection or without logind it
// logs a notice and returns nil: the drive manager then takes no inhibitor and never hears
// of sleep.
func newLogind(conn *dbus.Conn, address string, logger *slog.Logger) drive.Logind {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if conn == nil {
		logger.Info("no system bus: backups do not hold off suspend")
		return nil
	}
	var owner string
	if err := conn.BusObject().Call("org.freedesktop.DBus.GetNameOwner", 0, logindDest).Store(&owner); err != nil {
		logger.Info("logind is not running: backups do not hold off suspend", "err", err)
		return nil
	}
	return &busLogind{conn: conn, address: address, log: logger, owner: owner}
}

// Inhibit calls org.freedesktop.login1.Manager.Inhibit on a connection of its own and returns
// the lock's fd, which outlives that connection.
func (l *busLogind) Inhibit(what, who, why, mode string) (io.Closer, error) {
	ctx, cancel := context.WithTimeout(context.Background(), inhibitTimeout)
	defer cancel()
	fd, err := inhibit(ctx, l.address, what, who, why, mode)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), "logind-inhibitor"), nil
}

// PrepareForSleep subscribes to the PrepareForSleep signal. The match rule only filters
// broadcasts: a signal sent to this connection by name reaches it whatever the rule says (the
// default system bus policy lets anyone send signals), so the sender is checked against
// logind's unique name, followed through NameOwnerChanged when logind restarts.
func (l *busLogind) PrepareForSleep() <-chan bool {
	l.once.Do(func() {
		l.ch = make(chan bool, 4)
		if err := l.conn.AddMatchSignal(
			dbus.WithMatchSender(logindDest),
			dbus.WithMatchInterface(logindIface),
			dbus.WithMatchMember("PrepareForSleep"),
			dbus.WithMatchObjectPath(logindPath),
		); err != nil {
			l.log.Warn("cannot watch for suspend", "err", err)
			return
		}
		if err := l.conn.AddMatchSignal(
			dbus.WithMatchSender("org.freedesktop.DBus"),
			dbus.WithMatchMember("NameOwnerChanged"),
			dbus.WithMatchArg(0, logindDest),
		); err != nil {
			l.log.Warn("cannot follow logind restarts; suspend is not noticed after one", "err", err)
		}
		// The connection is shared: this channel sees every signal it receives.
		sigs := make(chan *dbus.Signal, 16)
		l.conn.Signal(sigs)
		go func() {
			defer close(l.ch)
			owner := l.owner
			for s := range sigs {
				if s.Sender == "org.freedesktop.DBus" && s.Name == "org.freedesktop.DBus.NameOwnerChanged" && len(s.Body) == 3 {
					if name, _ := s.Body[0].(string); name == logindDest {
						owner, _ = s.Body[2].(string)
					}
					continue
				}
				if s.Name != logindIface+".PrepareForSleep" || s.Path != logindPath || len(s.Body) != 1 {
					continue
				}
				if s.Sender != owner {
					// Debug: anyone can send these, and a flood must not crowd the journal.
					l.log.Debug("ignoring a PrepareForSleep signal that logind did not send", "sender", s.Sender)
					continue
				}
				if b, ok := s.Body[0].(bool); ok {
					l.ch <- b
				}
			}
		}()
	})
	return l.ch
}
