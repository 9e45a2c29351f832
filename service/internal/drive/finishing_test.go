package drive_test

import (
	"slices"
	"testing"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/drive"
)

// The engine's finishing phase (sync, promote, prune) is published when it begins, while the
// engine still runs, and only once.
func TestFinishingIsPublishedAsItBegins(t *testing.T) {
	h := newHarness(t)
	h.addDrive("A", uuidA, keyA)
	h.eng.progress = []drive.Progress{{Phase: "copying", FilesDone: 1, FilesTotal: 2}, {Phase: "finishing"}}
	g := h.sys.block("engine", 1)
	h.start()
	h.plug(sdb, uuidA, 10, keyA)
	g.waitEntered(t)
	if st := h.pub.last(uuidA); st.State != api.StateFinishing {
		t.Errorf("while the engine finishes, the drive is %s", st.State)
	}
	g.open()
	h.waitState(uuidA, 0, api.StateSafeToRemove)
	if got := h.pub.states(uuidA); !slices.Equal(got, happyPath) {
		t.Errorf("states = %v, want %v", got, happyPath)
	}
}
