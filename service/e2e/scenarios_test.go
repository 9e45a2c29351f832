package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/e2e/agentproto"
	"github.com/plugvault/plugvault/service/internal/luks"
)

// The scenarios below run against the daemon's D-Bus contract (service/api) from inside the
// guest, in one boot, in file order; TestPowerCut reboots the guest and comes last.

// TestBackupCycle is scenarios a and b on btrfs and on ext4: plug → keyfile unlock → mount →
// backup of alice's home → finishing → lock → safe-to-remove, the snapshot equal to the source
// byte for byte and in metadata; then a second plug after a change makes an incremental
// snapshot whose unchanged files share storage with the first (btrfs: the same extents; ext4:
// hard links, the same inodes), while the first snapshot stays as it was.
func TestBackupCycle(t *testing.T) {
	for _, name := range []string{"happy", "happy-ext4"} {
		t.Run(name, func(t *testing.T) {
			env := vmEnv(t)
			tl, ctx := scenario(t, env)
			needDaemon(t, ctx, env, tl)
			s := env.Sticks[name]

			// a. the first backup.
			mark := plug(t, ctx, env, tl, s)
			st := completeCycle(t, ctx, env, tl, mark, s, runOrder)
			snaps := listSnapshots(t, ctx, env, s)
			if len(snaps) != 1 || snaps[0].Status != api.SnapshotComplete {
				t.Fatalf("after the first backup: snapshots %+v, want one complete", snaps)
			}
			if st.SnapshotCount != 1 || st.LastBackup == 0 || int64(st.LastBackup) != snaps[0].Created {
				t.Errorf("SnapshotCount %d, LastBackup %d; the snapshot was created at %d", st.SnapshotCount, st.LastBackup, snaps[0].Created)
			}
			source1 := manifestOf(t, ctx, env, SourceDir, false)
			var first map[string]agentproto.Entry
			onStick(t, ctx, env, s, func(snapDir string) {
				first = checkSnapshot(t, ctx, env, snapDir, snaps[0].Name, source1, true)
			})
			tl.Note("snapshot %s equals %s: %d entries compared", snaps[0].Name, SourceDir, len(source1))
			pull(t, ctx, env, tl, s, true)

			// b. change two files, plug again: an incremental snapshot.
			changed := "docs/readme.txt"
			added := "added-" + name + ".bin"
			if _, err := env.VM.ExecAs(ctx, AliceUID, nil, "/bin/sh", "-ec",
				fmt.Sprintf("echo 'changed for the second backup' >> %s/%s && head -c 100000 /dev/urandom > %s/%s", SourceDir, changed, SourceDir, added)); err != nil {
				t.Fatal(err)
			}
			mark = plug(t, ctx, env, tl, s)
			st = completeCycle(t, ctx, env, tl, mark, s, runOrder)
			snaps = listSnapshots(t, ctx, env, s)
			if len(snaps) != 2 || snaps[0].Status != api.SnapshotComplete || snaps[1].Status != api.SnapshotComplete {
				t.Fatalf("after the second backup: snapshots %+v, want two complete", snaps)
			}
			if st.SnapshotCount != 2 {
				t.Errorf("SnapshotCount = %d, want 2", st.SnapshotCount)
			}
			source2 := manifestOf(t, ctx, env, SourceDir, false)
			onStick(t, ctx, env, s, func(snapDir string) {
				second := checkSnapshot(t, ctx, env, snapDir, snaps[1].Name, source2, true)
				// The first snapshot is never modified (hard links only add to its link counts).
				again := manifestOf(t, ctx, env, snapshotSource(t, ctx, env, snapDir+"/"+snaps[0].Name), true)
				if diffs := compareTrees(first, again); len(diffs) > 0 {
					t.Errorf("the first snapshot changed during the second backup: %v", diffs)
				}
				shared, checked := 0, 0
				for p, a := range first {
					b, ok := second[p]
					if !ok || a.Type != "file" || p == changed || a.SHA256 != b.SHA256 {
						continue
					}
					switch s.FS {
					case "ext4":
						checked++
						if a.Ino == b.Ino && a.Dev == b.Dev {
							shared++
						}
					case "btrfs":
						if a.Size < 8192 { // small files are inlined in btrfs metadata
							continue
						}
						checked++
						if len(a.Extents) > 0 && fmt.Sprint(a.Extents) == fmt.Sprint(b.Extents) {
							shared++
						}
					}
				}
				if checked == 0 || shared != checked {
					t.Errorf("%d of %d unchanged files share storage with the first snapshot, want all", shared, checked)
				}
				if s.FS == "ext4" && first[changed].Ino == second[changed].Ino {
					t.Errorf("the changed file %s is hard-linked to the old version", changed)
				}
				tl.Note("incremental on %s: %d of %d unchanged files share storage with the first snapshot", s.FS, shared, checked)
			})
			pull(t, ctx, env, tl, s, true)
		})
	}
}

