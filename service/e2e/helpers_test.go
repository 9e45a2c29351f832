package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/e2e/agentproto"
)

// cycleTimeout bounds one plug-to-safe-to-remove run under TCG on shared cores (measured 6–16 s
// on an idle host; generous because the cores are shared). A hung daemon costs at most this
// per wait, which keeps even a broken run inside make e2e's timeout.
const cycleTimeout = 2 * time.Minute

// needDaemon fails (never skips) a scenario when plugvaultd is not installed in the guest or
// is not running: these scenarios are the product's acceptance tests.
func needDaemon(t *testing.T, ctx context.Context, env *Env, tl *Timeline) {
	t.Helper()
	if !env.Install.Daemon {
		tl.Note("plugvaultd is not installed in the guest: %s", env.Install.Why)
		t.Fatalf("plugvaultd is not installed in the guest: %s", env.Install.Why)
	}
	if out, err := env.VM.Exec(ctx, "systemctl", "is-active", "plugvaultd.service"); err != nil {
		tl.Note("plugvaultd is not running in the guest: %s", strings.TrimSpace(out))
		t.Fatalf("plugvaultd is not running in the guest: %s %v", strings.TrimSpace(out), err)
	}
}

func drivePath(s *Stick) string { return string(api.DrivePath(s.UUID)) }

