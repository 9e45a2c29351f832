package drive_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/drive"
)

var passB = []byte("the attacker's own passphrase")

// An impostor formatted its own stick with drive A's LUKS UUID and its own passphrase. Whether
// A's keyfile is there or not, the stick is refused: failed with a reason that says so, no
// passphrase prompt, nothing mapped or mounted, no engine run, and its passphrase is never
// tried. The real drive still backs up afterwards.
func TestImpostorIsRefusedWithoutAPrompt(t *testing.T) {
	for _, c := range []struct {
		name    string
		keyfile []byte // nil: missing
	}{
		{"keyfile present", keyA},
		{"keyfile missing", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			h.addDrive("Blue stick", uuidA, c.keyfile)
			h.start()
			h.sys.insertWithFP("/dev/sdb", uuidA, impostorFP(uuidA), passB)
			h.send(stick("add", sdb, uuidA, 10))

			st, _ := h.waitState(uuidA, 0, api.StateFailed)
			if want := "This stick claims to be Blue stick but is not"; !strings.HasPrefix(st.StateReason, want) || st.FailedIn != api.StateUnlocking {
				t.Errorf("reason %q, failed in %q; want it to start with %q, in unlocking", st.StateReason, st.FailedIn, want)
			}
			if slices.Contains(h.pub.states(uuidA), api.StateAwaitingPassphrase) {
				t.Errorf("the impostor was asked for a passphrase: %v", h.pub.states(uuidA))
			}
			if slices.Contains(h.pub.states(uuidA), api.StateMounting) {
				t.Errorf("the impostor got as far as mounting: %v", h.pub.states(uuidA))
			}
			if err := h.m.Unlock(context.Background(), uuidA, passB); !errors.Is(err, api.ErrBusy) {
				t.Errorf("Unlock with the impostor's passphrase = %v, want Busy (not waiting)", err)
			}
			if n := h.sys.count("mount"); n != 0 {
				t.Errorf("%d mounts", n)
			}
			if h.eng.runs() != 0 {
				t.Errorf("the engine ran %d times for the impostor", h.eng.runs())
			}
			h.sys.assertClean(t)
			// Browse, Verify and Restore refuse it too.
			if _, err := h.m.Browse(context.Background(), uuidA, drive.Caller{}); err == nil || !strings.Contains(err.Error(), "claims to be") {
				t.Errorf("Browse of the impostor = %v", err)
			}
			if _, _, err := h.m.Verify(context.Background(), uuidA, "", drive.Caller{}, nil); err == nil {
				t.Error("Verify of the impostor succeeded")
			}
			if n := h.sys.count("mount"); n != 0 {
				t.Errorf("%d mounts after Browse and Verify", n)
			}
			h.powerMu.Lock()
			recorded := slices.Clone(h.recorded)
			h.powerMu.Unlock()
			if len(recorded) != 0 {
				t.Errorf("the impostor's fingerprint was recorded: %v", recorded)
			}

			// The impostor goes, the real drive comes: it backs up (with the passphrase when
			// the keyfile is missing).
			n := len(h.pub.statuses(uuidA))
			h.send(stick("remove", sdb, uuidA, 11))
			h.waitState(uuidA, n, api.StateAbsent)
			n = len(h.pub.statuses(uuidA))
			h.plug(sdc, uuidA, 12, keyA, passA)
			if c.keyfile == nil {
				_, n = h.waitState(uuidA, n, api.StateAwaitingPassphrase)
				if err := h.m.Unlock(context.Background(), uuidA, passA); err != nil {
					t.Fatal(err)
				}
			}
			st, _ = h.waitState(uuidA, n, api.StateSafeToRemove)
			if st.LastResult != api.ResultSuccess || h.eng.runs() != 1 {
				t.Errorf("the real drive after the impostor: %+v, %d runs", st, h.eng.runs())
			}
		})
	}
}

