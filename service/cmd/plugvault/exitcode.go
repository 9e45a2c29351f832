package main

import (
	"context"
	"errors"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
)

// Exit codes, documented in doc.go and `plugvault help exit-codes`. Scripts rely on them: never
// renumber, only add.
const (
	exitOK            = 0
	exitFailed        = 1   // the operation failed (the message says why); verify found problems
	exitUsage         = 2   // bad command line, unknown or ambiguous drive, invalid argument
	exitNotAuthorized = 3   // polkit said no, or authentication was needed/dismissed
	exitBusy          = 4   // the drive is doing something else right now
	exitNotPresent    = 5   // the drive is not plugged in
	exitBadPassphrase = 6   // the passphrase or keyfile does not unlock the drive
	exitNotFound      = 7   // no such drive, snapshot or path
	exitNoService     = 8   // plugvaultd is not running or the system bus is unreachable
	exitCancelled     = 130 // interrupted (Ctrl-C), cancelled, or a confirmation was declined
)

// usageError is a bad command line: the message is printed with a hint to --help.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: sprintf(format, args...)}
}

// errNoService marks a failure to reach plugvaultd at all.
var errNoService = errors.New("plugvaultd is not reachable")

// errProblems marks a verify that ran and found mismatches.
var errProblems = errors.New("problems found")

// exitCode is the one place that maps an error to the process exit code.
func exitCode(err error) int {
	var uerr *usageError
	var derr dbus.Error
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &uerr), errors.Is(err, api.ErrInvalidArgument):
		return exitUsage
	case errors.Is(err, api.ErrNotAuthorized), errors.Is(err, api.ErrNotAuthorizedCanObtain),
		errors.Is(err, api.ErrNotAuthorizedDismissed):
		return exitNotAuthorized
	case errors.Is(err, api.ErrBusy):
		return exitBusy
	case errors.Is(err, api.ErrNotPresent):
		return exitNotPresent
	case errors.Is(err, api.ErrBadPassphrase):
		return exitBadPassphrase
	case errors.Is(err, api.ErrNotFound):
		return exitNotFound
	case errors.Is(err, errNoService),
		errors.As(err, &derr) && (derr.Name == "org.freedesktop.DBus.Error.ServiceUnknown" ||
			derr.Name == "org.freedesktop.DBus.Error.NameHasNoOwner"):
		return exitNoService
	case errors.Is(err, api.ErrCancelled), errors.Is(err, context.Canceled):
		return exitCancelled
	default:
		return exitFailed
	}
}

// errorKind names the exit code for --json error output.
func errorKind(code int) string {
	switch code {
	case exitUsage:
		return "usage"
	case exitNotAuthorized:
		return "not-authorized"
	case exitBusy:
		return "busy"
	case exitNotPresent:
		return "not-present"
	case exitBadPassphrase:
		return "bad-passphrase"
	case exitNotFound:
		return "not-found"
	case exitNoService:
		return "no-service"
	case exitCancelled:
		return "cancelled"
	default:
		return "failed"
	}
}
