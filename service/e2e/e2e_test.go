package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plugvault/plugvault/service/api/apitest"
	"github.com/plugvault/plugvault/service/e2e/agentproto"
)

var (
	runVMTests = flag.Bool("run-vm-tests", false, "run the QEMU guest tests (needs root, qemu-system-x86, mmdebstrap, cryptsetup, btrfs-progs, e2fsprogs)")
	outDir     = flag.String("e2e-out", "", "where the report, logs and run files go (default: <repo>/e2e-out)")
	cacheDir   = flag.String("e2e-cache", "", "guest image cache (default: $PLUGVAULT_E2E_CACHE, $XDG_CACHE_HOME/plugvault-e2e or /var/cache/plugvault-e2e)")
)

// The sticks of the whole run: the guest's config lists the enrolled ones, so all of them are
// made before the one boot that serves every scenario.
var stickPlans = []StickPlan{
	{Spec: StickSpec{Name: "smoke"}},                                             // an unknown LUKS stick: the smoke test uses it by hand
	{Spec: StickSpec{Name: "plain", Plain: true}},                                // no LUKS at all
	{Spec: StickSpec{Name: "happy"}, Enrolled: true, Key: true},                  // a, b on btrfs
	{Spec: StickSpec{Name: "happy-ext4", FS: "ext4"}, Enrolled: true, Key: true}, // a, b on ext4
	{Spec: StickSpec{Name: "pull"}, Enrolled: true, Key: true},                   // c
	{Spec: StickSpec{Name: "nokey"}, Enrolled: true},                             // d
	{Spec: StickSpec{Name: "polkit"}, Enrolled: true},                            // e
	{Spec: StickSpec{Name: "kill"}, Enrolled: true, Key: true},                   // f
	{Spec: StickSpec{Name: "power"}, Enrolled: true, Key: true},                  // g
	{Spec: StickSpec{Name: "eject"}, Enrolled: true, Key: true},                  // h
	{Spec: StickSpec{Name: "setid"}, Enrolled: true, Key: true},                  // TestSetuidSetgid
	{Spec: StickSpec{Name: "stale"}, Enrolled: true, Key: true},                  // TestStaleDeviceOfAKilledOpen
	{Spec: StickSpec{Name: "blank", Blank: true}},                                // TestEnroll: plugvault enroll formats it
	{Spec: StickSpec{Name: "tutorial", Tutorial: true}},                          // TestAdopt: adopt --keep-slot
	{Spec: StickSpec{Name: "tutorial-fast", Tutorial: true}},                     // TestAdopt: adopt adds a fast slot
	{Spec: StickSpec{Name: "seed", Blank: true}},                                 // TestAdopt: the seed's recipe, made in the guest
	{Spec: StickSpec{Name: "mounted", Plain: true, FS: "ext4"}},                  // TestEnrollRefusals: mounted in the guest
	{Spec: StickSpec{Name: "trusted"}, Enrolled: true, Key: true},                // TestImpostor: the real drive
	{Spec: StickSpec{Name: "impostor", Blank: true}},                             // TestImpostor: formatted in the guest with trusted's UUID
	{Spec: StickSpec{Name: "pkg"}, Enrolled: true, Key: true},                    // TestPackage: remove, reinstall, upgrade
	{Spec: StickSpec{Name: "sealme"}, Enrolled: true, Key: true},                 // TestKeysSeal: a plain key sealed in place
	{Spec: StickSpec{Name: "trayflow", Blank: true}},                             // TestTrayFlows: set up and restored from as the tray does
}

var (
	envOnce   sync.Once
	sharedEnv *Env
	envErr    error
	report    = &Report{}
)

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if sharedEnv != nil {
		if err := sharedEnv.Close(); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	if err := tortureReport.Write(); err != nil {
		fmt.Fprintln(os.Stderr, "cannot write the torture report:", err)
	}
	if report.Path != "" {
		if err := report.Write(); err != nil {
			fmt.Fprintln(os.Stderr, "cannot write the report:", err)
		} else {
			fmt.Fprintf(os.Stderr, "e2e report: %s\n", report.Path)
		}
	}
	os.Exit(code)
}

