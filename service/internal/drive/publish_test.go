package drive_test

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/config"
	"github.com/plugvault/plugvault/service/internal/drive"
)

// TestPublisherRunsWithoutTheLock: the Publisher is called with no lock of the Manager held. Its
// every call here calls back into the Manager with methods that take the Manager's lock, as the
// daemon may when it answers a property read; had the lock been held, the first callback would
// never return and the drive would never reach safe-to-remove.
func TestPublisherRunsWithoutTheLock(t *testing.T) {
	h := newHarness(t)
	h.addDrive("Blue stick", uuidA, keyA)
	h.eng.progress = []drive.Progress{{FilesDone: 1, FilesTotal: 2, BytesDone: 1, BytesTotal: 2}}
	h.start()
	ctx := context.Background()
	var entered, completed atomic.Int64
	prev := h.pub.check
	h.pub.check = func(uuid string, st api.DriveStatus) {
		prev(uuid, st)
		entered.Add(1)
		if _, err := h.m.ListSnapshots(ctx, uuid); err != nil {
			t.Errorf("ListSnapshots from the publisher: %v", err)
		}
		if _, err := h.m.RunAs(ctx, uuid); err != nil {
			t.Errorf("RunAs from the publisher: %v", err)
		}
		completed.Add(1)
	}

	h.plug(sdb, uuidA, 100, keyA)
	h.waitState(uuidA, 0, api.StateSafeToRemove)
	if got := h.pub.states(uuidA); !slices.Equal(got, happyPath) {
		t.Errorf("states = %v, want %v", got, happyPath)
	}
	n := len(h.pub.statuses(uuidA))
	if _, err := h.m.Browse(ctx, uuidA, drive.Caller{UID: 1000}); err != nil {
		t.Fatal(err)
	}
	if err := h.m.Eject(ctx, uuidA, true); err != nil {
		t.Fatal(err)
	}
	if st := h.pub.last(uuidA); st.State != api.StateSafeToRemove {
		t.Errorf("after Eject returned: %+v", st)
	}
	// A drive enrolled while the daemon runs, and forgotten again.
	uuidB := "2222bbbb-0000-4000-8000-000000000002"
	if err := h.m.AddDrive(config.Drive{Name: "Green stick", LuksUUID: uuidB}); err != nil {
		t.Fatal(err)
	}
	if err := h.m.RemoveDrive(uuidB); err != nil {
		t.Fatal(err)
	}
	if e, c := entered.Load(), completed.Load(); e == 0 || c != e || int(c) < len(h.pub.statuses(uuidA))-1-n {
		t.Errorf("publisher callbacks: %d entered, %d completed", e, c)
	}
}

// TestPublicationsKeepTheirOrder: while one goroutine delivers a drive's status, a later status
// of the same drive made by another goroutine waits for it and is delivered after it; the call
// that made it returns only once it is delivered.
func TestPublicationsKeepTheirOrder(t *testing.T) {
	h := newHarness(t)
	h.addDrive("Blue stick", uuidA, keyA)
	first := drive.Progress{FilesDone: 1, FilesTotal: 10, BytesDone: 1, BytesTotal: 10}
	second := drive.Progress{FilesDone: 2, FilesTotal: 10, BytesDone: 2, BytesTotal: 10}
	entered, release := make(chan struct{}), make(chan struct{})
	queued := make(chan struct{}, 1)
	h.eng.onRun = func(job drive.Job, progress func(drive.Progress)) {
		firstDone, secondDone := make(chan struct{}), make(chan struct{})
		go func() { progress(first); close(firstDone) }()
		<-entered // the first is being delivered, and the publisher holds it
		h.clock.Advance(time.Second)
		go func() { progress(second); close(secondDone) }()
		<-queued
		select {
		case <-secondDone:
			t.Error("the second progress call returned while the first status was still being delivered")
		default:
		}
		close(release)
		<-firstDone
		<-secondDone
	}
	h.start()
	h.m.SetOnQueue(func(uuid string, st api.DriveStatus) {
		if st.FilesDone == second.FilesDone {
			queued <- struct{}{}
		}
	})
	prev := h.pub.check
	h.pub.check = func(uuid string, st api.DriveStatus) {
		prev(uuid, st)
		if st.FilesDone == first.FilesDone {
			close(entered)
			<-release
		}
	}
	h.plug(sdb, uuidA, 100, keyA)
	h.waitState(uuidA, 0, api.StateSafeToRemove)
	var done []uint64
	for _, st := range h.pub.statuses(uuidA) {
		if st.FilesDone != 0 {
			done = append(done, st.FilesDone)
		}
	}
	if !slices.Equal(done, []uint64{first.FilesDone, second.FilesDone}) {
		t.Errorf("progress published in the order %v", done)
	}
}
