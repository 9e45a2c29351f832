package e2e

import (
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/plugvault/plugvault/service/e2e/agentproto"
)

// Guest facts the scenarios rely on (see image/build-image.sh).
const (
	GuestHost    = "plugvault-e2e" // the guest's hostname, the <host> level of the snapshot tree
	AliceUID     = 1000            // owns the backed-up home
	BobUID       = 1001            // an unprivileged user without polkit grants
	SourceDir    = "/home/alice"   // the configured backup source
	GuestMntBase = "/run/plugvault"
	// GuestMetricsDir exists in the guest, so plugvaultd writes plugvault.prom there.
	GuestMetricsDir = "/var/lib/prometheus/node-exporter"
)

// RepoRoot finds the module root from the working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("cannot find the module root (go.mod) above the working directory")
		}
		dir = parent
	}
}

// ConfDrive is one [[drive]] the guest's config.toml lists.
type ConfDrive struct {
	Stick *Stick
	// InstallKey puts the keyfile into /etc/plugvault/keys; without it the drive needs its
	// passphrase at every plug.
	InstallKey bool
	// MinFreePercent is the drive's retention.min_free_percent (0: not set).
	MinFreePercent int
}

// Install is what PrepareShare produced.
type Install struct {
	Share  string // the 9p share: guestagent, deb/ and overlay/
	Daemon bool   // the plugvault package was built (the guest installs it with dpkg -i)
	Engine bool   // plugvault-engine is in the package
	Why    string // why the daemon is missing
	// Version and PrevVersion are the Debian versions of the two packages in the share:
	// deb/current is this tree as `make deb` builds it; deb/prev is the same tree built as an
	// older version (PrevVersion sorts before Version), so a scenario can install it and
	// upgrade from it. It is not a package of an earlier commit.
	Version, PrevVersion string
}

// PrepareShare builds the guest agent (static, CGO_ENABLED=0) and the plugvault Debian
// package twice with `make deb` (this tree, and the same tree as an older version, see
// Install), and writes the test configuration into share/overlay: config.toml listing
// drives, their keyfiles (root, 0400, directory 0700) and alice's home with the files to
// back up. The guest copies the overlay onto / and then installs deb/current with dpkg -i.
func PrepareShare(repo, share string, drives []ConfDrive, logw io.Writer) (*Install, error) {
	inst := &Install{Share: share}
	overlay := filepath.Join(share, "overlay")
	if err := os.RemoveAll(share); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(overlay, 0o755); err != nil {
		return nil, err
	}
	// cp -a copies the overlay root's mode onto the guest's /.
	if err := os.Chmod(overlay, 0o755); err != nil {
		return nil, err
	}
	cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(share, "guestagent"), "./service/e2e/guestagent")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Stdout, cmd.Stderr = logw, logw
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("cannot build the guest agent: %w", err)
	}
	if _, err := os.Stat(filepath.Join(repo, "service/cmd/plugvaultd")); err != nil {
		inst.Why = "service/cmd/plugvaultd does not exist in this tree (the daemon is not merged yet)"
	} else {
		out, err := exec.Command(filepath.Join(repo, "service/debian/version.sh"), "e2e").Output()
		if err != nil {
			return nil, fmt.Errorf("cannot compute the package version: %w", err)
		}
		// "0.0~git<n>+e2e": the e2e build is its own version; "~prev" sorts before it.
		inst.Version = strings.TrimSpace(string(out))
		inst.PrevVersion = inst.Version + "~prev"
		for _, b := range []struct{ version, path string }{{inst.PrevVersion, agentproto.DebPrev}, {inst.Version, agentproto.DebCurrent}} {
			dir := filepath.Join(share, filepath.Dir(b.path))
			cmd := exec.Command("make", "--no-print-directory", "-s", "deb", "DEBDIR="+dir, "DEB_VERSION="+b.version, "VERSION="+b.version)
			cmd.Dir = repo
			cmd.Stdout, cmd.Stderr = logw, logw
			if err := cmd.Run(); err != nil {
				return nil, fmt.Errorf("cannot build the package %s: %w", b.version, err)
			}
			if err := os.Rename(filepath.Join(dir, "plugvault_"+b.version+"_amd64.deb"), filepath.Join(share, b.path)); err != nil {
				return nil, err
			}
		}
		list, err := exec.Command("dpkg-deb", "--contents", filepath.Join(share, agentproto.DebCurrent)).Output()
		if err != nil {
			return nil, fmt.Errorf("cannot list the package: %w", err)
		}
		inst.Engine = strings.Contains(string(list), "/plugvault-engine\n")
		inst.Daemon = true
	}
	if err := writeConfig(overlay, drives); err != nil {
		return nil, err
	}
	if err := writeDebugDropIn(overlay); err != nil {
		return nil, err
	}
	// /home keeps the guest's mode (cp -a copies the overlay's directory modes onto it).
	if err := os.Mkdir(filepath.Join(overlay, "home"), 0o755); err != nil {
		return nil, err
	}
	if err := os.Chmod(filepath.Join(overlay, "home"), 0o755); err != nil {
		return nil, err
	}
	if err := WriteSourceTree(filepath.Join(overlay, "home", "alice")); err != nil {
		return nil, err
	}
	return inst, nil
}