// vmEnv returns the booted guest, booting it on first use. Without -run-vm-tests the VM tests
// skip; with it, a missing requirement fails under CI=true (apitest.Require).
func vmEnv(t *testing.T) *Env {
	t.Helper()
	if !*runVMTests {
		t.Skip("VM test: run with -run-vm-tests (make e2e)")
	}
	apitest.Require(t, os.Geteuid() == 0, "the VM tests need root (image build, stick images, 9p ownership)")
	for _, tool := range []string{"qemu-system-x86_64", "mmdebstrap", "cryptsetup", "mkfs.btrfs", "mkfs.ext4", "blkid", "make", "go", "dpkg-deb"} {
		apitest.RequireTool(t, tool)
	}
	envOnce.Do(func() {
		repo, err := RepoRoot()
		if err != nil {
			envErr = err
			return
		}
		out := *outDir
		if out == "" {
			out = filepath.Join(repo, "e2e-out")
		}
		cache := *cacheDir
		if cache == "" {
			cache = DefaultCacheDir()
		}
		report.Path = filepath.Join(out, "report.txt")
		tortureReport.Path = filepath.Join(out, "torture.txt")
		ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
		defer cancel()
		sharedEnv, envErr = Setup(ctx, SetupConfig{Repo: repo, Out: out, Cache: cache, Sticks: append(append([]StickPlan(nil), stickPlans...), tortureSticks()...), Log: testLog{}})
		if envErr == nil {
			report.Header = append(report.Header, sharedEnv.Setup...)
			tortureReport.Header = append(tortureReport.Header, sharedEnv.Setup...)
			report.Header = append(report.Header, fmt.Sprintf("guest: %s, boot %.1fs, system %s",
				sharedEnv.VM.Boot.Kernel, sharedEnv.VM.Booted.Seconds(), sharedEnv.VM.Boot.SystemState))
			if b := sharedEnv.VM.Boot.Log; b != "" {
				report.Header = append(report.Header, "agent: "+strings.ReplaceAll(strings.TrimSpace(b), "\n", "; "))
			}
		}
	})
	if envErr != nil {
		t.Fatalf("cannot set up the guest: %v", envErr)
	}
	return sharedEnv
}

// testLog sends setup progress to stderr, so `go test -v` shows it as it happens.
type testLog struct{}

func (testLog) Write(p []byte) (int, error) { return os.Stderr.Write(p) }

// scenario starts a scenario's timeline and keeps the guest journal if it fails.
func scenario(t *testing.T, env *Env) (*Timeline, context.Context) {
	t.Helper()
	tl := report.Scenario(t.Name())
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(func() {
		defer cancel()
		if t.Failed() {
			tl.Failed = true
			jctx, jcancel := context.WithTimeout(context.Background(), time.Minute)
			defer jcancel()
			tl.Journal = env.VM.Journal(jctx, start)
			tl.FullJournal = env.VM.Journal(jctx, time.Time{})
		}
		// Written after every scenario, so a run killed by go test's timeout still leaves one.
		if err := report.Write(); err != nil {
			t.Logf("cannot write the report: %v", err)
		}
	})
	return tl, ctx
}

// waitUdev waits for the udev event of the stick's whole disk with the given action.
func waitUdev(t *testing.T, ctx context.Context, env *Env, since uint64, s *Stick, action string) agentproto.Event {
	t.Helper()
	ev, err := env.VM.Wait(ctx, since, agentproto.KindUdev, "", map[string]string{
		"ACTION": action, "DEVTYPE": "disk", "ID_SERIAL_SHORT": s.Serial}, 2*time.Minute)
	if err != nil {
		t.Fatalf("no udev %s for stick %s: %v", action, s.Name, err)
	}
	return ev
}