// TestPullMidway is scenario c: the stick is pulled while unlocking, while copying and while
// finishing. Each time nothing stale is left (no mapping, no mount), the daemon stays healthy,
// and a replug resumes and completes, with every complete snapshot intact.
func TestPullMidway(t *testing.T) {
	env := vmEnv(t)
	tl, ctx := scenario(t, env)
	needDaemon(t, ctx, env, tl)
	s := env.Sticks["pull"]
	restarts := nRestarts(t, ctx, env)
	for _, phase := range []api.State{api.StateUnlocking, api.StateBackingUp, api.StateFinishing} {
		mark := plug(t, ctx, env, tl, s)
		ev := waitState(t, ctx, env, mark, s, phase)
		tl.Add("saw state "+string(phase)+"; pulling", env.VM.HostTime(ev.Time))
		pull(t, ctx, env, tl, s, true)
		evs, _ := env.VM.Events(ctx, mark)
		tl.AddEvents(env.VM, evs, s.Serial, drivePath(s))
		checkNoLeftovers(t, ctx, env, s)
		daemonHealthy(t, ctx, env, restarts)
		st := status(t, ctx, env, s)
		if st.Present || st.State != api.StateAbsent {
			t.Errorf("after the pull: Present %v, State %s; want absent", st.Present, st.State)
		}
		tl.Note("pulled while %s: LastResult %q, nothing left mapped or mounted", phase, st.LastResult)

		mark = plug(t, ctx, env, tl, s)
		completeCycle(t, ctx, env, tl, mark, s, nil)
		checkAllSnapshots(t, ctx, env, tl, s, -1)
		var v struct {
			Checked  uint64   `json:"checked"`
			Problems []string `json:"problems"`
		}
		if res := call(t, ctx, env, 0, api.MethodVerify, s, nil, &v); res.Err != nil || len(v.Problems) > 0 || v.Checked == 0 {
			t.Errorf("Verify of the newest snapshot: %v, %d checked, problems %v", res.Err, v.Checked, v.Problems)
		}
		pull(t, ctx, env, tl, s, true)
	}
}

