package drive_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/daemon"
)

// TestRandomSequences drives one drive through random sequences of udev events and calls
// (fixed seeds, so a failure can be replayed) and checks the invariants that matter most:
// nothing hangs, and once the stick is gone no mapping and no mount is left.
func TestRandomSequences(t *testing.T) {
	for seed := range uint64(100) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 7))
			h := newHarness(t)
			key := keyA
			if r.IntN(3) == 0 {
				key = nil // passphrase only
			}
			h.addDrive("A", uuidA, key)
			h.start()
			ctx := context.Background()
			seq := uint64(1)
			paths := []string{sdb, sdc}
			for range 50 {
				seq++
				p := paths[r.IntN(2)]
				switch r.IntN(10) {
				case 0, 1:
					h.sys.insert("/dev/"+p[len(p)-3:], uuidA, keyA, passA)
					h.send(stick("add", p, uuidA, seq))
				case 2:
					h.send(stick("remove", p, uuidA, seq))
				case 3:
					h.send(stick("change", p, uuidA, seq))
				case 4:
					h.m.BackupNow(ctx, uuidA)
				case 5:
					h.m.Cancel(ctx, uuidA)
				case 6:
					h.m.Eject(ctx, uuidA, r.IntN(2) == 0)
				case 7:
					pass := passA
					if r.IntN(2) == 0 {
						pass = []byte("wrong")
					}
					h.m.Unlock(ctx, uuidA, pass)
				case 8:
					h.m.Browse(ctx, uuidA, daemon.Caller{})
				case 9:
					h.m.Verify(ctx, uuidA, "")
				}
			}
			n := len(h.pub.statuses(uuidA))
			h.send(stick("remove", sdb, uuidA, seq+1))
			h.send(stick("remove", sdc, uuidA, seq+2))
			st, _ := h.pub.waitFor(t, uuidA, n-1, "absent at the end", func(s api.DriveStatus) bool {
				return s.State == api.StateAbsent && !s.Present
			})
			if st.State != api.StateAbsent {
				t.Fatalf("final %+v", st)
			}
			h.sys.assertClean(t)
		})
	}
}
