package packaging

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/apitest"
)

const (
	helperEnv  = "PLUGVAULT_PACKAGING_BUS_HELPER" // the bus address for the helper
	nobodyUID  = 65534
	systemConf = "/usr/share/dbus-1/system.conf"
)

// helperResult is what the unprivileged helper could do on the bus.
type helperResult struct {
	UID  int    `json:"uid"`
	Own  string `json:"own"`  // "ok" or the D-Bus error name
	Call string `json:"call"` // "ok" or the D-Bus error name
	Set  string `json:"set"`  // Properties.Set: the D-Bus error name ("ok" would be a hole)
}

// busHelper runs as uid 65534: it tries to own the name and to call ListDrives on it, and
// prints what happened as JSON.
func busHelper() int {
	res := helperResult{UID: os.Getuid()}
	conn, err := dbus.Connect(os.Getenv(helperEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, "cannot connect:", err)
		return 2
	}
	defer conn.Close()
	res.Own = dbusOutcome(func() error {
		reply, err := conn.RequestName(api.BusName, dbus.NameFlagDoNotQueue)
		if err == nil && reply != dbus.RequestNameReplyPrimaryOwner {
			return fmt.Errorf("reply %d", reply)
		}
		return err
	})
	res.Call = dbusOutcome(func() error {
		var paths []dbus.ObjectPath
		return conn.Object(api.BusName, api.ManagerPath).
			Call(api.ManagerInterface+"."+api.MethodListDrives, 0).Store(&paths)
	})
	res.Set = dbusOutcome(func() error {
		return conn.Object(api.BusName, api.ManagerPath).Call("org.freedesktop.DBus.Properties.Set", 0,
			api.ManagerInterface, api.PropReminderDays, dbus.MakeVariant(uint32(1))).Err
	})
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return 2
	}
	return 0
}

func dbusOutcome(f func() error) string {
	err := f()
	if err == nil {
		return "ok"
	}
	if de, ok := err.(dbus.Error); ok {
		return de.Name
	}
	if de, ok := err.(*dbus.Error); ok {
		return de.Name
	}
	return err.Error()
}

// stockPolicy returns the <policy> elements of Debian's system bus configuration: the defaults
// our file punches holes into (deny own="*", deny send_type="method_call", ...).
func stockPolicy(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(systemConf)
	apitest.Require(t, err == nil, systemConf+" is missing: install the Debian package dbus")
	var conf struct {
		Policies []struct {
			Attrs []xml.Attr `xml:",any,attr"`
			Inner string     `xml:",innerxml"`
		} `xml:"policy"`
	}
	if err := xml.Unmarshal(data, &conf); err != nil {
		t.Fatalf("cannot parse %s: %v", systemConf, err)
	}
	var b strings.Builder
	for _, p := range conf.Policies {
		b.WriteString("<policy")
		for _, a := range p.Attrs {
			fmt.Fprintf(&b, " %s=%q", a.Name.Local, a.Value)
		}
		b.WriteString(">" + p.Inner + "</policy>\n")
	}
	if !strings.Contains(b.String(), `<deny own="*"/>`) {
		t.Fatalf("%s has no default deny own=\"*\": not the stock system bus policy", systemConf)
	}
	return b.String()
}

// fakeManager answers ListDrives like plugvaultd's Manager does with no drives.
type fakeManager struct{}

func (fakeManager) ListDrives() ([]dbus.ObjectPath, *dbus.Error) { return []dbus.ObjectPath{}, nil }

// TestBusPolicy starts a real dbus-daemon with the stock system-bus defaults and shows what
// our policy file adds: root may own org.plugvault.PlugVault1, uid 65534 may call it but
// not own it. The control runs prove each assertion depends on our file.
func TestBusPolicy(t *testing.T) {
	apitest.RequireRoot(t) // the helper runs as another uid
	apitest.RequireTool(t, "dbus-daemon")
	stock := stockPolicy(t)
	ours, err := filepath.Abs(filepath.Join(repoRoot(t), "dbus-policy", api.BusName+".conf"))
	if err != nil {
		t.Fatal(err)
	}
	helper := unprivilegedCopy(t)

	for _, tc := range []struct {
		name     string
		policy   string
		rootOwns bool
		nobody   helperResult
	}{{
		name:     "stock defaults and our policy",
		policy:   stock + "<include>" + ours + "</include>",
		rootOwns: true,
		// Set is refused by the bus itself: the fake service below has no Properties
		// interface, so a daemon-side refusal would read UnknownInterface, not AccessDenied.
		nobody: helperResult{UID: nobodyUID, Own: "org.freedesktop.DBus.Error.AccessDenied", Call: "ok", Set: "org.freedesktop.DBus.Error.AccessDenied"},
	}, {
		name:     "stock defaults only: root cannot own",
		policy:   stock,
		rootOwns: false,
		nobody:   helperResult{UID: nobodyUID, Own: "org.freedesktop.DBus.Error.AccessDenied", Call: "org.freedesktop.DBus.Error.ServiceUnknown", Set: "org.freedesktop.DBus.Error.ServiceUnknown"},
	}, {
		name:     "stock defaults and only the own rule: nobody cannot call",
		policy:   stock + `<policy user="root"><allow own="` + api.BusName + `"/></policy>`,
		rootOwns: true,
		nobody:   helperResult{UID: nobodyUID, Own: "org.freedesktop.DBus.Error.AccessDenied", Call: "org.freedesktop.DBus.Error.AccessDenied", Set: "org.freedesktop.DBus.Error.AccessDenied"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			bus := apitest.StartBus(t, apitest.BusOptions{Policy: tc.policy})
			// The socket lives in a root-only temporary directory; the helper must reach it.
			if err := os.Chmod(bus.Dir, 0o755); err != nil {
				t.Fatal(err)
			}
			root := bus.Conn(t)
			if err := root.Export(fakeManager{}, api.ManagerPath, api.ManagerInterface); err != nil {
				t.Fatal(err)
			}
			own := dbusOutcome(func() error {
				reply, err := root.RequestName(api.BusName, dbus.NameFlagDoNotQueue)
				if err == nil && reply != dbus.RequestNameReplyPrimaryOwner {
					return fmt.Errorf("reply %d", reply)
				}
				return err
			})
			if (own == "ok") != tc.rootOwns {
				t.Fatalf("root RequestName(%s) = %s, want owned=%v", api.BusName, own, tc.rootOwns)
			}
			got := runHelper(t, helper, bus.Address)
			if got != tc.nobody {
				t.Fatalf("uid %d on the bus: %+v, want %+v", nobodyUID, got, tc.nobody)
			}
		})
	}
}

// unprivilegedCopy copies the test binary where uid 65534 can execute it (the go build
// directory is private to root).
func unprivilegedCopy(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "pvhelper")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "helper.test")
	in, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

func runHelper(t *testing.T, helper, addr string) helperResult {
	t.Helper()
	cmd := exec.Command(helper)
	cmd.Dir = "/"
	cmd.Env = []string{helperEnv + "=" + addr, "PATH=/usr/bin:/bin", "HOME=/nonexistent"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: nobodyUID, Gid: nobodyUID, Groups: []uint32{}},
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper as uid %d: %v\n%s", nobodyUID, err, stderr.String())
	}
	var res helperResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("helper output %q: %v", out, err)
	}
	return res
}