// TestPassphrase is scenario d: without a keyfile the drive waits for its passphrase; a wrong
// one is refused with BadPassphrase and the drive keeps waiting; the right one goes on to a
// complete backup. Then CheckPassphrase tells a wrong passphrase from the right one without
// mapping anything, and a Verify waits for the passphrase too and checks the snapshot with it.
func TestPassphrase(t *testing.T) {
	env := vmEnv(t)
	tl, ctx := scenario(t, env)
	needDaemon(t, ctx, env, tl)
	s := env.Sticks["nokey"]
	mark := plug(t, ctx, env, tl, s)
	waitState(t, ctx, env, mark, s, api.StateAwaitingPassphrase)
	if st := status(t, ctx, env, s); st.StateReason == "" {
		t.Errorf("awaiting-passphrase without a StateReason")
	}
	res := call(t, ctx, env, 0, api.MethodUnlock, s, []byte("not the passphrase"), nil)
	tl.Add("Unlock with a wrong passphrase: "+res.ErrorName, time.Now())
	if res.ErrorName != api.ErrorPrefix+"BadPassphrase" {
		t.Errorf("Unlock with a wrong passphrase: %q %v, want BadPassphrase", res.ErrorName, res.Err)
	}
	if st := status(t, ctx, env, s); st.State != api.StateAwaitingPassphrase {
		t.Errorf("after a wrong passphrase the drive is %s, want awaiting-passphrase", st.State)
	}
	if res := call(t, ctx, env, 0, api.MethodUnlock, s, s.Passphrase, nil); res.Err != nil {
		t.Fatalf("Unlock with the right passphrase: %v", res.Err)
	}
	tl.Add("Unlock with the right passphrase", time.Now())
	completeCycle(t, ctx, env, tl, mark, s, []api.State{api.StateAwaitingPassphrase, api.StateMounting,
		api.StateBackingUp, api.StateFinishing, api.StateLocking, api.StateSafeToRemove})
	checkAllSnapshots(t, ctx, env, tl, s, 1)

	// The passphrase check maps nothing and leaves the state alone.
	for _, tc := range []struct {
		pass []byte
		want string
	}{{[]byte("not the passphrase"), api.ErrorPrefix + "BadPassphrase"}, {s.Passphrase, ""}} {
		res := call(t, ctx, env, 0, api.MethodCheckPassphrase, s, tc.pass, nil)
		tl.Add(fmt.Sprintf("CheckPassphrase: %q", res.ErrorName), time.Now())
		if res.ErrorName != tc.want {
			t.Errorf("CheckPassphrase: %q %v, want %q", res.ErrorName, res.Err, tc.want)
		}
		checkNoLeftovers(t, ctx, env, s)
		if st := status(t, ctx, env, s); st.State != api.StateSafeToRemove {
			t.Errorf("after CheckPassphrase the drive is %s, want safe-to-remove", st.State)
		}
	}

	// Without a keyfile a Verify asks for the passphrase the same way, and goes on once it has it.
	mark, err := env.VM.Mark(ctx)
	if err != nil {
		t.Fatal(err)
	}
	type verifyCall struct {
		res CallResult
		err error
	}
	verified := make(chan verifyCall, 1)
	go func() {
		res, err := env.VM.Call(ctx, 0, api.MethodVerify, drivePath(s), nil)
		verified <- verifyCall{res, err}
	}()
	waitState(t, ctx, env, mark, s, api.StateAwaitingPassphrase)
	tl.Add("Verify waits for the passphrase", time.Now())
	if res := call(t, ctx, env, 0, api.MethodUnlock, s, s.Passphrase, nil); res.Err != nil {
		t.Fatalf("Unlock for the Verify: %v", res.Err)
	}
	vc := <-verified
	if vc.err != nil {
		t.Fatalf("Verify: %v", vc.err)
	}
	var v struct {
		Checked  uint64   `json:"checked"`
		Problems []string `json:"problems"`
	}
	if vc.res.Err == nil {
		if err := json.Unmarshal(vc.res.JSON, &v); err != nil {
			t.Fatalf("Verify: cannot decode the result: %v", err)
		}
	}
	if vc.res.Err != nil || len(v.Problems) > 0 || v.Checked == 0 {
		t.Errorf("Verify with the passphrase: %v, %d checked, problems %v", vc.res.Err, v.Checked, v.Problems)
	}
	tl.Add(fmt.Sprintf("Verify with the passphrase: %d entries checked", v.Checked), time.Now())
	checkNoLeftovers(t, ctx, env, s)
	pull(t, ctx, env, tl, s, true)
}

