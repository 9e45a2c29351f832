package drive_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/plugvault/plugvault/service/api"
)

// CheckPassphrase tells right from wrong without mapping or mounting anything and without
// touching the drive's state; wrong answers come after the growing delay.
func TestCheckPassphrase(t *testing.T) {
	h := newHarness(t)
	h.addDrive("A", uuidA, keyA)
	h.start()
	ctx := context.Background()
	if err := h.m.CheckPassphrase(ctx, uuidA, passA); !errors.Is(err, api.ErrNotPresent) {
		t.Errorf("check of an absent drive = %v", err)
	}
	h.plug(sdb, uuidA, 10, keyA, passA)
	_, n := h.waitState(uuidA, 0, api.StateSafeToRemove)
	h.powerMu.Lock()
	h.afters = nil
	h.powerMu.Unlock()
	for i := range 3 {
		if err := h.m.CheckPassphrase(ctx, uuidA, []byte("wrong")); !errors.Is(err, api.ErrBadPassphrase) {
			t.Fatalf("wrong passphrase %d: %v", i+1, err)
		}
	}
	h.powerMu.Lock()
	afters := slices.Clone(h.afters)
	h.powerMu.Unlock()
	if want := []time.Duration{time.Second, 2 * time.Second}; !slices.Equal(afters, want) {
		t.Errorf("wrong passphrases answered after %v, want %v", afters, want)
	}
	if err := h.m.CheckPassphrase(ctx, uuidA, passA); err != nil {
		t.Fatalf("right passphrase: %v", err)
	}
	if got := len(h.pub.statuses(uuidA)); got != n {
		t.Errorf("the checks published %d statuses", got-n)
	}
	if h.sys.count("test-key") != 4 || h.sys.count("open") != 1 || h.sys.count("mount") != 1 {
		t.Errorf("test-key %d, open %d, mount %d: want 4 tests and only the backup's open and mount",
			h.sys.count("test-key"), h.sys.count("open"), h.sys.count("mount"))
	}
	h.sys.assertClean(t)
}

// An impostor's header and an unrecorded drive's are never given the passphrase.
func TestCheckPassphraseNeverTriesAnImpostor(t *testing.T) {
	for _, c := range []struct {
		name       string
		unrecorded bool
		want       string
	}{
		{"impostor", false, "claims to be the drive but is not"},
		{"unrecorded", true, "identity has not been recorded yet"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			h.addDrive("A", uuidA, nil)
			if c.unrecorded {
				h.cfg.Drives[0].Fingerprint = ""
			}
			h.start()
			fp := impostorFP(uuidA)
			if c.unrecorded {
				fp = genuineFP(uuidA)
			}
			h.sys.insertWithFP("/dev/sdb", uuidA, fp, passB)
			h.send(stick("add", sdb, uuidA, 10))
			h.waitState(uuidA, 0, api.StateFailed)
			err := h.m.CheckPassphrase(context.Background(), uuidA, passB)
			if !errors.Is(err, api.ErrFailed) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("check = %v", err)
			}
			if n := h.sys.count("test-key"); n != 0 {
				t.Errorf("the passphrase was tried %d times", n)
			}
		})
	}
}