// plug marks the event log, plugs s and starts a plug cycle on the timeline.
func plug(t *testing.T, ctx context.Context, env *Env, tl *Timeline, s *Stick) uint64 {
	t.Helper()
	mark, err := env.VM.Mark(ctx)
	if err != nil {
		t.Fatal(err)
	}
	at, err := env.VM.Plug(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	tl.Plugged(at, "stick "+s.Name)
	return mark
}

// pull yanks s and waits for the drive to be absent (the daemon cleaned up).
func pull(t *testing.T, ctx context.Context, env *Env, tl *Timeline, s *Stick, enrolled bool) {
	t.Helper()
	mark, err := env.VM.Mark(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Eject powers the stick off, so the kernel may have removed it (and the drive be absent)
	// already; a removal still in flight shows up after mark.
	gone := false
	if enrolled {
		st := status(t, ctx, env, s)
		gone = st.State == api.StateAbsent && !st.Present
	}
	at, err := env.VM.Pull(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	tl.Add("pulled stick "+s.Name, at)
	if !enrolled || gone {
		return
	}
	ev := waitState(t, ctx, env, mark, s, api.StateAbsent)
	tl.Add("state absent (cleaned up)", env.VM.HostTime(ev.Time))
}

// waitState waits for the drive of s to reach one of states after mark.
func waitState(t *testing.T, ctx context.Context, env *Env, mark uint64, s *Stick, states ...api.State) agentproto.Event {
	t.Helper()
	alts := make([]string, len(states))
	for i, st := range states {
		alts[i] = string(st)
	}
	ev, err := env.VM.Wait(ctx, mark, agentproto.KindDrive, drivePath(s), map[string]string{"State": strings.Join(alts, "|")}, cycleTimeout)
	if err != nil {
		t.Fatalf("drive %s never reached %s: %v", s.Name, strings.Join(alts, " or "), err)
	}
	return ev
}

// call makes a plugvaultd call in the guest as uid and decodes its result into out (if any).
func call(t *testing.T, ctx context.Context, env *Env, uid int, method string, s *Stick, args []byte, out any) CallResult {
	t.Helper()
	drive := ""
	if s != nil {
		drive = drivePath(s)
	}
	res, err := env.VM.Call(ctx, uid, method, drive, args)
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	if res.Err == nil && out != nil {
		if err := json.Unmarshal(res.JSON, out); err != nil {
			t.Fatalf("%s: cannot decode the result: %v", method, err)
		}
	}
	return res
}

func status(t *testing.T, ctx context.Context, env *Env, s *Stick) api.DriveStatus {
	t.Helper()
	var st api.DriveStatus
	if res := call(t, ctx, env, 0, "DriveStatus", s, nil, &st); res.Err != nil {
		t.Fatalf("cannot read the status of drive %s: %v", s.Name, res.Err)
	}
	return st
}

func listSnapshots(t *testing.T, ctx context.Context, env *Env, s *Stick) []api.Snapshot {
	t.Helper()
	var snaps []api.Snapshot
	if res := call(t, ctx, env, 0, "ListSnapshots", s, nil, &snaps); res.Err != nil {
		t.Fatalf("cannot list the snapshots of drive %s: %v", s.Name, res.Err)
	}
	return snaps
}

// isNotAuthorized says whether a call was refused by polkit (either flavour: a user without a
// session gets auth_admin, which without interaction is NotAuthorizedCanObtain).
func isNotAuthorized(res CallResult) bool {
	return res.ErrorName == api.ErrorPrefix+"NotAuthorized" || res.ErrorName == api.ErrorPrefix+"NotAuthorizedCanObtain"
}

// runOrder is the order in which a normal run passes through the states.
var runOrder = []api.State{api.StateUnlocking, api.StateMounting, api.StateBackingUp, api.StateFinishing,
	api.StateUnmounting, api.StateLocking, api.StateSafeToRemove}

// completeCycle waits for the run started by the plug at mark to end, records it on the
// timeline and checks that it succeeded and went through the states in order.
func completeCycle(t *testing.T, ctx context.Context, env *Env, tl *Timeline, mark uint64, s *Stick, order []api.State) api.DriveStatus {
	t.Helper()
	end := waitState(t, ctx, env, mark, s, api.StateSafeToRemove, api.StateFailed)
	evs, err := env.VM.Events(ctx, mark)
	if err != nil {
		t.Fatal(err)
	}
	tl.AddEvents(env.VM, evs, s.Serial, drivePath(s))
	st := status(t, ctx, env, s)
	if end.State != string(api.StateSafeToRemove) || st.State != api.StateSafeToRemove {
		t.Fatalf("drive %s ended in %s (%s), want safe-to-remove", s.Name, st.State, st.StateReason)
	}
	if st.LastResult != api.ResultSuccess {
		t.Errorf("LastResult = %q, want success", st.LastResult)
	}
	if !st.Present {
		t.Errorf("Present = false after a run on a plugged stick")
	}
	if order != nil {
		checkOrder(t, evs, s, order)
	}
	checkNoLeftovers(t, ctx, env, s)
	return st
}

// checkOrder asserts that the drive's states appeared in this order (others may come between).
func checkOrder(t *testing.T, evs []agentproto.Event, s *Stick, order []api.State) {
	t.Helper()
	var seen []string
	i := 0
	for _, ev := range evs {
		if ev.Kind != agentproto.KindDrive || ev.Path != drivePath(s) {
			continue
		}
		if len(seen) == 0 || seen[len(seen)-1] != ev.State {
			seen = append(seen, ev.State)
		}
		if i < len(order) && ev.State == string(order[i]) {
			i++
		}
		if ev.State == string(api.StateFailed) {
			t.Errorf("the run passed through failed: %s", ev.Props["StateReason"])
		}
	}
	if i < len(order) {
		t.Errorf("states seen %v; want %v in this order", seen, order)
	}
}

// checkNoLeftovers asserts that nothing of the drive is mapped or mounted.
func checkNoLeftovers(t *testing.T, ctx context.Context, env *Env, s *Stick) {
	t.Helper()
	// dmsetup, not /dev/mapper: a device without a table has no node there.
	out, err := env.VM.Shell(ctx, "dmsetup ls; echo ---; cat /proc/mounts")
	if err != nil {
		t.Fatal(err)
	}
	mapper, mounts, _ := strings.Cut(out, "---")
	if strings.Contains(mapper, s.UUID) {
		t.Errorf("the mapping of %s is still active: %s", s.Name, strings.Fields(mapper))
	}
	for _, line := range strings.Split(mounts, "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], GuestMntBase+"/") {
			t.Errorf("still mounted: %s", line)
		}
	}
}

// daemonHealthy asserts that plugvaultd is active, answers, and was restarted `restarts` times.
func daemonHealthy(t *testing.T, ctx context.Context, env *Env, restarts string) {
	t.Helper()
	out, err := env.VM.Exec(ctx, "systemctl", "show", "-p", "ActiveState,NRestarts", "plugvaultd.service")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "ActiveState=active") {
		t.Errorf("plugvaultd is not active: %s", out)
	}
	if restarts != "" && !strings.Contains(out, "NRestarts="+restarts+"\n") {
		t.Errorf("plugvaultd restarts: %s, want NRestarts=%s", strings.TrimSpace(out), restarts)
	}
	if res := call(t, ctx, env, 0, "ListDrives", nil, nil, nil); res.Err != nil {
		t.Errorf("plugvaultd does not answer ListDrives: %v", res.Err)
	}
}

func nRestarts(t *testing.T, ctx context.Context, env *Env) string {
	t.Helper()
	out, err := env.VM.Exec(ctx, "systemctl", "show", "-p", "NRestarts", "--value", "plugvaultd.service")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// onStick opens the plugged stick read-only in the guest with its key (its own mapping, not
// the daemon's), mounts it and calls fn with the directory that holds the host's snapshots.
// Call it only while the daemon has the drive locked (safe-to-remove).
func onStick(t *testing.T, ctx context.Context, env *Env, s *Stick, fn func(snapDir string)) {
	t.Helper()
	dev, err := env.VM.Exec(ctx, "readlink", "-f", "/dev/disk/by-id/usb-QEMU_QEMU_HARDDISK_"+s.Serial+"-0:0")
	if err != nil {
		t.Fatalf("cannot find stick %s in the guest: %v", s.Name, err)
	}
	dev = strings.TrimSpace(dev)
	if _, err := env.VM.ExecAs(ctx, 0, s.Key, "cryptsetup", "open", "--readonly", "--key-file=-", dev, "e2echeck"); err != nil {
		t.Fatal(err)
	}
	defer env.VM.Exec(context.Background(), "cryptsetup", "close", "e2echeck")
	if _, err := env.VM.Shell(ctx, "mkdir -p /mnt/e2echeck && mount -o ro /dev/mapper/e2echeck /mnt/e2echeck"); err != nil {
		t.Fatal(err)
	}
	defer env.VM.Exec(context.Background(), "umount", "/mnt/e2echeck")
	fn("/mnt/e2echeck/plugvault/" + GuestHost)
}

// snapshotSource finds where the backed-up source sits inside a snapshot: the snapshot holds
// a browsable tree, with the source either at its absolute path, under its base name, or as
// the snapshot root itself (a single source).
func snapshotSource(t *testing.T, ctx context.Context, env *Env, snap string) string {
	t.Helper()
	for _, c := range []string{snap + SourceDir, snap + "/alice", snap} {
		if _, err := env.VM.Exec(ctx, "test", "-e", c+"/docs/readme.txt"); err == nil {
			return c
		}
	}
	out, _ := env.VM.Exec(ctx, "ls", "-la", snap)
	t.Fatalf("cannot find %s inside snapshot %s:\n%s", SourceDir, snap, out)
	return ""
}

// manifestOf describes a tree in the guest.
func manifestOf(t *testing.T, ctx context.Context, env *Env, root string, extents bool) map[string]agentproto.Entry {
	t.Helper()
	entries, err := env.VM.Manifest(ctx, root, extents)
	if err != nil {
		t.Fatalf("cannot describe %s: %v", root, err)
	}
	m := make(map[string]agentproto.Entry, len(entries))
	for _, e := range entries {
		m[e.Path] = e
	}
	return m
}

// compareTrees lists every difference between a source and its copy: presence, type,
// permission bits, owner, size, mtime, content, symlink target, xattrs, and hard-link groups.
func compareTrees(src, dst map[string]agentproto.Entry) []string {
	var diffs []string
	paths := make([]string, 0, len(src))
	for p := range src {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	srcGroup, dstGroup := map[uint64]string{}, map[uint64]string{}
	for _, p := range paths {
		a := src[p]
		b, ok := dst[p]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("%s: missing from the snapshot", p))
			continue
		}
		check := func(what string, x, y any) {
			if x != y {
				diffs = append(diffs, fmt.Sprintf("%s: %s is %v in the snapshot, %v in the source", p, what, y, x))
			}
		}
		check("type", a.Type, b.Type)
		check("mode", fmt.Sprintf("%04o", a.Mode), fmt.Sprintf("%04o", b.Mode))
		check("owner", fmt.Sprintf("%d:%d", a.UID, a.GID), fmt.Sprintf("%d:%d", b.UID, b.GID))
		check("mtime", time.Unix(0, a.MtimeNS).UTC().Format(time.RFC3339Nano), time.Unix(0, b.MtimeNS).UTC().Format(time.RFC3339Nano))
		check("xattrs", fmt.Sprint(a.Xattrs), fmt.Sprint(b.Xattrs))
		switch a.Type {
		case "file":
			check("size", a.Size, b.Size)
			check("content", a.SHA256, b.SHA256)
			if a.Nlink > 1 {
				// Files hard-linked in the source must be hard-linked to each other in the copy.
				if first, ok := srcGroup[a.Ino]; ok {
					if dst[first].Ino != b.Ino {
						diffs = append(diffs, fmt.Sprintf("%s: not hard-linked to %s in the snapshot", p, first))
					}
				} else {
					srcGroup[a.Ino] = p
					dstGroup[b.Ino] = p
				}
			}
		case "symlink":
			check("link target", a.Link, b.Link)
		}
	}
	for p := range dst {
		if _, ok := src[p]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: in the snapshot but not in the source", p))
		}
	}
	sort.Strings(diffs)
	return diffs
}

