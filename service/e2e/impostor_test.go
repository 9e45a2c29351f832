package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/e2e/agentproto"
	"github.com/plugvault/plugvault/service/internal/logging"
)

// TestImpostor: another user formats a stick of his own with an enrolled drive's LUKS UUID
// (public: it is in the drive's object path) and his own passphrase. Plugged in, it is refused
// as an impostor — failed with a reason that says so, never asked for a passphrase, his
// passphrase refused by Unlock, nothing mapped or mounted, a warning with its serial in the
// journal — and not one file of the source reaches it. The real drive still backs up.
func TestImpostor(t *testing.T) {
	env := vmEnv(t)
	tl, ctx := scenario(t, env)
	needDaemon(t, ctx, env, tl)
	real, fake := env.Sticks["trusted"], env.Sticks["impostor"]
	theirs := []byte("the impostor's own passphrase")

	// The attacker's stick: LUKS2 with the real drive's UUID, his passphrase, a filesystem.
	mark := plug(t, ctx, env, tl, fake)
	waitUdev(t, ctx, env, mark, fake, "add")
	dev := stickDevice(t, ctx, env, fake)
	if _, err := env.VM.ExecAs(ctx, 0, theirs, "cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2",
		"--uuid", real.UUID, "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file=-", dev); err != nil {
		t.Fatal(err)
	}
	if _, err := env.VM.ExecAs(ctx, 0, theirs, "cryptsetup", "open", "--key-file=-", dev, "e2eimpostor"); err != nil {
		t.Fatal(err)
	}
	if _, err := env.VM.Shell(ctx, "mkfs.ext4 -q -L plugvault /dev/mapper/e2eimpostor && cryptsetup close e2eimpostor"); err != nil {
		t.Fatal(err)
	}
	fake.UUID, fake.Passphrase = real.UUID, theirs // from now on it claims to be the real drive
	tl.Note("impostor stick %s formatted in the guest with drive %s's LUKS UUID %s and its own passphrase", fake.Serial, real.Name, real.UUID)
	// Plugged afresh, as it would arrive from the attacker's own machine.
	pull(t, ctx, env, tl, fake, true)
	mark = plug(t, ctx, env, tl, fake)
	ev := waitState(t, ctx, env, mark, fake, api.StateFailed, api.StateAwaitingPassphrase, api.StateMounting, api.StateBackingUp)
	tl.Add("state "+ev.Props["State"], env.VM.HostTime(ev.Time))
	st := status(t, ctx, env, fake)
	want := "This stick claims to be " + real.Name + " but is not"
	if st.State != api.StateFailed || !strings.HasPrefix(st.StateReason, want) || st.FailedIn != api.StateUnlocking {
		t.Errorf("impostor: state %s %q (failed in %q); want failed in unlocking, %q…", st.State, st.StateReason, st.FailedIn, want)
	}
	evs, err := env.VM.Events(ctx, mark)
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, e := range evs {
		if e.Kind == agentproto.KindDrive && e.Path == drivePath(real) && e.Props["State"] != "" {
			seen = append(seen, e.Props["State"])
		}
	}
	for _, never := range []api.State{api.StateAwaitingPassphrase, api.StateMounting, api.StateBackingUp} {
		if slices.Contains(seen, string(never)) {
			t.Errorf("the impostor reached %s (states %v)", never, seen)
		}
	}
	// Its owner's passphrase opens nothing: as root (the most privileged caller) and as bob.
	for _, uid := range []int{0, BobUID} {
		res := call(t, ctx, env, uid, api.MethodUnlock, fake, theirs, nil)
		if res.Err == nil {
			t.Errorf("Unlock of the impostor with its own passphrase as uid %d succeeded", uid)
		}
		tl.Note("Unlock with the impostor's passphrase as uid %d: %s", uid, res.ErrorName)
	}
	checkNoLeftovers(t, ctx, env, real)
	entry, err := env.VM.Exec(ctx, "journalctl", "--no-pager", "-o", "verbose", "MESSAGE_ID="+logging.MessageImpostor)
	if err != nil || !strings.Contains(entry, "SERIAL="+fake.Serial) || !strings.Contains(entry, "LUKS_UUID="+real.UUID) {
		t.Errorf("no journal entry with the impostor MESSAGE_ID naming the stick %s: %v\n%s", fake.Serial, err, entry)
	}
	// Nothing of the source on it: only what its owner put there.
	out, err := env.VM.ExecAs(ctx, 0, theirs, "/bin/sh", "-ec", fmt.Sprintf(
		"cryptsetup open --readonly --key-file=- %s e2eimpostor; mkdir -p /mnt/e2eimpostor; mount -o ro /dev/mapper/e2eimpostor /mnt/e2eimpostor; "+
			"find /mnt/e2eimpostor -mindepth 1 | sort; umount /mnt/e2eimpostor; cryptsetup close e2eimpostor", dev))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(out); !slices.Equal(got, []string{"/mnt/e2eimpostor/lost+found"}) {
		t.Errorf("the impostor holds %v, want only lost+found", got)
	}
	tl.Note("impostor refused (%q), no passphrase asked, nothing mapped or mounted, nothing written to it", st.StateReason)
	pull(t, ctx, env, tl, fake, true)

	// The real drive is not disturbed by any of this.
	mark = plug(t, ctx, env, tl, real)
	completeCycle(t, ctx, env, tl, mark, real, runOrder)
	checkAllSnapshots(t, ctx, env, tl, real, 1)
	pull(t, ctx, env, tl, real, true)
}

// stickDevice is the whole-disk device node of s in the guest.
func stickDevice(t *testing.T, ctx context.Context, env *Env, s *Stick) string {
	t.Helper()
	dev, err := env.VM.Exec(ctx, "readlink", "-f", "/dev/disk/by-id/usb-QEMU_QEMU_HARDDISK_"+s.Serial+"-0:0")
	if err != nil {
		t.Fatalf("cannot find stick %s in the guest: %v", s.Name, err)
	}
	return strings.TrimSpace(dev)
}