// A drive registered before fingerprints existed: the first keyfile unlock records its
// fingerprint once; until then a stick that the keyfile cannot open is not asked for a
// passphrase (its identity cannot be told from an impostor's).
func TestFingerprintRecordedAtFirstKeyfileUnlock(t *testing.T) {
	h := newHarness(t)
	h.addDrive("A", uuidA, keyA)
	h.cfg.Drives[0].Fingerprint = ""
	h.start()
	h.plug(sdb, uuidA, 10, keyA)
	_, n := h.waitState(uuidA, 0, api.StateSafeToRemove)
	h.send(stick("remove", sdb, uuidA, 11))
	h.plug(sdb, uuidA, 12, keyA)
	h.waitState(uuidA, n, api.StateSafeToRemove)
	h.powerMu.Lock()
	recorded := slices.Clone(h.recorded)
	h.powerMu.Unlock()
	if want := []string{uuidA + " " + genuineFP(uuidA)}; !slices.Equal(recorded, want) {
		t.Errorf("recorded %v, want %v", recorded, want)
	}
	// Recorded now: an impostor is refused as one.
	n = len(h.pub.statuses(uuidA))
	h.send(stick("remove", sdb, uuidA, 13))
	h.sys.insertWithFP("/dev/sdc", uuidA, impostorFP(uuidA), passB)
	h.send(stick("add", sdc, uuidA, 14))
	if st, _ := h.waitState(uuidA, n, api.StateFailed); !strings.Contains(st.StateReason, "claims to be A") {
		t.Errorf("impostor after recording: %q", st.StateReason)
	}
}

func TestUnrecordedDriveWithoutKeyfileIsNotPrompted(t *testing.T) {
	h := newHarness(t)
	h.addDrive("A", uuidA, nil)
	h.cfg.Drives[0].Fingerprint = ""
	h.start()
	h.plug(sdb, uuidA, 10, passA)
	st, _ := h.waitState(uuidA, 0, api.StateFailed)
	if !strings.Contains(st.StateReason, "identity has not been recorded yet") || !strings.Contains(st.StateReason, "plugvault adopt") {
		t.Errorf("reason %q", st.StateReason)
	}
	// Browse and Verify refuse it as well, without asking.
	if _, err := h.m.Browse(context.Background(), uuidA, drive.Caller{}); err == nil || !strings.Contains(err.Error(), "identity has not been recorded yet") {
		t.Errorf("Browse of the unrecorded drive = %v", err)
	}
	if _, _, err := h.m.Verify(context.Background(), uuidA, "", drive.Caller{}, nil); err == nil {
		t.Error("Verify of the unrecorded drive succeeded")
	}
	if slices.Contains(h.pub.states(uuidA), api.StateAwaitingPassphrase) {
		t.Errorf("asked for a passphrase: %v", h.pub.states(uuidA))
	}
	h.sys.assertClean(t)
}

// A stick whose fingerprint is not the recorded one is refused before the keyfile is tried,
// even one the keyfile would open (a drive its owner re-encrypted: adopt it again): root never
// runs the drive's key through a header someone else made.
func TestOtherFingerprintIsRefusedBeforeTheKeyfile(t *testing.T) {
	h := newHarness(t)
	h.addDrive("A", uuidA, keyA)
	h.start()
	h.sys.insertWithFP("/dev/sdb", uuidA, fakeFP("re-encrypted "+uuidA), keyA)
	h.send(stick("add", sdb, uuidA, 10))
	st, _ := h.waitState(uuidA, 0, api.StateFailed)
	if !strings.HasPrefix(st.StateReason, "This stick claims to be A but is not") {
		t.Errorf("reason %q", st.StateReason)
	}
	if n := h.sys.count("open"); n != 0 {
		t.Errorf("the keyfile was tried %d times on a stick with another fingerprint", n)
	}
	h.powerMu.Lock()
	recorded := slices.Clone(h.recorded)
	h.powerMu.Unlock()
	if len(recorded) != 0 {
		t.Errorf("recorded %v", recorded)
	}
	h.sys.assertClean(t)
}