// checkSnapshot compares one snapshot on the stick with the source as it is now.
func checkSnapshot(t *testing.T, ctx context.Context, env *Env, snapDir, name string, source map[string]agentproto.Entry, extents bool) map[string]agentproto.Entry {
	t.Helper()
	root := snapshotSource(t, ctx, env, snapDir+"/"+name)
	got := manifestOf(t, ctx, env, root, extents)
	if diffs := compareTrees(source, got); len(diffs) > 0 {
		if len(diffs) > 20 {
			diffs = append(diffs[:20], fmt.Sprintf("… and %d more", len(diffs)-20))
		}
		t.Errorf("snapshot %s differs from %s:\n  %s", name, SourceDir, strings.Join(diffs, "\n  "))
	}
	return got
}

// checkAllSnapshots asserts that ListSnapshots shows want complete snapshots and no partial
// one, that the stick holds exactly those, and that each equals the source as it is now.
func checkAllSnapshots(t *testing.T, ctx context.Context, env *Env, tl *Timeline, s *Stick, want int) []api.Snapshot {
	t.Helper()
	snaps := listSnapshots(t, ctx, env, s)
	var complete []api.Snapshot
	for _, sn := range snaps {
		switch sn.Status {
		case api.SnapshotComplete:
			complete = append(complete, sn)
		default:
			t.Errorf("snapshot %s is %s after a successful run (a partial must be resumed and promoted)", sn.Name, sn.Status)
		}
	}
	if want >= 0 && len(complete) != want {
		t.Errorf("%d complete snapshots, want %d: %+v", len(complete), want, snaps)
	}
	source := manifestOf(t, ctx, env, SourceDir, false)
	onStick(t, ctx, env, s, func(snapDir string) {
		out, err := env.VM.Exec(ctx, "ls", "-1", snapDir)
		if err != nil {
			t.Fatal(err)
		}
		onDisk := map[string]bool{}
		for _, n := range strings.Fields(out) {
			onDisk[n] = true
			if strings.HasSuffix(n, ".partial") {
				t.Errorf("the stick still holds %s after a successful run", n)
			}
		}
		for _, sn := range complete {
			if !onDisk[sn.Name] {
				t.Errorf("ListSnapshots lists %s, the stick holds %v", sn.Name, strings.Fields(out))
			}
		}
		for _, sn := range complete {
			checkSnapshot(t, ctx, env, snapDir, sn.Name, source, false)
		}
	})
	tl.Note("%d complete snapshots, each equal to %s (content, modes, owners, times, links, xattrs)", len(complete), SourceDir)
	return complete
}

// mainPID is plugvaultd's process ID in the guest (it changes when the service restarts).
func mainPID(t *testing.T, ctx context.Context, env *Env) string {
	t.Helper()
	out, err := env.VM.Exec(ctx, "systemctl", "show", "-p", "MainPID", "--value", "plugvaultd.service")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}