// writeConfig writes etc/plugvault/config.toml (schema: service/internal/config) and the keys.
func writeConfig(overlay string, drives []ConfDrive) error {
	etc := filepath.Join(overlay, "etc", "plugvault")
	keys := filepath.Join(etc, "keys")
	for _, d := range []string{filepath.Join(overlay, "etc"), etc} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(keys, 0o700); err != nil {
		return err
	}
	if err := os.Chmod(keys, 0o700); err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString("# Written by the e2e harness (service/e2e).\nversion = 1\nmount_base = \"" + GuestMntBase + "\"\n")
	for _, d := range drives {
		fmt.Fprintf(&b, "\n[[drive]]\nname = %q\nluks_uuid = %q\nkey_slot = 0\nsources = [%q]\nrun_as = \"alice\"\n",
			d.Stick.Name, d.Stick.UUID, SourceDir)
		if d.Stick.Fingerprint != "" {
			fmt.Fprintf(&b, "fingerprint = %q\n", d.Stick.Fingerprint)
		}
		if d.MinFreePercent > 0 {
			fmt.Fprintf(&b, "[drive.retention]\nmin_free_percent = %d\n", d.MinFreePercent)
		}
		if d.InstallKey {
			if err := os.WriteFile(filepath.Join(keys, d.Stick.UUID+".key"), d.Stick.Key, 0o400); err != nil {
				return err
			}
		}
	}
	if err := os.WriteFile(filepath.Join(etc, "config.toml"), []byte(b.String()), 0o644); err != nil {
		return err
	}
	// node_exporter's textfile directory, as prometheus-node-exporter makes it: plugvaultd
	// writes its metrics there when it exists.
	return os.MkdirAll(filepath.Join(overlay, GuestMetricsDir), 0o755)
}

// WriteSourceTree writes alice's home: about 14 MiB in a few hundred files with the things a
// backup must keep (modes, owners, times with nanoseconds, symlinks, a dangling symlink, hard
// links, an empty directory, names with spaces). The content is the same on every run.
func WriteSourceTree(home string) error {
	rng := rand.New(rand.NewSource(20261126))
	data := func(n int) []byte {
		b := make([]byte, n)
		rng.Read(b)
		return b
	}
	type file struct {
		path string
		mode os.FileMode
		body []byte
	}
	files := []file{
		{"docs/readme.txt", 0o644, []byte("plugvault e2e test data\n")},
		{"docs/notes with spaces.txt", 0o644, []byte("a name with spaces\n")},
		{"docs/private.key", 0o600, data(3000)},
		{"bin/script.sh", 0o755, []byte("#!/bin/sh\necho hello\n")},
		{"secret/diary.txt", 0o600, data(5000)},
		{"big/video.bin", 0o644, data(6 << 20)},
	}
	for i := 0; i < 16; i++ {
		files = append(files, file{fmt.Sprintf("photos/img-%03d.jpg", i), 0o644, data(256 << 10)})
	}
	for i := 0; i < 240; i++ {
		files = append(files, file{fmt.Sprintf("src/pkg%02d/file%03d.go", i%12, i), 0o644, data(1024 + rng.Intn(3072))})
	}
	if err := os.MkdirAll(home, 0o750); err != nil {
		return err
	}
	for _, f := range files {
		p := filepath.Join(home, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, f.body, f.mode); err != nil {
			return err
		}
		if err := os.Chmod(p, f.mode); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(home, "secret"), 0o700); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(home, "empty"), 0o755); err != nil {
		return err
	}
	if err := os.Link(filepath.Join(home, "docs/private.key"), filepath.Join(home, "docs/private.key.hardlink")); err != nil {
		return err
	}
	if err := os.Symlink("docs/readme.txt", filepath.Join(home, "readme-link")); err != nil {
		return err
	}
	if err := os.Symlink("/nonexistent/target", filepath.Join(home, "dangling-link")); err != nil {
		return err
	}
	// Owners and times, deepest first so that setting a file's time does not move its
	// directory's afterwards.
	var paths []string
	if err := filepath.Walk(home, func(p string, _ os.FileInfo, err error) error {
		paths = append(paths, p)
		return err
	}); err != nil {
		return err
	}
	sort.Sort(sort.Reverse(sort.StringSlice(paths)))
	base := time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)
	for i, p := range paths {
		if err := os.Lchown(p, AliceUID, AliceUID); err != nil {
			return err
		}
		t := base.Add(time.Duration(i) * 7919 * time.Second)
		if err := lutimes(p, t); err != nil {
			return err
		}
	}
	return nil
}

// writeDebugDropIn makes the guest's plugvaultd log at debug level: each step of a run
// (STEP=, PHASE=), which the guest agent records from the journal so that the torture suite can
// pull a stick in the middle of a step.
func writeDebugDropIn(overlay string) error {
	dir := filepath.Join(overlay, "etc", "systemd", "system", "plugvaultd.service.d")
	for _, d := range []string{filepath.Join(overlay, "etc", "systemd"), filepath.Join(overlay, "etc", "systemd", "system"), dir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if err := os.Chmod(d, 0o755); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, "e2e-debug.conf"), []byte("[Service]\nEnvironment=PLUGVAULTD_LOG_LEVEL=debug\n"), 0o644)
}
