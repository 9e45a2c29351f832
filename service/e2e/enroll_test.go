package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/e2e/agentproto"
	"github.com/plugvault/plugvault/service/internal/keyseal"
	"github.com/plugvault/plugvault/service/internal/sysexec"
)

// The scenarios of the plugvault CLI's enroll, adopt and forget verbs, as the tray's user
// runs them: alice, with a polkit rule that grants her org.plugvault.enroll and
// org.plugvault.configure (a desktop user gets the same through auth_admin_keep and a password
// dialog). They run after TestSmoke and TestHarnessSelfCheck and before the daemon scenarios,
// in the same boot.

const (
	guestCLI       = "/usr/bin/plugvault"
	guestConfig    = "/etc/plugvault/config.toml"
	guestKeyDir    = "/etc/plugvault/keys"
	guestRulesDir  = "/etc/udev/rules.d"
	enrolledName   = "e2e-enrolled"
	enrollPass     = "pw"
	alicePolkitRul = "/etc/polkit-1/rules.d/50-plugvault-e2e-alice.rules"
)

// CLI exit codes (service/cmd/plugvault exitcode.go, `plugvault help exit-codes`).
const (
	cliExitUsage = 2 // invalid argument: the device is not a removable USB disk
	cliExitBusy  = 4 // the device is in use (mounted)
)

// cliResult is one run of the plugvault CLI in the guest.
type cliResult struct {
	Exit           int
	Stdout, Stderr string
	Took           time.Duration
}

// runCLI runs the plugvault CLI in the guest as uid, with stdin; a CLI that cannot be started
// or does not finish fails the test, a non-zero exit does not.
func runCLI(t *testing.T, ctx context.Context, env *Env, uid int, stdin []byte, args ...string) cliResult {
	t.Helper()
	start := time.Now()
	resp, err := env.VM.Agent.Do(ctx, agentproto.Request{Op: agentproto.OpExec, Argv: append([]string{guestCLI}, args...),
		UID: uid, Stdin: stdin, TimeoutMS: deadlineMS(ctx, 5*time.Minute)})
	if err != nil {
		t.Fatalf("plugvault %s: %v", strings.Join(args, " "), err)
	}
	if resp.Error != "" {
		t.Fatalf("plugvault %s: %s (stderr %s)", strings.Join(args, " "), resp.Error, resp.Stderr)
	}
	return cliResult{Exit: resp.Exit, Stdout: string(resp.Stdout), Stderr: string(resp.Stderr), Took: time.Since(start)}
}

// grantAlice installs a polkit rule that lets alice run the given actions without a password,
// for the rest of the test.
func grantAlice(t *testing.T, ctx context.Context, env *Env, tl *Timeline, actions ...string) {
	t.Helper()
	quoted := make([]string, len(actions))
	for i, a := range actions {
		quoted[i] = fmt.Sprintf("%q", a)
	}
	rule := fmt.Sprintf(`polkit.addRule(function(action, subject) {
    if (subject.user == "alice" && [%s].indexOf(action.id) >= 0) {
        return polkit.Result.YES;
    }
});
`, strings.Join(quoted, ", "))
	t.Cleanup(func() {
		env.VM.Shell(context.Background(), "rm -f "+alicePolkitRul+" && systemctl restart polkit.service")
	})
	// polkitd reads rules at start: restart it rather than wait for its file watch.
	if _, err := env.VM.ExecAs(ctx, 0, []byte(rule), "/bin/sh", "-ec", "cat > "+alicePolkitRul+" && systemctl restart polkit.service"); err != nil {
		t.Fatal(err)
	}
	tl.Add("polkit rule grants alice "+strings.Join(actions, ", "), time.Now())
}

// plugAndFind plugs s and returns its device node in the guest (from the udev add event).
func plugAndFind(t *testing.T, ctx context.Context, env *Env, tl *Timeline, s *Stick) string {
	t.Helper()
	mark := plug(t, ctx, env, tl, s)
	add := waitUdev(t, ctx, env, mark, s, "add")
	dev := add.Props["DEVNAME"]
	tl.Add("udev add "+dev, env.VM.HostTime(add.Time))
	if !strings.HasPrefix(dev, "/dev/sd") {
		t.Fatalf("stick %s appeared as %q, want /dev/sd*", s.Name, dev)
	}
	return dev
}

// keyslotKDF is a keyslot's key derivation as `cryptsetup luksDump --dump-json-metadata` shows it.
type keyslotKDF struct {
	Type       string `json:"type"`
	Iterations int    `json:"iterations"` // pbkdf2
	Time       int    `json:"time"`       // argon2
	Memory     int    `json:"memory"`     // argon2, KiB
}

