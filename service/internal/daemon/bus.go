package daemon

import (
	"context"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
)

// ConnectBus connects the daemon to the bus at address with api.DialBus, which does not
// negotiate UNIX fd passing (see there why) and zeroes the raw bytes of every message once it
// is decoded (they hold the passphrases and keyfiles of Unlock, Enroll and Adopt; the decoded
// copies are zeroed by the handlers). CloseUnixFDs sees every message first, as a second line
// should fds ever arrive.
func ConnectBus(ctx context.Context, address string, opts ...dbus.ConnOption) (*dbus.Conn, error) {
	return api.DialBus(ctx, address, CloseUnixFDs, opts...)
}
