package drive_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/drive"
)

// TestRandomSequences drives one drive through random sequences of udev events and calls
// (fixed seeds, so a failure can be replayed) and checks the invariants that matter most:
// nothing hangs, safe-to-remove and absent are published only when nothing is mapped or
// mounted (the harness checks every publication), nothing is mounted but a mapping our key
// opened (the fake kernel refuses it), one run at a time, and once the stick is gone no mapping
// and no mount is left.
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
					answerPassphrase(h, r, func() { h.m.Browse(ctx, uuidA, drive.Caller{}) })
				case 9:
					answerPassphrase(h, r, func() {
						h.m.Verify(ctx, uuidA, "", drive.Caller{UID: 1000, GID: 1000, User: "alice"}, nil)
					})
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
			if n := h.eng.mostAtOnce(); n > 1 {
				t.Errorf("%d engine runs at once", n)
			}
		})
	}
}

// answerPassphrase runs call (a Browse or Verify) and, each time the drive asks for its
// passphrase meanwhile, gives it or cancels, at random.
func answerPassphrase(h *harness, r *rand.Rand, call func()) {
	from := len(h.pub.statuses(uuidA))
	done := make(chan struct{})
	go func() {
		defer close(done)
		call()
	}()
	for h.pub.awaitsPassphrase(uuidA, &from, done) {
		if r.IntN(2) == 0 {
			h.m.Unlock(context.Background(), uuidA, passA)
		} else {
			h.m.Cancel(context.Background(), uuidA)
		}
	}
}

// TestRandomInterleavings is TestRandomSequences with slow operations: random cryptsetup,
// mount and engine calls block until a later step releases them, and the D-Bus calls run
// concurrently, as they do in the daemon.
func TestRandomInterleavings(t *testing.T) {
	ops := []string{"uuid", "open", "mount", "unmount", "close", "engine", "list", "verify"}
	for seed := range uint64(60) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 11))
			h := newHarness(t)
			key := keyA
			if r.IntN(3) == 0 {
				key = nil
			}
			h.addDrive("A", uuidA, key)
			h.start()
			// Cancelled once the steps are done: a Browse or Verify may still wait for a
			// passphrase nobody gives.
			ctx, cancelCalls := context.WithCancel(context.Background())
			defer cancelCalls()
			var calls sync.WaitGroup
			call := func(f func()) {
				calls.Add(1)
				go func() { defer calls.Done(); f() }()
			}
			var gates []*gate
			seq := uint64(1)
			paths := []string{sdb, sdc}
			for range 40 {
				seq++
				p := paths[r.IntN(2)]
				switch r.IntN(12) {
				case 0, 1:
					h.sys.insert("/dev/"+p[len(p)-3:], uuidA, keyA, passA)
					h.send(stick("add", p, uuidA, seq))
				case 2:
					h.send(stick("remove", p, uuidA, seq))
				case 3:
					op := ops[r.IntN(len(ops))]
					gates = append(gates, h.sys.block(op, h.sys.count(op)+1))
				case 4:
					if len(gates) > 0 {
						i := r.IntN(len(gates))
						gates[i].open()
						gates = append(gates[:i], gates[i+1:]...)
					}
				case 5:
					call(func() { h.m.BackupNow(ctx, uuidA) })
				case 6:
					call(func() { h.m.Cancel(ctx, uuidA) })
				case 7:
					call(func() { h.m.Eject(ctx, uuidA, true) })
				case 8:
					call(func() { h.m.Unlock(ctx, uuidA, passA) })
				case 9:
					call(func() { h.m.Unlock(ctx, uuidA, []byte("wrong")) })
				case 10:
					call(func() { h.m.Browse(ctx, uuidA, drive.Caller{}) })
				case 11:
					call(func() { h.m.Verify(ctx, uuidA, "", drive.Caller{UID: 1000, GID: 1000, User: "alice"}, nil) })
				}
			}
			for _, g := range gates {
				g.open()
			}
			cancelCalls()
			calls.Wait()
			n := len(h.pub.statuses(uuidA))
			h.send(stick("remove", sdb, uuidA, seq+1))
			h.send(stick("remove", sdc, uuidA, seq+2))
			h.pub.waitFor(t, uuidA, n-1, "absent at the end", func(s api.DriveStatus) bool {
				return s.State == api.StateAbsent && !s.Present
			})
			h.sys.assertClean(t)
			if n := h.eng.mostAtOnce(); n > 1 {
				t.Errorf("%d engine runs at once", n)
			}
		})
	}
}