// keyslots reads the LUKS2 keyslots of dev in the guest.
func keyslots(t *testing.T, ctx context.Context, env *Env, dev string) map[string]keyslotKDF {
	t.Helper()
	out, err := env.VM.Exec(ctx, "cryptsetup", "luksDump", "--dump-json-metadata", dev)
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		Keyslots map[string]struct {
			KDF keyslotKDF `json:"kdf"`
		} `json:"keyslots"`
	}
	if err := json.Unmarshal([]byte(out), &meta); err != nil {
		t.Fatalf("cannot parse the LUKS2 metadata of %s: %v", dev, err)
	}
	m := map[string]keyslotKDF{}
	for n, ks := range meta.Keyslots {
		m[n] = ks.KDF
	}
	return m
}

// guestDrive is a [[drive]] entry of the guest's config.toml.
type guestDrive struct {
	Name     string   `toml:"name"`
	LuksUUID string   `toml:"luks_uuid"`
	KeySlot  *int     `toml:"key_slot"`
	Sources  []string `toml:"sources"`
	RunAs    string   `toml:"run_as"`
}

// configDrives reads the guest's config.toml.
func configDrives(t *testing.T, ctx context.Context, env *Env) map[string]guestDrive {
	t.Helper()
	out, err := env.VM.Exec(ctx, "cat", guestConfig)
	if err != nil {
		t.Fatal(err)
	}
	var conf struct {
		Drives []guestDrive `toml:"drive"`
	}
	if err := toml.Unmarshal([]byte(out), &conf); err != nil {
		t.Fatalf("cannot parse %s: %v", guestConfig, err)
	}
	m := map[string]guestDrive{}
	for _, d := range conf.Drives {
		m[strings.ToLower(d.LuksUUID)] = d
	}
	return m
}

func listDrives(t *testing.T, ctx context.Context, env *Env) []string {
	t.Helper()
	var drives []string
	if res := call(t, ctx, env, 0, "ListDrives", nil, nil, &drives); res.Err != nil {
		t.Fatalf("ListDrives: %v", res.Err)
	}
	return drives
}

// waitDriveEvent waits for DriveAdded ("added") or DriveRemoved ("removed") of the drive of s.
func waitDriveEvent(t *testing.T, ctx context.Context, env *Env, mark uint64, s *Stick, what string) agentproto.Event {
	t.Helper()
	ev, err := env.VM.Wait(ctx, mark, agentproto.KindDrive, drivePath(s), map[string]string{"event": what}, cycleTimeout)
	if err != nil {
		t.Fatalf("no drive %s signal for %s: %v", what, s.Name, err)
	}
	return ev
}

// checkKeyFile asserts that the drive's key is /etc/plugvault/keys/UUID.key, root, 0400, in a
// root 0700 directory, sealed with systemd-creds, and returns the key inside.
func checkKeyFile(t *testing.T, ctx context.Context, env *Env, uuid string) []byte {
	t.Helper()
	path := guestKeyDir + "/" + uuid + ".key"
	out, err := env.VM.Exec(ctx, "stat", "-c", "%F %a %U:%G", guestKeyDir, path)
	if err != nil {
		t.Fatalf("the key of %s: %v", uuid, err)
	}
	want := "directory 700 root:root\nregular file 400 root:root\n"
	if out != want {
		t.Errorf("key directory and key file: %q, want %q", out, want)
	}
	stored, err := env.VM.Exec(ctx, "cat", path)
	if err != nil {
		t.Fatal(err)
	}
	return unsealKey(t, ctx, env, path, []byte(stored))
}

// unsealKey asserts that a keyfile's content is sealed (either form of keyseal) and returns the
// key inside, unsealed by keyseal itself with systemd-creds run in the guest (the guest's host
// key).
func unsealKey(t *testing.T, ctx context.Context, env *Env, path string, stored []byte) []byte {
	t.Helper()
	if !keyseal.IsSealed(stored) {
		t.Fatalf("the key file %s is not sealed: it starts %q", path, stored[:min(len(stored), 24)])
	}
	s := &keyseal.Sealer{Runner: guestRunner{env.VM}, Tool: "systemd-creds"}
	key, err := s.Unseal(ctx, stored)
	if err != nil {
		t.Fatalf("cannot unseal %s in the guest: %v", path, err)
	}
	if len(key) == 0 {
		t.Fatalf("the key sealed in %s is empty", path)
	}
	return key
}

