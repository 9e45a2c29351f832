package e2e

import (
	"fmt"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/e2e/agentproto"
)

// TestTrayFlows makes the D-Bus calls of the tray's "Set up a new drive…" and "Restore…"
// windows (tray/internal/ui setup.go and restore.go) against the real daemon, as alice and
// with the arguments the windows pass: Enroll with her passphrase and a name, no header backup;
// once the first backup is done, ListSnapshots, then Restore of one file into another folder
// (nothing overwritten) and to its original place over a changed copy (overwrite). The
// windows' own widgets are tested against the fake service in tray/cmd/plugvault-tray.
func TestTrayFlows(t *testing.T) {
	env := vmEnv(t)
	tl, ctx := scenario(t, env)
	needDaemon(t, ctx, env, tl)
	grantAlice(t, ctx, env, tl, api.ActionEnroll, api.ActionRestore)
	s := env.Sticks["trayflow"]

	// A file of alice's that the first backup takes, changed after it.
	const file = SourceDir + "/tray-flow.txt"
	const original = "the quarterly report, as it was\n"
	if _, err := env.VM.ExecAs(ctx, AliceUID, []byte(original), "/bin/sh", "-ec", "cat > "+file); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.VM.Exec(ctx, "rm", "-f", file) })

	dev := plugAndFind(t, ctx, env, tl, s)
	mark, err := env.VM.Mark(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res, err := env.VM.CallWith(ctx, AliceUID, agentproto.Request{Method: api.MethodEnroll, Args: []byte(enrollPass),
		Strings: []string{dev, "tray"}})
	if err != nil || res.Err != nil {
		t.Fatalf("Enroll as the tray calls it: %v %v", err, res.Err)
	}
	tl.Add("alice: Enroll "+dev+" as the tray's setup window calls it", time.Now())
	out, err := env.VM.Exec(ctx, "cryptsetup", "luksUUID", dev)
	if err != nil {
		t.Fatal(err)
	}
	s.UUID, s.LUKS, s.FS = strings.TrimSpace(out), true, "btrfs"
	if !strings.Contains(string(res.JSON), drivePath(s)) {
		t.Errorf("Enroll returned %s, want the new drive %s", res.JSON, drivePath(s))
	}
	s.Key = checkKeyFile(t, ctx, env, s.UUID)
	if st := status(t, ctx, env, s); st.Name != "tray" {
		t.Errorf("the new drive is named %q, want the name the window passed", st.Name)
	}
	// The setup window ends with the first backup running.
	completeCycle(t, ctx, env, tl, mark, s, runOrder)
	snaps := listSnapshots(t, ctx, env, s)
	if len(snaps) != 1 || snaps[0].Status != api.SnapshotComplete {
		t.Fatalf("after the first backup: snapshots %+v, want one complete", snaps)
	}

	restore := func(dir string, overwrite bool) {
		t.Helper()
		res, err := env.VM.CallWith(ctx, AliceUID, agentproto.Request{Method: api.MethodRestore, Drive: drivePath(s),
			Strings: []string{snaps[0].Name, strings.TrimPrefix(file, "/"), dir}, Options: map[string]bool{api.OptOverwrite: overwrite}})
		if err != nil || res.Err != nil {
			t.Fatalf("Restore into %s (overwrite %v): %v %v", dir, overwrite, err, res.Err)
		}
		tl.Add(fmt.Sprintf("alice: Restore %s into %s (overwrite %v)", file, dir, overwrite), time.Now())
	}
	check := func(p string) {
		t.Helper()
		out, err := env.VM.Exec(ctx, "stat", "-c", "%U %a", p)
		if err != nil || strings.TrimSpace(out) != "alice 644" {
			t.Errorf("%s: %q %v, want alice's, 0644", p, strings.TrimSpace(out), err)
		}
		if got, err := env.VM.Exec(ctx, "cat", p); err != nil || got != original {
			t.Errorf("%s holds %q (%v), want the backed-up %q", p, got, err, original)
		}
	}

	// Restore to another folder: one of alice's, made by her as the window's folder chooser would.
	const other = "/tmp/tray-restore"
	if _, err := env.VM.ExecAs(ctx, AliceUID, nil, "mkdir", "-p", other); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.VM.Exec(ctx, "rm", "-rf", other) })
	restore(other, false)
	check(other + "/" + path.Base(file))

	// Restore to the original place, replacing the changed file.
	if _, err := env.VM.ExecAs(ctx, AliceUID, []byte("changed since\n"), "/bin/sh", "-ec", "cat > "+file); err != nil {
		t.Fatal(err)
	}
	restore(path.Dir(file), true)
	check(file)
	pull(t, ctx, env, tl, s, true)
}
