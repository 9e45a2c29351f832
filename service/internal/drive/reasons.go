package drive

import (
	"errors"
	"fmt"
	"strings"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/backup"
)

// stillInUse is the reason shown when teardown could not unmount or lock the drive.
const stillInUse = "The drive is still in use and could not be locked — close the programs using it, then eject it"

// userError is a failure with a reason for the user (StateReason).
type userError struct {
	reason string
	err    error
	notIO  bool // not caused by a failing device (so not by a pulled stick)
}

func (e *userError) Error() string { return e.err.Error() }
func (e *userError) Unwrap() error { return e.err }

func failf(err error, reason string, args ...any) error {
	return &userError{reason: fmt.Sprintf(reason, args...), err: err}
}

// engineFailed is the reason for a failed engine run of drive name.
func engineFailed(name string, err error) error {
	var full *backup.FullError
	if errors.As(err, &full) {
		return &userError{err: err, notIO: true, reason: fmt.Sprintf("%s is full: this backup needs about %s more than the drive has free, "+
			"even after deleting old snapshots — use a bigger drive or exclude large folders", name, api.FormatBytes(full.Short))}
	}
	return failf(err, "The backup failed: %v", err)
}

// groupDigits writes n with thousands separators: 8310 → "8,310".
func groupDigits(n uint64) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func plural(n uint64, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return groupDigits(n) + " " + word + "s"
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
