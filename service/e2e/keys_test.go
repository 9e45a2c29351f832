package e2e

import (
	"bytes"
	"strings"
	"testing"
)

// TestKeysSeal converts a drive's plain keyfile (as written before sealing existed) with
// `plugvault keys seal` as root: the file is sealed in place (root, 0400) with the guest's
// host key (systemd-creds, no TPM2 in this guest), holds the same key, no longer opens the
// stick by itself (a copy of /etc is useless), and plugvaultd still unlocks the drive with it
// and backs up. A second run has nothing left to seal.
func TestKeysSeal(t *testing.T) {
	env := vmEnv(t)
	tl, ctx := scenario(t, env)
	needDaemon(t, ctx, env, tl)
	s := env.Sticks["sealme"]
	path := guestKeyDir + "/" + s.UUID + ".key"

	res := runCLI(t, ctx, env, 0, nil, "keys", "seal")
	tl.Note("root: plugvault keys seal exit %d: %s", res.Exit, strings.TrimSpace(res.Stdout))
	if res.Exit != 0 || !strings.Contains(res.Stdout, "sealed "+path+"\n") {
		t.Fatalf("plugvault keys seal: exit %d\nstdout: %s\nstderr: %s", res.Exit, res.Stdout, res.Stderr)
	}
	key := checkKeyFile(t, ctx, env, s.UUID)
	if !bytes.Equal(key, s.Key) {
		t.Errorf("the sealed file holds another key than the stick's")
	}
	if out, err := env.VM.Exec(ctx, "stat", "-c", "%s", "/var/lib/systemd/credential.secret"); err != nil {
		t.Errorf("no host key after sealing: %v %s", err, out)
	}

	mark := plug(t, ctx, env, tl, s)
	completeCycle(t, ctx, env, tl, mark, s, runOrder)
	tl.Note("plugvaultd unsealed the key and backed up")
	// The stick is locked and still plugged: the sealed file itself is no key.
	dev, err := env.VM.Exec(ctx, "readlink", "-f", "/dev/disk/by-id/usb-QEMU_QEMU_HARDDISK_"+s.Serial+"-0:0")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := env.VM.Exec(ctx, "cryptsetup", "open", "--test-passphrase", "--key-file="+path, strings.TrimSpace(dev)); err == nil {
		t.Errorf("the sealed keyfile opens the stick by itself: %s", out)
	}
	pull(t, ctx, env, tl, s, true)

	res = runCLI(t, ctx, env, 0, nil, "keys", "seal")
	if res.Exit != 0 || strings.Contains(res.Stdout, path) {
		t.Errorf("second plugvault keys seal: exit %d, %q; want nothing sealed", res.Exit, res.Stdout)
	}
}
