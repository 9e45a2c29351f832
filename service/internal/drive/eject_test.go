package drive_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/usbpower"
)

// Eject locks the drive whatever else is on the stick, but when the power-off is refused
// because something else still uses the stick (another partition mounted), the drive is not
// reported safe to remove and the caller hears why.
func TestEjectDoesNotSaySafeWhileTheStickIsInUse(t *testing.T) {
	h := newHarness(t)
	h.addDrive("A", uuidA, keyA)
	h.start()
	h.plug(sdb, uuidA, 10, keyA)
	_, n := h.waitState(uuidA, 0, api.StateSafeToRemove)
	// The backup mounted the drive for its run_as user (only they may reach the mount).
	if log := h.sys.callLog(); !slices.Contains(log, "mount "+base+"/"+uuidA+"/drive ro=false for=u") {
		t.Errorf("calls %q, want the mount for run_as u", log)
	}
	h.powerMu.Lock()
	h.powerErr = &usbpower.InUseError{Disk: "sdb", Uses: []string{"sdb2 is mounted at /media/alice/STICK"}}
	h.powerMu.Unlock()

	err := h.m.Eject(context.Background(), uuidA, true)
	if !errors.Is(err, api.ErrBusy) || !strings.Contains(err.Error(), "sdb2 is mounted at /media/alice/STICK") {
		t.Fatalf("Eject = %v, want busy naming the other mount", err)
	}
	h.sys.assertClean(t) // locked all the same
	st := h.pub.last(uuidA)
	if st.State == api.StateSafeToRemove || !strings.Contains(st.StateReason, "/media/alice/STICK") {
		t.Errorf("after a refused power-off: %+v", st)
	}
	for _, s := range h.pub.statuses(uuidA)[n:] {
		if s.State == api.StateSafeToRemove {
			t.Errorf("safe-to-remove published although the stick is in use: %+v", s)
		}
	}

	// Any other power-off failure (not on USB, no port control) leaves a locked drive that
	// is safe to pull.
	h.powerMu.Lock()
	h.powerErr = usbpower.ErrNotSupported
	h.powerMu.Unlock()
	if err := h.m.Eject(context.Background(), uuidA, true); err != nil {
		t.Fatal(err)
	}
	if st := h.pub.last(uuidA); st.State != api.StateSafeToRemove {
		t.Errorf("after an unsupported power-off: %+v", st)
	}
}
