package packaging

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/apitest"
)

// daemonPath is where `make install` puts plugvaultd (LIBEXECDIR with PREFIX=/usr).
const daemonPath = "/usr/libexec/plugvault/plugvaultd"

// unitFile is a parsed systemd unit or D-Bus service file: section -> key -> values.
type unitFile map[string]map[string][]string

func parseUnit(t *testing.T, path string) unitFile {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: cannot parse line %q", path, line)
			}
			k = strings.TrimSpace(k)
			u[section][k] = append(u[section][k], strings.TrimSpace(v))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

func (u unitFile) get(section, key string) string {
	vs := u[section][key]
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

// privateMountOptions give plugvaultd its own mount namespace (or a changed view of the file
// system, which systemd implements with one), so its mounts of the backup drive would not reach
// the host and users could not see or browse them (systemd.exec(5)). udisks2.service sets none.
var privateMountOptions = []string{
	"PrivateMounts", "ProtectSystem", "ProtectHome", "PrivateTmp", "ReadOnlyPaths",
	"ReadWritePaths", "InaccessiblePaths", "ExecPaths", "NoExecPaths", "TemporaryFileSystem",
	"BindPaths", "BindReadOnlyPaths", "PrivateDevices", "ProtectKernelTunables",
	"ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectProc",
	"ProcSubset", "RootDirectory", "RootImage", "MountImages", "ExtensionImages", "MountAPIVFS",
	"MountFlags", "LogNamespace", "ReadOnlyDirectories", "ReadWriteDirectories",
	"InaccessibleDirectories",
}

// brokenByOptions would stop the daemon or its engine from working: uevents from udev reach
// only the host's network namespace, and mounting and cryptsetup need real root.
var brokenByOptions = []string{"PrivateNetwork", "NetworkNamespacePath", "PrivateUsers", "DynamicUser", "User",
	// device-mapper waits for udev through a SysV semaphore, which udev must reach.
	"PrivateIPC", "IPCNamespacePath",
	// DeviceAllow=char-rtc, implied by ProtectClock, closes every other device.
	"ProtectClock", "DeviceAllow", "DevicePolicy",
	// Its seccomp filter covers the engine child: setuid/setgid files and setgid directories
	// could not be backed up or restored, and openat2 answers ENOSYS.
	"RestrictSUIDSGID",
}

// neededCapabilities are what the daemon and its children use (the unit's comment says where);
// a bounding set without one of them breaks a feature.
var neededCapabilities = []string{
	"CAP_SYS_ADMIN", "CAP_IPC_LOCK", "CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_CHOWN",
	"CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_MKNOD",
	"CAP_SETFCAP", "CAP_SYS_PTRACE", "CAP_NET_ADMIN",
}

// deniedSyscallGroups are the system call groups the daemon and its children never use.
var deniedSyscallGroups = []string{"@clock", "@cpu-emulation", "@debug", "@module", "@obsolete", "@raw-io", "@reboot", "@swap"}

func TestSystemdUnit(t *testing.T) {
	u := parseUnit(t, filepath.Join(repoRoot(t), "service", "systemd", "plugvaultd.service"))
	svc := u["Service"]
	if svc == nil {
		t.Fatal("no [Service] section")
	}
	if typ := u.get("Service", "Type"); typ != "notify" && typ != "dbus" {
		t.Errorf("Type=%s, want notify or dbus", typ)
	}
	if got := u.get("Service", "BusName"); got != api.BusName {
		t.Errorf("BusName=%s, want %s", got, api.BusName)
	}
	if got := u.get("Service", "ExecStart"); got != daemonPath {
		t.Errorf("ExecStart=%s, want %s (where make install puts it)", got, daemonPath)
	}
	for _, key := range []string{"WatchdogSec", "LimitNOFILE"} {
		if v := u.get("Service", key); v == "" || v == "0" || v == "infinity" {
			t.Errorf("%s=%q, want a finite value", key, v)
		}
	}
	for _, key := range privateMountOptions {
		if vs, ok := svc[key]; ok {
			t.Errorf("%s=%v gives plugvaultd a private mount namespace: users would not see its mounts", key, vs)
		}
	}
	for _, key := range brokenByOptions {
		if vs, ok := svc[key]; ok {
			t.Errorf("%s=%v breaks plugvaultd (see brokenByOptions and the unit's comments)", key, vs)
		}
	}
	caps := strings.Fields(u.get("Service", "CapabilityBoundingSet"))
	if len(caps) == 0 || strings.HasPrefix(caps[0], "~") {
		t.Errorf("CapabilityBoundingSet=%v, want an allow-list", caps)
	}
	for _, c := range neededCapabilities {
		if !slices.Contains(caps, c) {
			t.Errorf("CapabilityBoundingSet lacks %s", c)
		}
	}
	for _, c := range caps {
		if !slices.Contains(neededCapabilities, c) {
			t.Errorf("CapabilityBoundingSet has %s, which nothing is known to need", c)
		}
	}
	filter := strings.Fields(u.get("Service", "SystemCallFilter"))
	if len(filter) == 0 || !strings.HasPrefix(filter[0], "~") {
		t.Errorf("SystemCallFilter=%v, want a deny-list (~...)", filter)
	} else {
		filter[0] = strings.TrimPrefix(filter[0], "~")
		slices.Sort(filter)
		if want := slices.Sorted(slices.Values(deniedSyscallGroups)); !slices.Equal(filter, want) {
			t.Errorf("SystemCallFilter denies %v, want %v", filter, want)
		}
	}
	for key, want := range map[string]string{"IPAddressDeny": "any", "LimitCORE": "0", "NoNewPrivileges": "yes"} {
		if got := u.get("Service", key); got != want {
			t.Errorf("%s=%q, want %q", key, got, want)
		}
	}
	if u.get("Install", "WantedBy") == "" {
		t.Error("no [Install] WantedBy=: systemctl enable would do nothing")
	}
}

func TestBusActivationFile(t *testing.T) {
	root := repoRoot(t)
	u := parseUnit(t, filepath.Join(root, "dbus-policy", api.BusName+".service"))
	for key, want := range map[string]string{
		"Name":           api.BusName,
		"Exec":           daemonPath,
		"User":           "root",
		"SystemdService": "plugvaultd.service",
	} {
		if got := u.get("D-BUS Service", key); got != want {
			t.Errorf("[D-BUS Service] %s=%s, want %s", key, got, want)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "service", "systemd", "plugvaultd.service")); err != nil {
		t.Errorf("SystemdService names a unit we do not ship: %v", err)
	}
}

// TestSystemdAnalyzeVerify runs systemd's own checker on the unit. The unit names the
// installed daemon, which does not exist on a build machine, so a copy points ExecStart at a
// stub; everything else is the shipped file, and TestSystemdUnit pins the real path.
// systemd-analyze reports most problems as warnings with exit status 0, so any output fails.
func TestSystemdAnalyzeVerify(t *testing.T) {
	bin := apitest.RequireTool(t, "systemd-analyze")
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "service", "systemd", "plugvaultd.service"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	stub := filepath.Join(dir, "plugvaultd")
	if err := os.WriteFile(stub, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(data), "ExecStart="+daemonPath, "ExecStart="+stub, 1)
	unit := filepath.Join(dir, "plugvaultd.service")
	if err := os.WriteFile(unit, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "verify", "--man=no", unit)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=notice")
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}

	// The check is live: systemd-analyze does flag an unknown key.
	bad := filepath.Join(dir, "bad.service")
	if err := os.WriteFile(bad, []byte(text+"\n[Service]\nPrivateMountz=yes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, _ := exec.Command(bin, "verify", "--man=no", bad).CombinedOutput(); !strings.Contains(string(out), "PrivateMountz") {
		t.Fatalf("systemd-analyze did not flag an unknown key:\n%s", out)
	}
}
