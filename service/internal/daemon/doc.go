// Package daemon exports plugvaultd's objects on the bus: the Manager and one Drive per enrolled
// drive. Every method that changes anything follows one pattern: authorize with polkit (subject:
// the caller's unique bus name), then validate the arguments, then delegate to a Backend or an
// Enroller. Properties are read-only and published through Publisher; every change is a
// PropertiesChanged signal.
//
// Each call runs on its own goroutine (godbus) with a context derived from the daemon's root
// context, which Close cancels; an interactive polkit check gets minutes, and is cancelled in
// polkitd when the context ends. Go errors become D-Bus errors in one place
// (api.ToDBusError). Secrets arrive as byte arrays and are zeroed when the call returns.
//
// The daemon connects with ConnectBus, which does not negotiate UNIX fd passing: the contract
// takes no fds, and godbus v5.2.4 leaks the fds of unhandled messages and crashes on arrays of
// fds. CloseUnixFDs, an incoming-message interceptor, closes any fd that arrives anyway.
package daemon
