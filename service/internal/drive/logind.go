package drive

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"

	"github.com/godbus/dbus/v5"
)

const (
	logindDest  = "org.freedesktop.login1"
	logindPath  = "/org/freedesktop/login1"
	logindIface = "org.freedesktop.login1.Manager"
)

// noLogind is the Logind of a system without logind: no inhibitor, no sleep signal.
type noLogind struct{}

func (noLogind) Inhibit(what, who, why, mode string) (io.Closer, error) { return nopCloser{}, nil }
func (noLogind) PrepareForSleep() <-chan bool                           { return nil }

type nopCloser struct{}

func (nopCloser) Close() error { return nil }

// busLogind talks to logind on the system bus.
type busLogind struct {
	conn  *dbus.Conn
	log   *slog.Logger
	once  sync.Once
	ch    chan bool
	owner string // logind's unique name: only its PrepareForSleep counts
}

// NewLogind connects to logind on the system bus. Without a system bus or without logind it
// logs a notice and returns a Logind that takes no inhibitor and never reports sleep.
func NewLogind(logger *slog.Logger) Logind {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		logger.Info("no system bus: backups do not hold off suspend", "err", err)
		return noLogind{}
	}
	var owner string
	if err := conn.BusObject().Call("org.freedesktop.DBus.GetNameOwner", 0, logindDest).Store(&owner); err != nil {
		logger.Info("logind is not running: backups do not hold off suspend", "err", err)
		conn.Close()
		return noLogind{}
	}
	return &busLogind{conn: conn, log: logger, owner: owner}
}

// Inhibit calls org.freedesktop.login1.Manager.Inhibit and returns the lock's fd.
func (l *busLogind) Inhibit(what, who, why, mode string) (io.Closer, error) {
	var fd dbus.UnixFD
	err := l.conn.Object(logindDest, logindPath).Call(logindIface+".Inhibit", 0, what, who, why, mode).Store(&fd)
	if err != nil {
		return nil, fmt.Errorf("cannot take a %s inhibitor: %w", what, err)
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
