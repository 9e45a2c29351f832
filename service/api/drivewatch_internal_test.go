package api

import (
	"testing"

	"github.com/godbus/dbus/v5"
)

// queueSignals takes every signal at once, however slow the reader, and hands them on in
// order; when its input closes it hands on the rest, then closes.
func TestQueueSignalsKeepsOrder(t *testing.T) {
	in := make(chan *dbus.Signal) // unbuffered: each send returns only once the queue took it
	out := make(chan *dbus.Signal)
	go queueSignals(t.Context(), in, out)
	const n = 1000
	for i := 1; i <= n; i++ {
		in <- &dbus.Signal{Sequence: dbus.Sequence(i)}
	}
	close(in)
	got := 0
	for s := range out {
		got++
		if s.Sequence != dbus.Sequence(got) {
			t.Fatalf("signal %d came as number %d", s.Sequence, got)
		}
	}
	if got != n {
		t.Errorf("%d signals came out, %d went in", got, n)
	}
}
