package e2e

import (
	"context"
	"fmt"
	"github.com/plugvault/plugvault/service/internal/logging"
	"strings"
	"testing"

	"github.com/plugvault/plugvault/service/e2e/agentproto"
)

// TestPackage proves the Debian package's maintainer scripts on a drive with a backup history.
// The guest booted with deb/current installed by dpkg -i (every scenario runs on it). Then:
// remove the package (the service stops, its files go, /etc/plugvault with config.toml and the
// drive's key stays), install the "previous" package and back up, upgrade to the current one
// (the service is restarted with the new binary) and back up again. "Previous" is this same
// tree built with an older version number (Install.PrevVersion), not an earlier commit: it
// proves the upgrade path of the scripts, not compatibility with an old release.
func TestPackage(t *testing.T) {
	env := vmEnv(t)
	tl, ctx := scenario(t, env)
	needDaemon(t, ctx, env, tl)
	s := env.Sticks["pkg"]
	checkInstalled(t, ctx, env, env.Install.Version)

	mark := plug(t, ctx, env, tl, s)
	st := completeCycle(t, ctx, env, tl, mark, s, runOrder)
	pull(t, ctx, env, tl, s, true)
	history := st.SnapshotCount
	if history < 1 {
		t.Fatalf("SnapshotCount = %d after a backup", history)
	}
	keep := etcDigest(t, ctx, env, s)

	t.Run("remove and reinstall", func(t *testing.T) {
		if out, err := env.VM.Exec(ctx, "dpkg", "-r", "plugvault"); err != nil {
			t.Fatalf("dpkg -r: %v\n%s", err, out)
		}
		tl.Note("dpkg -r plugvault")
		if out, _ := env.VM.Exec(ctx, "systemctl", "is-active", "plugvaultd.service"); strings.TrimSpace(out) == "active" {
			t.Error("plugvaultd is still active after dpkg -r")
		}
		if out, err := env.VM.Shell(ctx, "ls /usr/libexec/plugvault/plugvaultd /usr/bin/plugvault 2>&1 || true"); err != nil || !strings.Contains(out, "No such file") {
			t.Errorf("the binaries are still there after dpkg -r: %s %v", out, err)
		}
		if got := etcDigest(t, ctx, env, s); got != keep {
			t.Errorf("dpkg -r changed /etc/plugvault:\nbefore %s\nafter  %s", keep, got)
		}

		installDeb(t, ctx, env, tl, agentproto.DebPrev)
		checkInstalled(t, ctx, env, env.Install.PrevVersion)
		if got := etcDigest(t, ctx, env, s); got != keep {
			t.Errorf("the reinstall changed /etc/plugvault:\nbefore %s\nafter  %s", keep, got)
		}
		history = backUpOnceMore(t, ctx, env, tl, s, history, "after the reinstall")
	})

	t.Run("upgrade from the same tree built as an older version", func(t *testing.T) {
		pid := mainPID(t, ctx, env)
		installDeb(t, ctx, env, tl, agentproto.DebCurrent)
		checkInstalled(t, ctx, env, env.Install.Version)
		if got := mainPID(t, ctx, env); got == pid {
			t.Errorf("plugvaultd was not restarted by the upgrade (MainPID %s before and after)", pid)
		}
		if got := etcDigest(t, ctx, env, s); got != keep {
			t.Errorf("the upgrade changed /etc/plugvault:\nbefore %s\nafter  %s", keep, got)
		}
		history = backUpOnceMore(t, ctx, env, tl, s, history, "after the upgrade")
		tl.Note("after remove, reinstall and upgrade the drive keeps backing up: %d snapshots", history)
	})

	t.Run("metrics and the journal catalog", func(t *testing.T) {
		prom, err := env.VM.Exec(ctx, "cat", GuestMetricsDir+"/plugvault.prom")
		if err != nil {
			t.Fatalf("no metrics file after a run: %v", err)
		}
		label := fmt.Sprintf(`{drive=%q,luks_uuid=%q}`, s.Name, s.UUID)
		for _, want := range []string{
			"plugvault_last_run_success" + label + " 1\n",
			fmt.Sprintf("plugvault_snapshots%s %d\n", label, history),
			"plugvault_free_bytes" + label + " ",
			"plugvault_last_run_duration_seconds" + label + " ",
		} {
			if !strings.Contains(prom, want) {
				t.Errorf("plugvault.prom lacks %q:\n%s", want, prom)
			}
		}
		cat, err := env.VM.Exec(ctx, "journalctl", "--list-catalog")
		if err != nil {
			t.Fatal(err)
		}
		out, err := env.VM.Exec(ctx, "journalctl", "--no-pager", "-o", "cat", "MESSAGE_ID="+logging.MessageBackupCompleted, "LUKS_UUID="+s.UUID)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(cat, logging.MessageBackupCompleted+" plugvault: ") {
			t.Errorf("the installed catalog does not explain %s:\n%s", logging.MessageBackupCompleted, cat)
		}
		if n := strings.Count(out, "backup completed\n"); n < 3 {
			t.Errorf("%d 'backup completed' journal entries with the MESSAGE_ID for %s, want one per run (3 or more)", n, s.Name)
		}
		tl.Note("plugvault.prom and the journal's MESSAGE_ID entries describe the runs")
	})

	t.Run("purge deletes the configuration and the keys", func(t *testing.T) {
		if out, err := env.VM.Exec(ctx, "dpkg", "--purge", "plugvault"); err != nil {
			t.Fatalf("dpkg --purge: %v\n%s", err, out)
		}
		tl.Note("dpkg --purge plugvault")
		out, _ := env.VM.Shell(ctx, "ls -d /etc/plugvault "+GuestMetricsDir+"/plugvault.prom /etc/systemd/system/multi-user.target.wants/plugvaultd.service 2>&1 || true")
		if strings.Count(out, "No such file") != 3 {
			t.Errorf("left after dpkg --purge:\n%s", out)
		}
		// Put the test configuration back for the scenarios that follow.
		if out, err := env.VM.Exec(ctx, "cp", "-a", "/run/plugvault-e2e/overlay/etc/plugvault", "/etc/"); err != nil {
			t.Fatalf("cannot restore /etc/plugvault: %v\n%s", err, out)
		}
		installDeb(t, ctx, env, tl, agentproto.DebCurrent)
		checkInstalled(t, ctx, env, env.Install.Version)
	})
	daemonHealthy(t, ctx, env, "")
}