// TestSmoke proves the kernel path without the daemon: a plugged LUKS+btrfs stick reaches
// udev with the right identity, opens with its keyfile, mounts, takes a file, closes, is
// pulled (udev remove) and, replugged, still holds the file.
func TestSmoke(t *testing.T) {
	env := vmEnv(t)
	tl, ctx := scenario(t, env)
	vm, s := env.VM, env.Sticks["smoke"]
	payload := fmt.Sprintf("written by the smoke test at %s\n", time.Now().UTC().Format(time.RFC3339Nano))

	for round := 1; round <= 2; round++ {
		mark := plug(t, ctx, env, tl, s)
		add := waitUdev(t, ctx, env, mark, s, "add")
		tl.Add(fmt.Sprintf("udev add %s", add.Props["DEVNAME"]), vm.HostTime(add.Time))
		for k, want := range map[string]string{"ID_BUS": "usb", "ID_FS_TYPE": "crypto_LUKS", "ID_FS_UUID": s.UUID,
			"ID_SERIAL_SHORT": s.Serial, "SUBSYSTEM": "block"} {
			if got := add.Props[k]; got != want {
				t.Errorf("udev add: %s = %q, want %q", k, got, want)
			}
		}
		dev := add.Props["DEVNAME"]
		if _, err := vm.ExecAs(ctx, 0, s.Key, "cryptsetup", "open", "--key-file=-", dev, "smoke"); err != nil {
			t.Fatal(err)
		}
		tl.Add("cryptsetup open with the keyfile", time.Now())
		if _, err := vm.Shell(ctx, "mkdir -p /mnt/smoke && mount /dev/mapper/smoke /mnt/smoke"); err != nil {
			t.Fatal(err)
		}
		tl.Add("mounted", time.Now())
		if fstype, _ := vm.Exec(ctx, "findmnt", "-no", "FSTYPE", "/mnt/smoke"); strings.TrimSpace(fstype) != "btrfs" {
			t.Errorf("filesystem inside the stick is %q, want btrfs", strings.TrimSpace(fstype))
		}
		if round == 1 {
			if _, err := vm.ExecAs(ctx, 0, []byte(payload), "/bin/sh", "-ec", "cat > /mnt/smoke/hello.txt && sync"); err != nil {
				t.Fatal(err)
			}
			tl.Add("file written and synced", time.Now())
		} else {
			got, err := vm.Exec(ctx, "cat", "/mnt/smoke/hello.txt")
			if err != nil {
				t.Fatal(err)
			}
			if got != payload {
				t.Errorf("after replug the stick holds %q, want %q", got, payload)
			}
			tl.Add("file read back after replug", time.Now())
		}
		if _, err := vm.Shell(ctx, "umount /mnt/smoke && cryptsetup close smoke"); err != nil {
			t.Fatal(err)
		}
		tl.Add("unmounted and closed", time.Now())
		mark, err := vm.Mark(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pulled, err := vm.Pull(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		tl.Add("pulled", pulled)
		rm := waitUdev(t, ctx, env, mark, s, "remove")
		tl.Add(fmt.Sprintf("udev remove %s", rm.Props["DEVNAME"]), vm.HostTime(rm.Time))
		if rm.Props["DEVNAME"] != dev {
			t.Errorf("udev removed %s, want %s", rm.Props["DEVNAME"], dev)
		}
		if out, err := vm.Shell(ctx, "ls /dev/mapper; grep -c ' /mnt/smoke ' /proc/mounts || true"); err != nil || strings.Contains(out, "smoke") {
			t.Errorf("a mapping or mount is left after the pull: %q %v", out, err)
		}
	}
}

// TestHarnessSelfCheck proves the tree comparison the scenarios rely on, against a reference
// copy made in the guest by cp -a into a btrfs subvolume and a read-only snapshot of it: the
// copy must compare equal to alice's home in every respect checked, a changed copy must not,
// and the snapshot must share every extent with the subvolume. It also proves that calls as
// another user reach the bus with that user's credentials.
func TestHarnessSelfCheck(t *testing.T) {
	env := vmEnv(t)
	tl, ctx := scenario(t, env)
	vm, s := env.VM, env.Sticks["smoke"]
	mark := plug(t, ctx, env, tl, s)
	add := waitUdev(t, ctx, env, mark, s, "add")
	if _, err := vm.ExecAs(ctx, 0, s.Key, "cryptsetup", "open", "--key-file=-", add.Props["DEVNAME"], "selfcheck"); err != nil {
		t.Fatal(err)
	}
	defer vm.Exec(context.Background(), "cryptsetup", "close", "selfcheck")
	if _, err := vm.Shell(ctx, `mkdir -p /mnt/selfcheck && mount /dev/mapper/selfcheck /mnt/selfcheck
		btrfs -q subvolume create /mnt/selfcheck/copy
		cp -a `+SourceDir+`/. /mnt/selfcheck/copy/
		btrfs -q subvolume snapshot -r /mnt/selfcheck/copy /mnt/selfcheck/snap
		sync`); err != nil {
		t.Fatal(err)
	}
	defer vm.Exec(context.Background(), "umount", "/mnt/selfcheck")
	tl.Add("reference copy and snapshot made", time.Now())
	source := manifestOf(t, ctx, env, SourceDir, false)
	copied := manifestOf(t, ctx, env, "/mnt/selfcheck/copy", true)
	snap := manifestOf(t, ctx, env, "/mnt/selfcheck/snap", true)
	if diffs := compareTrees(source, copied); len(diffs) > 0 {
		t.Errorf("cp -a copy differs from the source: %v", diffs)
	}
	if diffs := compareTrees(source, snap); len(diffs) > 0 {
		t.Errorf("snapshot differs from the source: %v", diffs)
	}
	shared, checked := 0, 0
	for p, a := range copied {
		if a.Type != "file" || a.Size < 8192 {
			continue
		}
		checked++
		if len(a.Extents) > 0 && fmt.Sprint(a.Extents) == fmt.Sprint(snap[p].Extents) {
			shared++
		}
	}
	if checked == 0 || shared != checked {
		t.Errorf("%d of %d files share extents between a subvolume and its snapshot", shared, checked)
	}
	tl.Note("comparator: %d entries equal after cp -a; %d of %d files share extents with the snapshot", len(source), shared, checked)

	// The comparison must see a change in content, mode and time.
	if _, err := vm.Shell(ctx, `cd /mnt/selfcheck/copy && echo x >> docs/readme.txt && chmod 0640 bin/script.sh && touch -h readme-link`); err != nil {
		t.Fatal(err)
	}
	changed := manifestOf(t, ctx, env, "/mnt/selfcheck/copy", false)
	diffs := compareTrees(source, changed)
	for _, want := range []string{"docs/readme.txt: content", "bin/script.sh: mode", "readme-link: mtime"} {
		found := false
		for _, d := range diffs {
			found = found || strings.HasPrefix(d, want)
		}
		if !found {
			t.Errorf("the comparison missed %q; it found %v", want, diffs)
		}
	}

	// A call as bob runs with bob's credentials: the bus sees uid 1001.
	out, err := vm.ExecAs(ctx, BobUID, nil, "id", "-u")
	if err != nil || strings.TrimSpace(out) != fmt.Sprint(BobUID) {
		t.Errorf("exec as bob: %q %v", out, err)
	}
	res, err := vm.Call(ctx, BobUID, "ListDrives", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Err != nil && (res.ErrorName == "" || strings.Contains(res.Err.Error(), "cannot run the call")) {
		t.Errorf("a call as bob did not reach the bus: %v", res.Err)
	}
	tl.Note("ListDrives as bob: %v %s", res.Err, res.ErrorName)

	if _, err := vm.Shell(ctx, "umount /mnt/selfcheck && cryptsetup close selfcheck"); err != nil {
		t.Fatal(err)
	}
	pulled, err := vm.Pull(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	tl.Add("pulled", pulled)
}
