package daemon

import (
	"context"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
)

// ConnectBus connects the daemon to the bus at address with api.DialBus, which does not
// negotiate UNIX fd passing (see there why), and installs CloseUnixFDs as a second line should
// fds ever arrive.
func ConnectBus(ctx context.Context, address string, opts ...dbus.ConnOption) (*dbus.Conn, error) {
	opts = append(opts, dbus.WithIncomingInterceptor(CloseUnixFDs))
	return api.DialBus(ctx, address, opts...)
}