// backUpOnceMore plugs s, waits for a successful run, pulls it and checks that the run added
// one snapshot to the history of n; it returns the new count.
func backUpOnceMore(t *testing.T, ctx context.Context, env *Env, tl *Timeline, s *Stick, n uint32, when string) uint32 {
	t.Helper()
	mark := plug(t, ctx, env, tl, s)
	st := completeCycle(t, ctx, env, tl, mark, s, runOrder)
	pull(t, ctx, env, tl, s, true)
	if st.SnapshotCount != n+1 {
		t.Errorf("%s: SnapshotCount = %d, want %d", when, st.SnapshotCount, n+1)
	}
	return st.SnapshotCount
}

// installDeb installs one of the share's packages with dpkg -i (the image has every
// dependency, so apt-get -f install is never needed).
func installDeb(t *testing.T, ctx context.Context, env *Env, tl *Timeline, deb string) {
	t.Helper()
	if out, err := env.VM.Exec(ctx, "dpkg", "-i", "/run/plugvault-e2e/"+deb); err != nil {
		t.Fatalf("dpkg -i %s: %v\n%s", deb, err, out)
	}
	tl.Note("dpkg -i %s", deb)
}

// checkInstalled asserts that dpkg has the package at version, configured, and that the
// running daemon reports the same version on the bus.
func checkInstalled(t *testing.T, ctx context.Context, env *Env, version string) {
	t.Helper()
	out, err := env.VM.Exec(ctx, "dpkg-query", "-W", "-f", "${Status} ${Version}", "plugvault")
	if err != nil {
		t.Fatal(err)
	}
	if want := "install ok installed " + version; strings.TrimSpace(out) != want {
		t.Errorf("dpkg-query: %q, want %q", out, want)
	}
	out, err = env.VM.Exec(ctx, "busctl", "get-property", "org.plugvault.PlugVault1", "/org/plugvault/PlugVault1/Manager",
		"org.plugvault.PlugVault1.Manager", "Version")
	if err != nil {
		t.Fatalf("the daemon does not answer after the install: %v", err)
	}
	if want := `s "` + version + `"`; strings.TrimSpace(out) != want {
		t.Errorf("the daemon's Version is %s, want %s", strings.TrimSpace(out), want)
	}
}

// etcDigest describes /etc/plugvault: config.toml's and the drive key's content, owner and
// mode, and the keys directory's mode.
func etcDigest(t *testing.T, ctx context.Context, env *Env, s *Stick) string {
	t.Helper()
	out, err := env.VM.Shell(ctx, "cd /etc/plugvault && sha256sum config.toml keys/"+s.UUID+".key && stat -c '%n %U %a' . keys config.toml keys/"+s.UUID+".key")
	if err != nil {
		t.Fatalf("cannot read /etc/plugvault: %v", err)
	}
	return strings.Join(strings.Fields(out), " ")
}
