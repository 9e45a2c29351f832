// Command plugvault-demo is `make demo`: it builds plugvault, boots a throwaway Debian guest
// under QEMU, plugs a virtual encrypted USB stick into it and narrates what plugvault does with
// it, from the kernel noticing the stick to "safe to remove", then shows where the snapshot is
// and what it holds. Needs root (it builds the guest image and the stick) and the host tools in
// service/e2e/README.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/e2e"
	"github.com/plugvault/plugvault/service/e2e/agentproto"
)

func main() {
	cache := flag.String("cache", e2e.DefaultCacheDir(), "guest image cache")
	flag.Parse()
	if err := run(*cache); err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\n", err)
		os.Exit(1)
	}
}

var start = time.Now()

func say(format string, args ...any) {
	fmt.Printf("[%6.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
}

func run(cache string) error {
	if os.Geteuid() != 0 {
		return errors.New("cannot run the demo: it needs root (it builds a guest image and a LUKS stick image)")
	}
	repo, err := e2e.RepoRoot()
	if err != nil {
		return err
	}
	out := filepath.Join(repo, "e2e-out", "demo")
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	logPath := filepath.Join(out, "setup.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()

	fmt.Println("plugvault demo: plug in your encrypted backup stick, and the machine backs up to it.")
	fmt.Println("Everything happens inside a throwaway QEMU virtual machine running Debian 12; your own")
	fmt.Println("disks are not touched. Details of the setup go to " + logPath + ".")
	fmt.Println()
	say("Preparing: the guest image (cached after the first run); a virtual 512 MiB USB stick")
	say("set up as an enrolled backup drive (LUKS2 with a passphrase slot and a fast keyfile")
	say("slot, btrfs inside); plugvault's Debian package built (make deb) and installed into the")
	say("guest with dpkg -i; then booting the guest (TCG emulation: this takes a minute or so)...")
	ctx := context.Background()
	env, err := e2e.Setup(ctx, e2e.SetupConfig{Repo: repo, Out: out, Cache: cache, Log: logf,
		Sticks:        []e2e.StickPlan{{Spec: e2e.StickSpec{Name: "demo-stick", Label: "MyBackups"}, Enrolled: true, Key: true}},
		RequireDaemon: true})
	if err != nil {
		return fmt.Errorf("%w\n(what setup did is in %s; the serial console in %s)", err, logPath,
			filepath.Join(out, "_run", "console.log"))
	}
	defer env.Close()
	for _, l := range env.Setup {
		say("  %s", strings.Join(strings.Fields(l), " "))
	}
	vm, stick := env.VM, env.Sticks["demo-stick"]
	path := string(api.DrivePath(stick.UUID))
	say("The guest is up. plugvaultd runs as a systemd service; the stick is enrolled in")
	say("/etc/plugvault/config.toml (source: %s, the home of user alice) and its key is in", e2e.SourceDir)
	say("/etc/plugvault/keys/%s.key.", stick.UUID)
	fmt.Println()

	mark, err := vm.Mark(ctx)
	if err != nil {
		return err
	}
	deadline, plugMark := time.Now().Add(5*time.Minute), mark
	plugged, err := vm.Plug(ctx, stick)
	if err != nil {
		return err
	}
	say("Plugging in the stick (serial %s)...", stick.Serial)
	last, lastProgress, kernelSaid := "", time.Time{}, false
	props := map[string]string{} // the drive's properties so far: a signal carries only the changed ones
	// kernel narrates the kernel's udev event for the stick. plugvaultd reacts to that event;
	// the agent's own udev listener may hear of it a few milliseconds after plugvaultd has
	// already said so on the bus, so the kernel line is printed first, at the earlier time.
	kernel := func(before agentproto.Event) error {
		if kernelSaid {
			return nil
		}
		kernelSaid = true
		ev, err := vm.Wait(ctx, plugMark, agentproto.KindUdev, "", map[string]string{"ACTION": "add", "DEVTYPE": "disk",
			"ID_SERIAL_SHORT": stick.Serial}, time.Until(deadline))
		if err != nil {
			return fmt.Errorf("cannot see the stick in udev: %w", err)
		}
		at := vm.HostTime(ev.Time)
		if b := vm.HostTime(before.Time); before.Seq != 0 && b.Before(at) {
			at = b
		}
		say("+%.2fs  the kernel sees a new USB disk %s (%s %s) holding a LUKS container, UUID %s",
			at.Sub(plugged).Seconds(), ev.Props["DEVNAME"], ev.Props["ID_VENDOR"], ev.Props["ID_MODEL"], ev.Props["ID_FS_UUID"])
		return nil
	}
	for {
		ev, err := vm.Wait(ctx, mark, "", "", nil, time.Until(deadline))
		if err != nil {
			return fmt.Errorf("cannot follow the backup: %w", err)
		}
		mark = ev.Seq
		rel := vm.HostTime(ev.Time).Sub(plugged).Seconds()
		if ev.Kind == agentproto.KindDrive && ev.Path == path {
			for k, v := range ev.Props {
				props[k] = v
			}
		}
		switch {
		case ev.Kind == agentproto.KindUdev && ev.Props["ID_SERIAL_SHORT"] == stick.Serial && ev.Props["DEVTYPE"] == "disk" && ev.Props["ACTION"] == "add":
			if err := kernel(agentproto.Event{}); err != nil {
				return err
			}
		case ev.Kind == agentproto.KindDrive && ev.Path == path && ev.State != last && ev.State != string(api.StateAbsent):
			if err := kernel(ev); err != nil {
				return err
			}
			last = ev.State
			say("+%.2fs  %s", rel, narrate(ev))
			if ev.State == string(api.StateSafeToRemove) || ev.State == string(api.StateFailed) {
				return finish(ctx, env, stick, ev)
			}
		case ev.Kind == agentproto.KindDrive && ev.Path == path && last == string(api.StateBackingUp) && ev.Props["BytesDone"] != "" &&
			time.Since(lastProgress) > time.Second:
			lastProgress = time.Now()
			say("+%.2fs      %s", rel, copied(props))
		}
	}
}

func narrate(ev agentproto.Event) string {
	text := map[string]string{
		"present":             "plugvault recognises the stick by its LUKS UUID",
		"unlocking":           "unlocking it with the keyfile (cryptsetup, key on stdin)",
		"awaiting-passphrase": "the keyfile did not work: waiting for the passphrase",
		"mounting":            "unlocked; mounting the btrfs filesystem inside under /run/plugvault",
		"backing-up":          "backing up " + e2e.SourceDir + " (the engine runs as alice, not root)",
		"finishing":           "copied; flushing and turning the partial snapshot into a complete one",
		"unmounting":          "unmounting",
		"locking":             "locking the LUKS container",
		"safe-to-remove":      "SAFE TO REMOVE: backup complete, the stick is locked",
		"failed":              "FAILED",
	}[ev.State]
	if text == "" {
		text = ev.State
	}
	// The daemon's own words (StateReason) matter where they say more than the state.
	if r := ev.Props["StateReason"]; r != "" && (ev.State == "failed" || ev.State == "awaiting-passphrase") {
		text += ": " + r
	}
	return text
}

// copied renders a progress update: "copied 1.4 MiB of 12.0 MiB".
func copied(p map[string]string) string {
	var done, total uint64
	fmt.Sscan(p["BytesDone"], &done)
	fmt.Sscan(p["BytesTotal"], &total)
	if total == 0 {
		return fmt.Sprintf("looking for changes, copied %s so far", mib(done))
	}
	return fmt.Sprintf("copied %s of %s", mib(done), mib(total))
}

func mib(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// finish shows the result: where the snapshot is on the stick and what it holds.
func finish(ctx context.Context, env *e2e.Env, stick *e2e.Stick, ev agentproto.Event) error {
	vm := env.VM
	res, err := vm.Call(ctx, 0, "DriveStatus", string(api.DrivePath(stick.UUID)), nil)
	if err != nil {
		return err
	}
	var st api.DriveStatus
	json.Unmarshal(res.JSON, &st)
	if ev.State != string(api.StateSafeToRemove) {
		return fmt.Errorf("the backup failed: %s", st.StateReason)
	}
	res, err = vm.Call(ctx, 0, "ListSnapshots", string(api.DrivePath(stick.UUID)), nil)
	if err != nil || res.Err != nil {
		return fmt.Errorf("cannot list the snapshots: %v %v", err, res.Err)
	}
	var snaps []api.Snapshot
	json.Unmarshal(res.JSON, &snaps)
	fmt.Println()
	if len(snaps) == 0 {
		return errors.New("the drive reports no snapshot")
	}
	newest := snaps[len(snaps)-1]
	say("Result: %s. The stick holds %d snapshot(s); the new one holds %s.", st.LastResult, len(snaps), mib(newest.Bytes))
	say("Opening the stick read-only to look inside (as you would on another machine):")
	dev, err := vm.Exec(ctx, "readlink", "-f", "/dev/disk/by-id/usb-QEMU_QEMU_HARDDISK_"+stick.Serial+"-0:0")
	if err != nil {
		return err
	}
	if _, err := vm.ExecAs(ctx, 0, stick.Key, "cryptsetup", "open", "--readonly", "--key-file=-", strings.TrimSpace(dev), "demo"); err != nil {
		return err
	}
	defer vm.Exec(context.Background(), "cryptsetup", "close", "demo")
	if _, err := vm.Shell(ctx, "mkdir -p /mnt/demo && mount -o ro /dev/mapper/demo /mnt/demo"); err != nil {
		return err
	}
	defer vm.Exec(context.Background(), "umount", "/mnt/demo")
	snapDir := "plugvault/" + e2e.GuestHost + "/" + newest.Name
	say("The snapshot is <stick>/%s (taken %s).", snapDir, time.Unix(newest.Created, 0).UTC().Format(time.RFC3339))
	summary, _ := vm.Shell(ctx, "cd /mnt/demo/"+snapDir+e2e.SourceDir+" && echo \"$(find . -type f | wc -l) regular files, $(find . -type d | wc -l) directories, $(find . -type l | wc -l) symlinks\"")
	say("It is a plain directory tree, a browsable copy of alice's home (%s):", strings.TrimSpace(summary))
	listing, _ := vm.Shell(ctx, "cd /mnt/demo/"+snapDir+" && find . -mindepth 1 -maxdepth 3 -type d | sort | head -20")
	for _, l := range strings.Split(strings.TrimSpace(listing), "\n") {
		l = strings.TrimPrefix(l, "./") + "/"
		if l == ".plugvault/" {
			l += "  (plugvault's own records: what the snapshot holds, and how the run went)"
		}
		fmt.Println("           " + l)
	}
	same, _ := vm.Shell(ctx, "cd /mnt/demo/"+snapDir+" && src=$(find . -path '*docs/readme.txt' | head -1) && cmp \"$src\" "+e2e.SourceDir+"/docs/readme.txt && echo \"${src#./} is identical to the original\"")
	if s := strings.TrimSpace(same); s != "" {
		say("%s", s)
	}
	say("Pulling the stick out. Done.")
	say("Next: `make e2e` runs every scenario (pulls, power cuts, passphrases, polkit, enroll);")
	say("on a real machine, `plugvault enroll /dev/sdX` formats and enrolls your own stick.")
	_, err = vm.Pull(ctx, stick)
	return err
}