// guestRunner is a sysexec.Runner that runs each tool in the guest as root.
type guestRunner struct{ vm *VM }

func (g guestRunner) Run(ctx context.Context, c sysexec.Cmd) (sysexec.Result, error) {
	var stdin []byte
	if c.Stdin != nil {
		b, err := io.ReadAll(c.Stdin)
		if err != nil {
			return sysexec.Result{}, err
		}
		stdin = b
	}
	out, err := g.vm.ExecAs(ctx, 0, stdin, append([]string{c.Path}, c.Args...)...)
	return sysexec.Result{Stdout: []byte(out)}, err
}

// backupOnNextPlug pulls s, plugs it again and checks that the daemon backs up alice's home
// to it (one new complete snapshot, equal to the source) and leaves it safe to remove.
func backupOnNextPlug(t *testing.T, ctx context.Context, env *Env, tl *Timeline, s *Stick, wantSnapshots int) {
	t.Helper()
	pull(t, ctx, env, tl, s, true)
	mark := plug(t, ctx, env, tl, s)
	completeCycle(t, ctx, env, tl, mark, s, runOrder)
	checkAllSnapshots(t, ctx, env, tl, s, wantSnapshots)
}

// TestEnroll enrolls a blank stick with `plugvault enroll` as alice (as the tray user does),
// checks everything enroll promises (LUKS2 with an argon2id passphrase slot and a PBKDF2
// keyfile slot, the key file, the config entry, the udev rule, the Drive object), then sees the
// drive backed up at once (it is plugged in) and again on its next plug, and finally forgets it with `plugvault forget` as root.
func TestEnroll(t *testing.T) {
	env := vmEnv(t)
	s := env.Sticks["blank"]
	enrolled := false
	t.Run("enroll", func(t *testing.T) {
		tl, ctx := scenario(t, env)
		needDaemon(t, ctx, env, tl)
		grantAlice(t, ctx, env, tl, api.ActionEnroll)
		dev := plugAndFind(t, ctx, env, tl, s)
		if out, _ := env.VM.Exec(ctx, "blkid", "-p", dev); strings.TrimSpace(out) != "" {
			t.Fatalf("the blank stick is not blank: %s", out)
		}
		drivesBefore := listDrives(t, ctx, env)
		mark, err := env.VM.Mark(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// alice asks for a header backup: the CLI writes it as her, plugvaultd only returns it.
		headerFile := "/tmp/" + enrolledName + ".luksheader"
		t.Cleanup(func() { env.VM.Exec(context.Background(), "rm", "-f", headerFile) })
		res := runCLI(t, ctx, env, AliceUID, []byte(enrollPass), "enroll", dev, "--yes", "--passphrase-stdin", "--name", enrolledName,
			"--header-backup", headerFile)
		tl.Add(fmt.Sprintf("alice: plugvault enroll %s exit %d (%.1fs)", dev, res.Exit, res.Took.Seconds()), time.Now())
		if res.Exit != 0 {
			t.Fatalf("plugvault enroll: exit %d\nstdout: %s\nstderr: %s", res.Exit, res.Stdout, res.Stderr)
		}
		enrolled = true
		out, err := env.VM.Exec(ctx, "cryptsetup", "luksUUID", dev)
		if err != nil {
			t.Fatal(err)
		}
		s.UUID, s.LUKS, s.FS = strings.TrimSpace(out), true, "btrfs"
		if !strings.Contains(res.Stdout, drivePath(s)) {
			t.Errorf("enroll's output does not name the new drive %s: %q", drivePath(s), res.Stdout)
		}

		// The header backup: alice's own file, 0600, the new drive's LUKS header (its UUID,
		// byte for byte the stick's header area).
		if out, err := env.VM.Exec(ctx, "stat", "-c", "%F %a %U:%G %s", headerFile); err != nil {
			t.Errorf("no header backup %s: %v", headerFile, err)
		} else if f := strings.Fields(out); len(f) != 5 || strings.Join(f[:4], " ") != "regular file 600 alice:alice" {
			t.Errorf("the header backup is %q, want a regular file, 600, alice's", strings.TrimSpace(out))
		} else {
			if out, err := env.VM.Exec(ctx, "cryptsetup", "luksUUID", headerFile); err != nil || strings.TrimSpace(out) != s.UUID {
				t.Errorf("cryptsetup luksUUID of the header backup: %q %v, want %s", strings.TrimSpace(out), err, s.UUID)
			}
			if _, err := env.VM.Shell(ctx, "head -c "+f[4]+" "+dev+" | cmp - "+headerFile); err != nil {
				t.Errorf("the header backup (%s bytes) is not the stick's header area: %v", f[4], err)
			}
			tl.Note("header backup %s: %s bytes, alice's, 0600, the stick's LUKS header", headerFile, f[4])
		}

		// The Drive object: DriveAdded, and ListDrives has it.
		ev := waitDriveEvent(t, ctx, env, mark, s, "added")
		tl.Add("DriveAdded "+drivePath(s), env.VM.HostTime(ev.Time))
		drivesAfter := listDrives(t, ctx, env)
		if !slices.Contains(drivesAfter, drivePath(s)) || len(drivesAfter) != len(drivesBefore)+1 {
			t.Errorf("ListDrives before %v, after %v: want the new drive added", drivesBefore, drivesAfter)
		}
		st := status(t, ctx, env, s)
		if st.Name != enrolledName {
			t.Errorf("the new drive is named %q, want %q", st.Name, enrolledName)
		}

		// LUKS2: the passphrase slot argon2id (cryptsetup's benchmarked default), the keyfile
		// slot PBKDF2 with 1000 iterations.
		slots := keyslots(t, ctx, env, dev)
		var kinds []string
		for n, kdf := range slots {
			kinds = append(kinds, fmt.Sprintf("slot %s %s (iterations %d, time %d, memory %d KiB)", n, kdf.Type, kdf.Iterations, kdf.Time, kdf.Memory))
		}
		slices.Sort(kinds)
		tl.Note("keyslots: %s", strings.Join(kinds, "; "))
		if len(slots) != 2 {
			t.Errorf("%d keyslots, want 2 (passphrase and keyfile)", len(slots))
		}
		if _, err := env.VM.ExecAs(ctx, 0, []byte(enrollPass), "cryptsetup", "open", "--test-passphrase", "--key-slot", "0", "--key-file=-", dev); err != nil {
			t.Errorf("the passphrase does not open slot 0: %v", err)
		}
		if slots["0"].Type != "argon2id" {
			t.Errorf("the passphrase slot 0 uses %q, want argon2id", slots["0"].Type)
		}

		// The key file, and the config entry that names its slot.
		s.Key = checkKeyFile(t, ctx, env, s.UUID)
		conf := configDrives(t, ctx, env)
		d, ok := conf[s.UUID]
		if !ok {
			t.Fatalf("%s has no [[drive]] with luks_uuid %s", guestConfig, s.UUID)
		}
		if d.Name != enrolledName || d.RunAs != "alice" || !slices.Equal(d.Sources, []string{SourceDir}) || d.KeySlot == nil {
			t.Errorf("the [[drive]] entry is %+v, want name %q, run_as alice, sources [%s], a key_slot", d, enrolledName, SourceDir)
		} else {
			kdf := slots[fmt.Sprint(*d.KeySlot)]
			if kdf.Type != "pbkdf2" || kdf.Iterations != 1000 {
				t.Errorf("the keyfile slot %d is %+v, want pbkdf2 with 1000 iterations", *d.KeySlot, kdf)
			}
			if _, err := env.VM.ExecAs(ctx, 0, s.Key, "cryptsetup", "open", "--test-passphrase", "--key-slot", fmt.Sprint(*d.KeySlot), "--key-file=-", dev); err != nil {
				t.Errorf("the key file does not open slot %d: %v", *d.KeySlot, err)
			}
		}

		// udev: the rule is in place and the replayed event carries UDISKS_IGNORE=1.
		rule := guestRulesDir + "/90-plugvault-" + s.UUID + ".rules"
		if _, err := env.VM.Exec(ctx, "test", "-f", rule); err != nil {
			t.Errorf("no udev rule %s", rule)
		}
		ch, err := env.VM.Wait(ctx, mark, agentproto.KindUdev, "", map[string]string{"ACTION": "change", "DEVTYPE": "disk",
			"ID_SERIAL_SHORT": s.Serial, "UDISKS_IGNORE": "1"}, cycleTimeout)
		if err != nil {
			t.Errorf("no udev change event with UDISKS_IGNORE=1 for the stick: %v", err)
		} else {
			tl.Add("udev change with UDISKS_IGNORE=1", env.VM.HostTime(ch.Time))
		}
		if out, err := env.VM.Exec(ctx, "udevadm", "info", "--query=property", "--name="+dev); err != nil || !strings.Contains(out, "\nUDISKS_IGNORE=1\n") {
			t.Errorf("udev database of %s lacks UDISKS_IGNORE=1: %v\n%s", dev, err, out)
		}
		if out, _ := env.VM.Exec(ctx, "blkid", "-p", "-o", "value", "-s", "TYPE", dev); strings.TrimSpace(out) != "crypto_LUKS" {
			t.Errorf("blkid says %q, want crypto_LUKS", strings.TrimSpace(out))
		}

		// The replayed event lets the daemon see the drive it has just learnt about: the stick
		// is plugged and its key known, so the first backup starts at once.
		completeCycle(t, ctx, env, tl, mark, s, runOrder)
		if snaps := listSnapshots(t, ctx, env, s); len(snaps) != 1 {
			t.Errorf("after the first backup: snapshots %+v, want one", snaps)
		}
		checkMappingIgnored(t, ctx, env, tl, mark, s)
	})
	if !enrolled {
		t.Fatal("not enrolled: the rest of TestEnroll cannot run")
	}
	t.Run("backup-on-next-plug", func(t *testing.T) {
		tl, ctx := scenario(t, env)
		needDaemon(t, ctx, env, tl)
		backupOnNextPlug(t, ctx, env, tl, s, 2)
		conf := configDrives(t, ctx, env)
		snaps := listSnapshots(t, ctx, env, s)
		if len(snaps) == 0 {
			t.Errorf("no snapshot on the enrolled drive")
		}
		tl.Note("the drive backs up %v as %s", conf[s.UUID].Sources, conf[s.UUID].RunAs)
		pull(t, ctx, env, tl, s, true)
	})
	t.Run("forget", func(t *testing.T) {
		tl, ctx := scenario(t, env)
		needDaemon(t, ctx, env, tl)
		mark, err := env.VM.Mark(ctx)
		if err != nil {
			t.Fatal(err)
		}
		res := runCLI(t, ctx, env, 0, nil, "forget", enrolledName, "--yes")
		tl.Add(fmt.Sprintf("root: plugvault forget %s exit %d", enrolledName, res.Exit), time.Now())
		if res.Exit != 0 {
			t.Fatalf("plugvault forget: exit %d\nstdout: %s\nstderr: %s", res.Exit, res.Stdout, res.Stderr)
		}
		ev := waitDriveEvent(t, ctx, env, mark, s, "removed")
		tl.Add("DriveRemoved "+drivePath(s), env.VM.HostTime(ev.Time))
		if slices.Contains(listDrives(t, ctx, env), drivePath(s)) {
			t.Errorf("ListDrives still lists %s", drivePath(s))
		}
		if _, ok := configDrives(t, ctx, env)[s.UUID]; ok {
			t.Errorf("%s still has the drive's entry", guestConfig)
		}
		for _, p := range []string{guestKeyDir + "/" + s.UUID + ".key", guestRulesDir + "/90-plugvault-" + s.UUID + ".rules"} {
			if _, err := env.VM.Exec(ctx, "test", "!", "-e", p); err != nil {
				t.Errorf("%s is still there after forget", p)
			}
		}
		// The object is gone: the bus answers for its path as for any unknown one (godbus says
		// UnknownInterface or UnknownObject).
		if res := call(t, ctx, env, 0, "DriveStatus", s, nil, nil); res.Err == nil ||
			res.ErrorName != api.ErrorPrefix+"NotFound" && !strings.HasPrefix(res.ErrorName, "org.freedesktop.DBus.Error.Unknown") {
			t.Errorf("DriveStatus of the forgotten drive: %q %v, want an unknown object", res.ErrorName, res.Err)
		}
		tl.Note("forget removed the Drive object, the [[drive]] entry, the key and the udev rule")
	})
}

// checkMappingIgnored asserts that every udev change event of the mapping of s after mark (the
// one enroll opens for mkfs, the daemon's for the backup) carried UDISKS_IGNORE=1: the rule enroll
// and adopt install covers the mapping too, from the start.
func checkMappingIgnored(t *testing.T, ctx context.Context, env *Env, tl *Timeline, mark uint64, s *Stick) {
	t.Helper()
	evs, err := env.VM.Events(ctx, mark)
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, ev := range evs {
		if ev.Kind != agentproto.KindUdev || ev.Props["DM_NAME"] != "plugvault-"+s.UUID || ev.Props["ACTION"] != "change" {
			continue
		}
		seen++
		if ev.Props["UDISKS_IGNORE"] != "1" {
			t.Errorf("udev change of the mapping %s (event %d, %s) lacks UDISKS_IGNORE=1", ev.Props["DEVNAME"], ev.Seq,
				env.VM.HostTime(ev.Time).Format("15:04:05.000"))
		}
	}
	if seen == 0 {
		t.Errorf("no udev change event of the mapping plugvault-%s", s.UUID)
	}
	tl.Note("%d udev change event(s) of the mapping plugvault-%s, checked for UDISKS_IGNORE=1", seen, s.UUID)
}

// TestAdopt adopts hand-prepared sticks with `plugvault adopt --key-file` as alice, without
// extra flags unless said: the classic tutorial's stick (luksFormat with a passphrase,
// luksAddKey with a 1 MiB keyfile, ext4 inside; argon2id with a small cost) once with
// --keep-slot, which keeps its argon2id keyfile slot (and seals the 1 MiB key in keyseal's
// envelope), and once as is, which must add a PBKDF2 slot for a
// new key; and the seed's recipe followed exactly in the guest (luksFormat with cryptsetup's
// benchmarked argon2id defaults, a 1 MiB keyfile from dd, luksAddKey), which must be adopted in
// one step the same way. Each is backed up at once (it is plugged) and again on its next plug.
func TestAdopt(t *testing.T) {
	env := vmEnv(t)
	for _, tc := range []struct {
		stick   string
		addSlot bool
		flags   []string
	}{{"tutorial", false, []string{"--keep-slot"}}, {"tutorial-fast", true, nil}, {"seed", true, nil}} {
		t.Run(tc.stick, func(t *testing.T) {
			tl, ctx := scenario(t, env)
			needDaemon(t, ctx, env, tl)
			grantAlice(t, ctx, env, tl, api.ActionConfigure)
			s := env.Sticks[tc.stick]
			dev := plugAndFind(t, ctx, env, tl, s)
			if tc.stick == "seed" {
				seedRecipe(t, ctx, env, tl, s, dev)
			}

			// The tutorial's last step, which needs device-mapper: open, mkfs, close.
			start := time.Now()
			if _, err := env.VM.ExecAs(ctx, 0, s.Key, "/bin/sh", "-ec", "cryptsetup open --key-file=- "+dev+
				" tutorial && mkfs.ext4 -q -L backup /dev/mapper/tutorial && cryptsetup close tutorial"); err != nil {
				t.Fatal(err)
			}
			tl.Add(fmt.Sprintf("tutorial: cryptsetup open, mkfs.ext4, close (%.1fs)", time.Since(start).Seconds()), time.Now())
			before := keyslots(t, ctx, env, dev)
			if before["1"].Type != "argon2id" || len(before) != 2 {
				t.Fatalf("the stick's keyslots are %+v, want 0 and 1 argon2id", before)
			}

			// alice keeps the keyfile where she can read it and the backup does not.
			keyFile := "/tmp/" + tc.stick + ".key"
			if _, err := env.VM.ExecAs(ctx, AliceUID, s.Key, "/bin/sh", "-ec", "umask 077 && cat > "+keyFile); err != nil {
				t.Fatal(err)
			}
			args := append([]string{"adopt", dev, "--key-file", keyFile, "--name", tc.stick}, tc.flags...)
			mark, err := env.VM.Mark(ctx)
			if err != nil {
				t.Fatal(err)
			}
			res := runCLI(t, ctx, env, AliceUID, nil, args...)
			tl.Add(fmt.Sprintf("alice: plugvault %s exit %d (%.1fs)", strings.Join(args, " "), res.Exit, res.Took.Seconds()), time.Now())
			if res.Exit != 0 {
				t.Fatalf("plugvault adopt: exit %d\nstdout: %s\nstderr: %s", res.Exit, res.Stdout, res.Stderr)
			}
			ev := waitDriveEvent(t, ctx, env, mark, s, "added")
			tl.Add("DriveAdded "+drivePath(s), env.VM.HostTime(ev.Time))

			after := keyslots(t, ctx, env, dev)
			d, ok := configDrives(t, ctx, env)[s.UUID]
			if !ok || d.KeySlot == nil {
				t.Fatalf("%s has no [[drive]] with luks_uuid %s and a key_slot: %+v", guestConfig, s.UUID, d)
			}
			if d.RunAs != "alice" || !slices.Equal(d.Sources, []string{SourceDir}) || d.Name != tc.stick {
				t.Errorf("the [[drive]] entry is %+v, want name %q, run_as alice, sources [%s]", d, tc.stick, SourceDir)
			}
			stored := checkKeyFile(t, ctx, env, s.UUID)
			announced := strings.Contains(res.Stderr, "adds a fast keyfile slot")
			if announced != tc.addSlot {
				t.Errorf("adopt %v: the fast slot announced: %v, want %v; stderr: %s", tc.flags, announced, tc.addSlot, res.Stderr)
			}
			if tc.addSlot {
				if len(after) != 3 {
					t.Errorf("keyslots after adopt: %+v, want a third", after)
				}
				kdf := after[fmt.Sprint(*d.KeySlot)]
				if *d.KeySlot < 2 || kdf.Type != "pbkdf2" || kdf.Iterations != 1000 {
					t.Errorf("the drive's key_slot %d is %+v, want a new pbkdf2 slot with 1000 iterations", *d.KeySlot, kdf)
				}
				if bytes.Equal(stored, s.Key) {
					t.Errorf("the stored key is the tutorial's keyfile; want a new random key for the new slot")
				}
				if _, err := env.VM.ExecAs(ctx, 0, stored, "cryptsetup", "open", "--test-passphrase", "--key-slot", fmt.Sprint(*d.KeySlot), "--key-file=-", dev); err != nil {
					t.Errorf("the stored key does not open slot %d: %v", *d.KeySlot, err)
				}
				tl.Note("adopt: slot %d pbkdf2 (%d iterations) added for a new key; slots 0 and 1 stay %s (%d KiB, %d iterations), %s",
					*d.KeySlot, kdf.Iterations, after["0"].Type, after["0"].Memory, after["0"].Time, after["1"].Type)
			} else {
				if len(after) != len(before) || *d.KeySlot != 1 {
					t.Errorf("keyslots after adopt: %+v (key_slot %d), want the tutorial's two, key_slot 1", after, *d.KeySlot)
				}
				if !bytes.Equal(stored, s.Key) {
					t.Errorf("the stored key is not alice's keyfile")
				}
				tl.Note("adopted as is: key_slot 1 (%s), the keyfile copied into %s", after["1"].Type, guestKeyDir)
			}
			s.Key = stored
			s.FS = "ext4"

			// Adopt, too, replays the udev event: the first backup starts at once.
			completeCycle(t, ctx, env, tl, mark, s, runOrder)
			checkMappingIgnored(t, ctx, env, tl, mark, s)
			backupOnNextPlug(t, ctx, env, tl, s, 2)
			pull(t, ctx, env, tl, s, true)
			env.VM.Exec(ctx, "rm", "-f", keyFile)
		})
	}
}

// seedRecipe prepares the blank stick s (at dev in the guest) exactly as the seed's recipe
// says, in the guest and with cryptsetup's own benchmark: luksFormat (argon2id, benchmarked;
// the passphrase piped in), a 1 MiB keyfile from /dev/urandom, luksAddKey DEV KEY. The keyfile
// becomes s.Key and the passphrase s.Passphrase.
func seedRecipe(t *testing.T, ctx context.Context, env *Env, tl *Timeline, s *Stick, dev string) {
	t.Helper()
	pass := "seed recipe passphrase"
	start := time.Now()
	if _, err := env.VM.ExecAs(ctx, 0, []byte(pass+"\n"), "cryptsetup", "luksFormat", "--batch-mode", dev); err != nil {
		t.Fatal(err)
	}
	tl.Add(fmt.Sprintf("seed recipe: cryptsetup luksFormat %s (%.1fs)", dev, time.Since(start).Seconds()), time.Now())
	start = time.Now()
	if _, err := env.VM.Exec(ctx, "dd", "if=/dev/urandom", "bs=1M", "count=1", "of=/root/seed.key", "status=none"); err != nil {
		t.Fatal(err)
	}
	if _, err := env.VM.ExecAs(ctx, 0, []byte(pass+"\n"), "cryptsetup", "luksAddKey", dev, "/root/seed.key"); err != nil {
		t.Fatal(err)
	}
	tl.Add(fmt.Sprintf("seed recipe: dd bs=1M count=1 of=KEY, cryptsetup luksAddKey %s KEY (%.1fs)", dev, time.Since(start).Seconds()), time.Now())
	key, err := env.VM.Exec(ctx, "/bin/sh", "-ec", "base64 -w0 /root/seed.key && rm /root/seed.key")
	if err != nil {
		t.Fatal(err)
	}
	if s.Key, err = base64.StdEncoding.DecodeString(key); err != nil || len(s.Key) != 1<<20 {
		t.Fatalf("the seed keyfile: %d bytes, %v; want 1 MiB", len(s.Key), err)
	}
	s.Passphrase = []byte(pass)
	uuid, err := env.VM.Exec(ctx, "cryptsetup", "luksUUID", dev)
	if err != nil {
		t.Fatal(err)
	}
	s.UUID, s.LUKS = strings.TrimSpace(uuid), true
	ks := keyslots(t, ctx, env, dev)
	tl.Note("seed recipe: slot 0 %s (%d KiB, %d iterations), slot 1 %s (%d KiB, %d iterations), as cryptsetup benchmarked them in the guest",
		ks["0"].Type, ks["0"].Memory, ks["0"].Time, ks["1"].Type, ks["1"].Memory, ks["1"].Time)
}

// TestEnrollRefusals proves that enroll refuses, with the documented exit code and without
// changing anything, the system disk (not USB) and a stick that is mounted. root runs them:
// the refusal comes from plugvaultd's checks, not from polkit.
func TestEnrollRefusals(t *testing.T) {
	env := vmEnv(t)
	tl, ctx := scenario(t, env)
	needDaemon(t, ctx, env, tl)
	state := func() string {
		out, err := env.VM.Shell(ctx, "sha256sum "+guestConfig+"; ls -la "+guestKeyDir+" "+guestRulesDir)
		if err != nil {
			t.Fatal(err)
		}
		var drives []string
		call(t, ctx, env, 0, "ListDrives", nil, nil, &drives)
		return out + strings.Join(drives, "\n")
	}
	ident := func(dev string) string {
		out, err := env.VM.Exec(ctx, "blkid", "-p", "-o", "export", dev)
		if err != nil {
			t.Fatalf("blkid %s: %v", dev, err)
		}
		return out
	}

	// The system disk.
	before, vda := state(), ident("/dev/vda")
	res := runCLI(t, ctx, env, 0, []byte(enrollPass), "enroll", "/dev/vda", "--yes", "--passphrase-stdin", "--name", "system")
	tl.Add(fmt.Sprintf("plugvault enroll /dev/vda: exit %d: %s", res.Exit, lastLine(res.Stderr)), time.Now())
	if res.Exit != cliExitUsage || !strings.Contains(res.Stderr, "not a removable USB disk") {
		t.Errorf("enroll /dev/vda: exit %d, stderr %q; want exit %d, not a removable USB disk", res.Exit, res.Stderr, cliExitUsage)
	}
	if after := state(); after != before {
		t.Errorf("enroll /dev/vda changed the configuration:\nbefore %s\nafter %s", before, after)
	}
	if after := ident("/dev/vda"); after != vda {
		t.Errorf("enroll /dev/vda changed the disk: %s, was %s", after, vda)
	}

	// A mounted stick.
	s := env.Sticks["mounted"]
	dev := plugAndFind(t, ctx, env, tl, s)
	if _, err := env.VM.Shell(ctx, "mkdir -p /mnt/mounted && mount "+dev+" /mnt/mounted && echo keep > /mnt/mounted/keep.txt && sync"); err != nil {
		t.Fatal(err)
	}
	tl.Add("mounted "+dev+" on /mnt/mounted, wrote keep.txt", time.Now())
	before, id := state(), ident(dev)
	res = runCLI(t, ctx, env, 0, []byte(enrollPass), "enroll", dev, "--yes", "--passphrase-stdin", "--name", "mounted")
	tl.Add(fmt.Sprintf("plugvault enroll %s (mounted): exit %d: %s", dev, res.Exit, lastLine(res.Stderr)), time.Now())
	if res.Exit != cliExitBusy || !strings.Contains(res.Stderr, "is mounted on /mnt/mounted") {
		t.Errorf("enroll a mounted stick: exit %d, stderr %q; want exit %d, is mounted on /mnt/mounted", res.Exit, res.Stderr, cliExitBusy)
	}
	if after := state(); after != before {
		t.Errorf("enroll of a mounted stick changed the configuration:\nbefore %s\nafter %s", before, after)
	}
	if after := ident(dev); after != id {
		t.Errorf("enroll of a mounted stick changed it: %s, was %s", after, id)
	}
	if out, err := env.VM.Shell(ctx, "cat /mnt/mounted/keep.txt && umount /mnt/mounted"); err != nil || out != "keep\n" {
		t.Errorf("the mounted stick's file after the refusal: %q %v", out, err)
	}
	if _, err := env.VM.Pull(ctx, s); err != nil {
		t.Fatal(err)
	}
	tl.Add("pulled stick "+s.Name, time.Now())
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