// TestPolkit is scenario e: bob, an unprivileged user, cannot unlock, back up or eject until a
// polkit rule grants him those actions; then he can. The drive is alice's (run_as), so
// browsing or ejecting it also needs org.plugvault.manage-other-users-drive, and the mount
// alice opens for browsing is closed to bob.
func TestPolkit(t *testing.T) {
	env := vmEnv(t)
	tl, ctx := scenario(t, env)
	needDaemon(t, ctx, env, tl)
	s := env.Sticks["polkit"]
	const rule = "/etc/polkit-1/rules.d/50-plugvault-e2e.rules"
	t.Cleanup(func() {
		env.VM.Shell(context.Background(), "rm -f "+rule+" && systemctl restart polkit.service")
	})
	mark := plug(t, ctx, env, tl, s)
	waitState(t, ctx, env, mark, s, api.StateAwaitingPassphrase)
	for _, m := range []string{api.MethodUnlock, api.MethodBackupNow, api.MethodEject} {
		var args []byte
		if m == api.MethodUnlock {
			args = s.Passphrase
		}
		res := call(t, ctx, env, BobUID, m, s, args, nil)
		tl.Add(fmt.Sprintf("bob %s without a grant: %s", m, res.ErrorName), time.Now())
		if !isNotAuthorized(res) {
			t.Errorf("bob %s without a grant: %q %v, want NotAuthorized", m, res.ErrorName, res.Err)
		}
	}
	if st := status(t, ctx, env, s); st.State != api.StateAwaitingPassphrase {
		t.Errorf("after refused calls the drive is %s, want still awaiting-passphrase", st.State)
	}

	// polkitd reads rules at start: restart it rather than wait for its file watch.
	grant := `polkit.addRule(function(action, subject) {
    if (subject.user == "bob" && ["org.plugvault.unlock", "org.plugvault.backup", "org.plugvault.eject", "org.plugvault.browse"].indexOf(action.id) >= 0) {
        return polkit.Result.YES;
    }
    if (subject.user == "alice" && action.id == "org.plugvault.browse") {
        return polkit.Result.YES;
    }
});
`
	setRule := func(js string) {
		t.Helper()
		if _, err := env.VM.ExecAs(ctx, 0, []byte(js), "/bin/sh", "-ec", "cat > "+rule+" && systemctl restart polkit.service"); err != nil {
			t.Fatal(err)
		}
	}
	setRule(grant)
	tl.Add("polkit rule grants bob unlock, backup, eject, browse and alice browse", time.Now())
	if res := call(t, ctx, env, BobUID, api.MethodUnlock, s, s.Passphrase, nil); res.Err != nil {
		t.Fatalf("bob Unlock with a grant: %v", res.Err)
	}
	completeCycle(t, ctx, env, tl, mark, s, nil)

	mark, err := env.VM.Mark(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res := call(t, ctx, env, BobUID, api.MethodBackupNow, s, nil, nil); res.Err != nil {
		t.Fatalf("bob BackupNow with a grant: %v", res.Err)
	}
	tl.Add("bob BackupNow", time.Now())
	waitState(t, ctx, env, mark, s, api.StateAwaitingPassphrase)
	if res := call(t, ctx, env, BobUID, api.MethodUnlock, s, s.Passphrase, nil); res.Err != nil {
		t.Fatalf("bob Unlock with a grant: %v", res.Err)
	}
	completeCycle(t, ctx, env, tl, mark, s, nil)
	checkAllSnapshots(t, ctx, env, tl, s, 2)

	// The drive is alice's (run_as): bob's grants for the verbs are not enough to browse or
	// eject it, and the mount alice opens is hers alone.
	for _, m := range []string{api.MethodBrowse, api.MethodEject} {
		res := call(t, ctx, env, BobUID, m, s, nil, nil)
		tl.Add(fmt.Sprintf("bob %s of alice's drive without manage-other-users-drive: %s", m, res.ErrorName), time.Now())
		if !isNotAuthorized(res) {
			t.Errorf("bob %s of alice's drive: %q %v, want NotAuthorized", m, res.ErrorName, res.Err)
		}
	}
	// This stick's keyfile is not installed (the scenario unlocks with the passphrase);
	// Browse needs it.
	key := "/etc/plugvault/keys/" + s.UUID + ".key"
	t.Cleanup(func() { env.VM.Shell(context.Background(), "rm -f "+key) })
	if _, err := env.VM.ExecAs(ctx, 0, s.Key, "/bin/sh", "-ec", "umask 077 && cat > "+key+" && chmod 0400 "+key); err != nil {
		t.Fatal(err)
	}
	var path string
	if res := call(t, ctx, env, AliceUID, api.MethodBrowse, s, nil, &path); res.Err != nil {
		t.Fatalf("alice Browse: %v", res.Err)
	}
	tl.Add("alice Browse: "+path, time.Now())
	if out, err := env.VM.ExecAs(ctx, AliceUID, nil, "ls", path); err != nil || !strings.Contains(out, "plugvault") {
		t.Errorf("alice cannot list her mount %s: %v: %q", path, err, out)
	}
	if out, err := env.VM.ExecAs(ctx, BobUID, nil, "ls", path); err == nil {
		t.Errorf("bob lists alice's mount %s: %q", path, out)
	}
	if _, err := env.VM.ExecAs(ctx, BobUID, nil, "/bin/sh", "-c", "cd "+path); err == nil {
		t.Errorf("bob can enter alice's mount %s", path)
	}
	tl.Add("bob cannot enter alice's mount", time.Now())
	if st := status(t, ctx, env, s); st.State != api.StatePresent {
		t.Errorf("after bob's refused Eject the drive is %s, want still present (open for alice)", st.State)
	}

	setRule(strings.Replace(grant, `"org.plugvault.browse"]`, `"org.plugvault.browse", "org.plugvault.manage-other-users-drive"]`, 1))
	tl.Add("polkit rule grants bob manage-other-users-drive too", time.Now())
	if res := call(t, ctx, env, BobUID, api.MethodEject, s, nil, nil); res.Err != nil {
		t.Fatalf("bob Eject with a grant: %v", res.Err)
	}
	tl.Add("bob Eject", time.Now())
	if st := status(t, ctx, env, s); st.State != api.StateSafeToRemove && st.State != api.StateAbsent {
		t.Errorf("after Eject the drive is %s, want safe-to-remove", st.State)
	}
	checkNoLeftovers(t, ctx, env, s)
	pull(t, ctx, env, tl, s, true)
}

// TestDaemonKilled is scenario f: plugvaultd is SIGKILLed mid-backup; systemd restarts it; it
// reconciles what the dead instance left (mapping, mount, partial snapshot) and completes.
func TestDaemonKilled(t *testing.T) {
	env := vmEnv(t)
	tl, ctx := scenario(t, env)
	needDaemon(t, ctx, env, tl)
	s := env.Sticks["kill"]
	before := nRestarts(t, ctx, env)
	mark := plug(t, ctx, env, tl, s)
	waitState(t, ctx, env, mark, s, api.StateBackingUp)
	evs, _ := env.VM.Events(ctx, mark)
	tl.AddEvents(env.VM, evs, s.Serial, drivePath(s))
	killMark, err := env.VM.Mark(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.VM.Exec(ctx, "systemctl", "kill", "--kill-whom=main", "--signal=KILL", "plugvaultd.service"); err != nil {
		t.Fatal(err)
	}
	tl.Add("plugvaultd killed with SIGKILL", time.Now())
	down, err := env.VM.Wait(ctx, killMark, agentproto.KindService, "", map[string]string{"up": "false"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	up, err := env.VM.Wait(ctx, down.Seq, agentproto.KindService, "", map[string]string{"up": "true"}, 2*time.Minute)
	if err != nil {
		t.Fatalf("systemd did not restart plugvaultd: %v", err)
	}
	tl.Add("plugvaultd back on the bus", env.VM.HostTime(up.Time))
	completeCycle(t, ctx, env, tl, up.Seq-1, s, nil)
	var n int
	fmt.Sscan(before, &n)
	daemonHealthy(t, ctx, env, fmt.Sprint(n+1))
	checkAllSnapshots(t, ctx, env, tl, s, 1)
	pull(t, ctx, env, tl, s, true)
}

// TestEjectDuringBackup is scenario h: Eject while copying cancels cleanly, unmounts and locks
// (LastResult cancelled); the next plug resumes and completes.
func TestEjectDuringBackup(t *testing.T) {
	env := vmEnv(t)
	tl, ctx := scenario(t, env)
	needDaemon(t, ctx, env, tl)
	s := env.Sticks["eject"]
	mark := plug(t, ctx, env, tl, s)
	waitState(t, ctx, env, mark, s, api.StateBackingUp)
	if res := call(t, ctx, env, 0, api.MethodEject, s, nil, nil); res.Err != nil {
		t.Fatalf("Eject during a backup: %v", res.Err)
	}
	tl.Add("Eject returned", time.Now())
	st := status(t, ctx, env, s)
	if st.State != api.StateSafeToRemove && st.State != api.StateAbsent {
		t.Errorf("after Eject the drive is %s, want safe-to-remove", st.State)
	}
	if st.LastResult != api.ResultCancelled {
		t.Errorf("LastResult = %q after an eject during the backup, want cancelled", st.LastResult)
	}
	checkNoLeftovers(t, ctx, env, s)
	evs, _ := env.VM.Events(ctx, mark)
	tl.AddEvents(env.VM, evs, s.Serial, drivePath(s))
	pull(t, ctx, env, tl, s, true)

	mark = plug(t, ctx, env, tl, s)
	completeCycle(t, ctx, env, tl, mark, s, nil)
	checkAllSnapshots(t, ctx, env, tl, s, 1)
	pull(t, ctx, env, tl, s, true)
}

// TestStaleDeviceOfAKilledOpen: a stick pulled while cryptsetup open loads the table, the
// open killed, leaves a device-mapper device with the drive's mapping name and no table, which
// cryptsetup can neither query nor close. The next plug-in removes it and backs up as usual.
func TestStaleDeviceOfAKilledOpen(t *testing.T) {
	env := vmEnv(t)
	tl, ctx := scenario(t, env)
	needDaemon(t, ctx, env, tl)
	s := env.Sticks["stale"]
	name := luks.MappingPrefix + s.UUID
	if _, err := env.VM.Shell(ctx, "dmsetup create "+name+" --notable\n"+
		"rc=0; cryptsetup status "+name+" >/dev/null 2>&1 || rc=$?; test $rc = 1"); err != nil {
		t.Fatalf("cannot make a device without a table that cryptsetup status refuses: %v", err)
	}
	tl.Note("device-mapper device %s made without a table, as a killed open leaves it (cryptsetup status exits 1)", name)
	mark := plug(t, ctx, env, tl, s)
	completeCycle(t, ctx, env, tl, mark, s, nil)
	checkNoLeftovers(t, ctx, env, s)
	pull(t, ctx, env, tl, s, true)
}

// TestLeftAlone is scenario i: a LUKS stick the config does not know and a stick without LUKS
// are not touched (no drive object, no mapping, no mount, not one byte changed), while an
// enrolled stick plugged after them is backed up as usual.
func TestLeftAlone(t *testing.T) {
	env := vmEnv(t)
	tl, ctx := scenario(t, env)
	needDaemon(t, ctx, env, tl)
	strangers := []*Stick{env.Sticks["smoke"], env.Sticks["plain"]}
	known := env.Sticks["happy"]
	digests := map[string]string{}
	for _, s := range strangers {
		d, err := s.Digest()
		if err != nil {
			t.Fatal(err)
		}
		digests[s.Name] = d
	}
	var drivesBefore []string
	call(t, ctx, env, 0, "ListDrives", nil, nil, &drivesBefore)
	mark, err := env.VM.Mark(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range strangers {
		m := plug(t, ctx, env, tl, s)
		waitUdev(t, ctx, env, m, s, "add")
	}
	// The daemon handles udev events in order: once the enrolled stick plugged after the
	// strangers is done, the strangers have been seen and (should have been) ignored.
	m := plug(t, ctx, env, tl, known)
	completeCycle(t, ctx, env, tl, m, known, nil)
	evs, err := env.VM.Events(ctx, mark)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Kind == agentproto.KindDrive && ev.Path != drivePath(known) {
			t.Errorf("the daemon changed drive %s while only strangers were plugged: %v", ev.Path, ev.Props)
		}
	}
	var drivesAfter []string
	call(t, ctx, env, 0, "ListDrives", nil, nil, &drivesAfter)
	if strings.Join(drivesBefore, " ") != strings.Join(drivesAfter, " ") {
		t.Errorf("drives changed: %v -> %v", drivesBefore, drivesAfter)
	}
	out, err := env.VM.Shell(ctx, "ls /dev/mapper; cat /proc/mounts")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range strangers {
		if strings.Contains(out, s.UUID) {
			t.Errorf("stick %s was opened or mounted:\n%s", s.Name, out)
		}
	}
	for _, s := range append(strangers, known) {
		pull(t, ctx, env, tl, s, s == known)
	}
	for _, s := range strangers {
		d, err := s.Digest()
		if err != nil {
			t.Fatal(err)
		}
		if d != digests[s.Name] {
			t.Errorf("stick %s was written to", s.Name)
		}
	}
	tl.Note("unknown LUKS stick and plain stick: no drive object, no mapping, no mount, not one byte changed")
}

// TestPowerCut is scenario g (last: it reboots the guest): the machine loses power mid-backup;
// after the reboot the complete snapshots are intact and the partial one is resumed.
func TestPowerCut(t *testing.T) {
	env := vmEnv(t)
	tl, ctx := scenario(t, env)
	needDaemon(t, ctx, env, tl)
	s := env.Sticks["power"]
	mark := plug(t, ctx, env, tl, s)
	waitState(t, ctx, env, mark, s, api.StateBackingUp)
	evs, _ := env.VM.Events(ctx, mark)
	tl.AddEvents(env.VM, evs, s.Serial, drivePath(s))
	tl.Add("power cut (system_reset)", time.Now())
	boot, err := env.VM.PowerCut(ctx)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("the guest did not come back after the power cut: %v", err)
		}
		t.Fatal(err)
	}
	tl.Add("guest up again ("+boot.SystemState+")", time.Now())
	// The event log starts afresh with the new boot: wait from its beginning.
	completeCycle(t, ctx, env, tl, 0, s, nil)
	daemonHealthy(t, ctx, env, "")
	checkAllSnapshots(t, ctx, env, tl, s, 1)
	pull(t, ctx, env, tl, s, true)
}
