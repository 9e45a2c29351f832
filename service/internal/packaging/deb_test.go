package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/plugvault/plugvault/service/api/apitest"
)

// TestDebPackage builds the package with `make deb` and checks what it holds against what
// `make install` puts there (minus the tray's files and /etc, which the postinst makes), its
// control fields, its maintainer scripts (shellcheck) and that lintian reports no error.
func TestDebPackage(t *testing.T) {
	mk := apitest.RequireTool(t, "make")
	dpkgDeb := apitest.RequireTool(t, "dpkg-deb")
	lintian := apitest.RequireTool(t, "lintian")
	shellcheck := apitest.RequireTool(t, "shellcheck")
	root := repoRoot(t)
	out := t.TempDir()
	const version = "1.2.3~test"
	cmd := makeCmd(mk, root, "-s", "deb", "DEBDIR="+out, "DEB_VERSION="+version)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make deb: %v\n%s", err, b)
	}
	deb := filepath.Join(out, "plugvault_"+version+"_amd64.deb")
	if _, err := os.Stat(deb); err != nil {
		t.Fatalf("make deb did not write %s: %v", deb, err)
	}

	field := func(name string) string {
		b, err := exec.Command(dpkgDeb, "--field", deb, name).Output()
		if err != nil {
			t.Fatalf("dpkg-deb --field %s: %v", name, err)
		}
		return strings.TrimSpace(string(b))
	}
	if got := field("Version"); got != version {
		t.Errorf("Version = %q, want %q", got, version)
	}
	depends := map[string]bool{}
	for _, d := range strings.Split(field("Depends"), ",") {
		depends[strings.TrimSpace(d)] = true
	}
	for _, want := range []string{"cryptsetup-bin", "dmsetup", "btrfs-progs", "e2fsprogs", "polkitd | policykit-1", "dbus", "systemd"} {
		if !depends[want] {
			t.Errorf("Depends lacks %q: %q", want, field("Depends"))
		}
	}

	b, err := exec.Command(dpkgDeb, "--fsys-tarfile", deb).Output()
	if err != nil {
		t.Fatal(err)
	}
	list := exec.Command("tar", "-tvf", "-")
	list.Stdin = strings.NewReader(string(b))
	b, err = list.Output()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{} // path -> mode string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		p := strings.TrimPrefix(f[len(f)-1], "./")
		if !strings.HasPrefix(f[0], "d") {
			files[p] = f[0]
		}
		if f[1] != "root/root" {
			t.Errorf("%s is owned by %s, want root/root", p, f[1])
		}
	}
	want := map[string]string{
		"usr/libexec/plugvault/plugvaultd":                                  "-rwxr-xr-x",
		"usr/libexec/plugvault/plugvault-engine":                            "-rwxr-xr-x",
		"usr/bin/plugvault":                                                 "-rwxr-xr-x",
		"usr/lib/systemd/system/plugvaultd.service":                         "-rw-r--r--",
		"usr/lib/systemd/catalog/plugvault.catalog":                         "-rw-r--r--",
		"usr/share/dbus-1/system.d/org.plugvault.PlugVault1.conf":           "-rw-r--r--",
		"usr/share/dbus-1/system-services/org.plugvault.PlugVault1.service": "-rw-r--r--",
		"usr/share/polkit-1/actions/org.plugvault.policy":                   "-rw-r--r--",
		"usr/share/doc/plugvault/config.toml.example":                       "-rw-r--r--",
		"usr/share/doc/plugvault/README.md.gz":                              "-rw-r--r--",
		"usr/share/doc/plugvault/changelog.gz":                              "-rw-r--r--",
		"usr/share/doc/plugvault/copyright":                                 "-rw-r--r--",
		"usr/share/bash-completion/completions/plugvault":                   "-rw-r--r--",
		"usr/share/lintian/overrides/plugvault":                             "-rw-r--r--",
	}
	var got []string
	for p, mode := range files {
		got = append(got, p)
		if w, ok := want[p]; !ok {
			t.Errorf("the package holds %s, which this test does not expect", p)
		} else if mode != w {
			t.Errorf("%s has mode %s, want %s", p, mode, w)
		}
	}
	for p := range want {
		if _, ok := files[p]; !ok {
			t.Errorf("the package lacks %s", p)
		}
	}
	sort.Strings(got)
	t.Logf("package files:\n%s", strings.Join(got, "\n"))

	// No file under /etc, hence no conffiles: the configuration and the keys are the
	// administrator's and survive a remove.
	ctl := t.TempDir()
	if b, err := exec.Command(dpkgDeb, "--control", deb, ctl).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --control: %v\n%s", err, b)
	}
	if _, err := os.Stat(filepath.Join(ctl, "conffiles")); err == nil {
		t.Error("the package declares conffiles but ships no file under /etc")
	}
	var scripts []string
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		scripts = append(scripts, filepath.Join(ctl, s))
	}
	if b, err := exec.Command(shellcheck, append([]string{"-s", "sh"}, scripts...)...).CombinedOutput(); err != nil {
		t.Errorf("shellcheck of the maintainer scripts: %v\n%s", err, b)
	}

	// lintian exits non-zero on errors; its warnings are listed in the log.
	lt := exec.Command(lintian, "--tag-display-limit", "0", deb)
	b, err = lt.CombinedOutput()
	t.Logf("lintian:\n%s", b)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "E: ") {
			t.Errorf("lintian error: %s", line)
		}
	}
	if err != nil && !t.Failed() {
		t.Errorf("lintian failed without an error line: %v", err)
	}
}
