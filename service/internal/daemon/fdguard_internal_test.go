package daemon

import (
	"testing"

	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"
)

func newFD(t *testing.T) dbus.UnixFD {
	t.Helper()
	fds := make([]int, 2)
	if err := unix.Pipe2(fds, unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	unix.Close(fds[1])
	return dbus.UnixFD(fds[0])
}

func isOpen(fd dbus.UnixFD) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil
}

// newFD's fds are closed by the guard under test; a test that keeps one open closes it itself
// (a cleanup that closed them all could close a number that was reused meanwhile).

// Every shape in which godbus hands over a received fd is found and closed.
func TestCloseUnixFDsFindsEveryShape(t *testing.T) {
	top, inStruct, inVariant, inSlice, inMap, inNested := newFD(t), newFD(t), newFD(t), newFD(t), newFD(t), newFD(t)
	msg := &dbus.Message{
		Headers: map[dbus.HeaderField]dbus.Variant{dbus.FieldUnixFDs: dbus.MakeVariant(uint32(6))},
		Body: []any{
			top,
			[]any{"s", inStruct},
			map[string]dbus.Variant{"k": dbus.MakeVariant(inVariant)},
			[]dbus.UnixFD{inSlice},
			map[string]dbus.UnixFD{"k": inMap},
			[]any{[]any{dbus.MakeVariant([]any{inNested})}},
		},
	}
	CloseUnixFDs(msg)
	for name, fd := range map[string]dbus.UnixFD{"top": top, "struct": inStruct, "variant": inVariant, "slice": inSlice, "map": inMap, "nested": inNested} {
		if isOpen(fd) {
			t.Errorf("%s fd %d is still open", name, fd)
		}
	}
	if msg.Body[0] != dbus.UnixFD(-1) || msg.Body[3].([]dbus.UnixFD)[0] != -1 {
		t.Errorf("closed fds were not cleared: %v", msg.Body)
	}
}

// Without fds in the header, numbers in the body are just numbers: nothing is closed.
func TestCloseUnixFDsNeedsTheHeader(t *testing.T) {
	fd := newFD(t)
	CloseUnixFDs(&dbus.Message{Headers: map[dbus.HeaderField]dbus.Variant{}, Body: []any{fd}})
	if !isOpen(fd) {
		t.Error("an fd number in a message without fds was closed")
	}
	unix.Close(int(fd))
	CloseUnixFDs(nil)
}
