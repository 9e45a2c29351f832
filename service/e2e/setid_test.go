package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/plugvault/plugvault/service/e2e/agentproto"
)

// setidEntries are the special-mode entries TestSetuidSetgid puts in alice's home, relative to
// the setid directory in it, with their modes.
var setidEntries = map[string]uint32{
	"shared":          0o2775, // a setgid directory (new entries inherit its group)
	"shared/sub":      0o2755, // made inside it (umask 022): inherits the setgid bit
	"suid-tool":       0o4755, // a setuid file
	"sgid-tool":       0o2755, // a setgid file
	"shared/data.txt": 0o644,
}

// TestSetuidSetgid backs up a source holding a setgid directory, a setuid file and a setgid
// file, and restores them with `plugvault restore` as their owner: the run succeeds, the
// snapshot and the restored tree keep every mode bit, and the engine resolved its paths with
// openat2. Under RestrictSUIDSGID=yes (which binds the engine child) the run failed with only
// a .partial left, and openat2 answered ENOSYS.
func TestSetuidSetgid(t *testing.T) {
	env := vmEnv(t)
	tl, ctx := scenario(t, env)
	needDaemon(t, ctx, env, tl)
	s := env.Sticks["setid"]
	const dir = SourceDir + "/setid"
	const dest = "/tmp/plugvault-setid-restore"
	t.Cleanup(func() { env.VM.Exec(context.Background(), "rm", "-rf", dir, dest) })

	journal, err := env.VM.Exec(ctx, "journalctl", "-b", "-u", "plugvaultd.service", "-o", "cat", "--no-pager")
	if err != nil {
		t.Fatalf("cannot read plugvaultd's journal: %v", err)
	}
	switch {
	case strings.Contains(journal, "openat2 is unavailable"):
		t.Errorf("plugvaultd says openat2 is unavailable: the engine falls back to its openat walk")
	case !strings.Contains(journal, "the backup engine resolves paths with openat2"):
		t.Errorf("plugvaultd's journal does not say how the engine resolves paths:\n%s", journal)
	default:
		tl.Note("plugvaultd: the backup engine resolves paths with openat2")
	}

	script := fmt.Sprintf(`umask 022
mkdir -p %[1]s/shared && chmod 2775 %[1]s/shared
mkdir %[1]s/shared/sub && echo data > %[1]s/shared/data.txt
printf '#!/bin/sh\nexit 0\n' > %[1]s/suid-tool && chmod 4755 %[1]s/suid-tool
printf '#!/bin/sh\nexit 0\n' > %[1]s/sgid-tool && chmod 2755 %[1]s/sgid-tool
mkdir %[2]s`, dir, dest)
	if out, err := env.VM.ExecAs(ctx, AliceUID, nil, "/bin/sh", "-ec", script); err != nil {
		t.Fatalf("cannot make the setuid/setgid entries as alice: %v\n%s", err, out)
	}
	source := manifestOf(t, ctx, env, dir, false)
	checkModes(t, "the source", source)

	mark := plug(t, ctx, env, tl, s)
	completeCycle(t, ctx, env, tl, mark, s, runOrder)
	// The run held logind's delay inhibitor, taken on a connection of its own.
	if journal, err := env.VM.Exec(ctx, "journalctl", "-b", "-u", "plugvaultd.service", "-o", "verbose", "--no-pager"); err != nil {
		t.Errorf("cannot read plugvaultd's journal: %v", err)
	} else if strings.Contains(journal, "cannot take a sleep inhibitor") {
		var errs []string
		for _, l := range strings.Split(journal, "\n") {
			if strings.Contains(l, "ERR=") {
				errs = append(errs, strings.TrimSpace(l))
			}
		}
		t.Errorf("the run took no sleep inhibitor: %s", strings.Join(errs, "; "))
	}
	snaps := listSnapshots(t, ctx, env, s)
	if len(snaps) != 1 {
		t.Fatalf("snapshots %+v, want one", snaps)
	}
	onStick(t, ctx, env, s, func(snapDir string) {
		got := manifestOf(t, ctx, env, snapshotSource(t, ctx, env, snapDir+"/"+snaps[0].Name)+"/setid", false)
		checkModes(t, "the snapshot", got)
		if diffs := compareTrees(source, got); len(diffs) > 0 {
			t.Errorf("the snapshot's setid directory differs from the source:\n  %s", strings.Join(diffs, "\n  "))
		}
	})
	tl.Note("snapshot %s keeps the setuid/setgid modes", snaps[0].Name)

	grantAlice(t, ctx, env, tl, "org.plugvault.restore")
	res := runCLI(t, ctx, env, AliceUID, nil, "restore", "--drive", s.Name, snaps[0].Name, strings.TrimPrefix(dir, "/"), dest)
	if res.Exit != 0 {
		t.Fatalf("plugvault restore: exit %d\n%s%s", res.Exit, res.Stdout, res.Stderr)
	}
	restored := manifestOf(t, ctx, env, dest+"/setid", false)
	checkModes(t, "the restored tree", restored)
	if diffs := compareTrees(source, restored); len(diffs) > 0 {
		t.Errorf("the restored tree differs from the source:\n  %s", strings.Join(diffs, "\n  "))
	}
	tl.Note("plugvault restore as alice keeps the setuid/setgid modes (%s)", res.Took.Round(100e6))
	pull(t, ctx, env, tl, s, true)
}

// checkModes asserts that tree (a manifest of the setid directory) holds setidEntries with
// their modes.
func checkModes(t *testing.T, what string, tree map[string]agentproto.Entry) {
	t.Helper()
	for p, want := range setidEntries {
		e, ok := tree[p]
		switch {
		case !ok:
			t.Errorf("%s has no %s", what, p)
		case e.Mode&0o7777 != want:
			t.Errorf("%s: %s has mode %04o, want %04o", what, p, e.Mode&0o7777, want)
		}
	}
}
