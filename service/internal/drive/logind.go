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
	conn *dbus.Conn
	log  *slog.Logger
	once sync.Once
	ch   chan bool
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
	return &busLogind{conn: conn, log: logger}
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

// PrepareForSleep subscribes to the PrepareForSleep signal.
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
		sigs := make(chan *dbus.Signal, 16)
		l.conn.Signal(sigs)
		go func() {
			defer close(l.ch)
			for s := range sigs {
				if s.Name != logindIface+".PrepareForSleep" || s.Path != logindPath || len(s.Body) != 1 {
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
