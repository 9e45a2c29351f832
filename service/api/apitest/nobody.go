package apitest

import (
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

// NobodyUID is the unprivileged user the bus policy tests act as.
const NobodyUID = 65534

// SystemConf is Debian's system bus configuration.
const SystemConf = "/usr/share/dbus-1/system.conf"

// StockSystemPolicy returns the <policy> elements of Debian's system bus configuration: the
// defaults every service's policy file punches holes into (deny own="*", deny
// send_type="method_call", allow send_type="signal", ...). Pass it (plus any includes) as
// BusOptions.Policy.
func StockSystemPolicy(t testing.TB) string {
	t.Helper()
	data, err := os.ReadFile(SystemConf)
	Require(t, err == nil, SystemConf+" is missing: install the Debian package dbus")
	var conf struct {
		Policies []struct {
			Attrs []xml.Attr `xml:",any,attr"`
			Inner string     `xml:",innerxml"`
		} `xml:"policy"`
	}
	if err := xml.Unmarshal(data, &conf); err != nil {
		t.Fatalf("cannot parse %s: %v", SystemConf, err)
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
		t.Fatalf("%s has no default deny own=\"*\": not the stock system bus policy", SystemConf)
	}
	return b.String()
}

// UnprivilegedCopy copies the test binary where uid 65534 can execute it (the go build
// directory is private to root). The copy goes at cleanup.
func UnprivilegedCopy(t testing.TB) string {
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

// RunAsNobody runs helper (an UnprivilegedCopy) as uid 65534 with only env (and a minimal
// PATH and HOME) and returns its standard output; a failure fails the test. The bus the
// helper talks to must be reachable by that user (chmod 0755 Bus.Dir).
func RunAsNobody(t testing.TB, helper string, env ...string) []byte {
	t.Helper()
	cmd := exec.Command(helper)
	cmd.Dir = "/"
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=/nonexistent"}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: NobodyUID, Gid: NobodyUID, Groups: []uint32{}},
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper as uid %d: %v\n%s", NobodyUID, err, stderr.String())
	}
	return out
}

// fdFloodEnv tells a test binary to act as FloodFDsAsNobody's helper: "address;dest;count".
const fdFloodEnv = "PLUGVAULT_FDFLOOD"

// FDFloodMain makes a test binary act as FloodFDsAsNobody's helper when it was started as
// one: it sends, then exits the process. Call it first thing in TestMain.
func FDFloodMain() {
	v := os.Getenv(fdFloodEnv)
	if v == "" {
		return
	}
	parts := strings.SplitN(v, "|", 3)
	n, err := strconv.Atoi(parts[len(parts)-1])
	if len(parts) != 3 || err != nil {
		fmt.Fprintf(os.Stderr, "bad %s=%q\n", fdFloodEnv, v)
		os.Exit(2)
	}
	if err := FloodFDs(parts[0], parts[1], n); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// FloodFDsAsNobody sends, as uid 65534 on the bus at address (whose policy must let that
// user connect and send signals: the stock system policy does), count unicast signals to the
// connection dest, each carrying an fd, then one signal carrying an array of fds and one a
// dict of fds, which kill a godbus v5.2.4 process that accepts fds. It returns once the bus
// has routed all of them: dest has them queued, or the bus refused them. The test binary's
// TestMain must call FDFloodMain; helper is an UnprivilegedCopy.
func FloodFDsAsNobody(t testing.TB, helper, address, dest string, count int) {
	t.Helper()
	RunAsNobody(t, helper, fdFloodEnv+"="+address+"|"+dest+"|"+strconv.Itoa(count))
}

// FloodFDs sends what FloodFDsAsNobody describes from a new connection of this process.
func FloodFDs(address, dest string, count int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := dbus.Connect(address, dbus.WithContext(ctx)) // negotiates fd passing
	if err != nil {
		return err
	}
	defer conn.Close()
	if !conn.SupportsUnixFDs() {
		return fmt.Errorf("the helper's connection does not pass fds")
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	defer w.Close()
	fd := dbus.UnixFD(r.Fd())
	signal := func(body ...any) error {
		msg := &dbus.Message{Type: dbus.TypeSignal, Headers: map[dbus.HeaderField]dbus.Variant{
			dbus.FieldPath:        dbus.MakeVariant(dbus.ObjectPath("/org/example/Flood")),
			dbus.FieldInterface:   dbus.MakeVariant("org.example.Flood"),
			dbus.FieldMember:      dbus.MakeVariant("Fd"),
			dbus.FieldDestination: dbus.MakeVariant(dest),
			dbus.FieldSignature:   dbus.MakeVariant(dbus.SignatureOf(body...)),
		}, Body: body}
		return (<-conn.SendWithContext(ctx, msg, make(chan *dbus.Call, 1)).Done).Err
	}
	for i := 0; i < count; i++ {
		if err := signal(fd); err != nil {
			return err
		}
	}
	if err := signal([]dbus.UnixFD{fd, fd}); err != nil {
		return err
	}
	if err := signal(map[string]dbus.UnixFD{"a": fd}); err != nil {
		return err
	}
	// The bus handles a connection's messages in order: once it answered this, it has routed
	// every signal above.
	var id string
	return conn.BusObject().CallWithContext(ctx, "org.freedesktop.DBus.GetId", 0).Store(&id)
}

// OpenFDs counts this process's open file descriptors, for tests that check nothing leaks.
func OpenFDs(t testing.TB) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}
