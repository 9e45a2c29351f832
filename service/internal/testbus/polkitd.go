package testbus

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api/apitest"
	"github.com/plugvault/plugvault/service/internal/polkit"
)

// PolkitdPath is where Debian installs the real polkit daemon.
const PolkitdPath = "/usr/lib/polkit-1/polkitd"

// RealPolkitBusPolicy lets every user connect, own and send: polkitd drops to its own user
// before it connects, which the default bus policy (only the bus's own uid) would refuse.
const RealPolkitBusPolicy = `<policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>`

// StartPolkitd runs the real polkitd on bus (started with RealPolkitBusPolicy), with the
// policy file at policyFile as its only action definitions: in a private mount namespace, a
// directory holding it is bind-mounted over /usr/share/polkit-1/actions, so the host is not
// changed. It needs root (root level: apitest.RequireRoot) and stops at cleanup. It returns
// when polkitd owns org.freedesktop.PolicyKit1.
func StartPolkitd(t testing.TB, bus *apitest.Bus, policyFile string) {
	t.Helper()
	apitest.RequireRoot(t)
	unshare := apitest.RequireTool(t, "unshare")
	_, err := os.Stat(PolkitdPath)
	apitest.Require(t, err == nil, "polkitd is not installed at "+PolkitdPath)
	// polkitd connects as its own user: it must reach the socket in the bus's directory.
	if err := os.Chmod(bus.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	actions := filepath.Join(bus.Dir, "actions")
	if err := os.MkdirAll(actions, 0o755); err != nil {
		t.Fatal(err)
	}
	policy, err := os.ReadFile(policyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(actions, filepath.Base(policyFile)), policy, 0o644); err != nil {
		t.Fatal(err)
	}
	conn := bus.Conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := conn.AddMatchSignalContext(ctx, dbus.WithMatchSender("org.freedesktop.DBus"),
		dbus.WithMatchMember("NameOwnerChanged"), dbus.WithMatchArg(0, polkit.BusName)); err != nil {
		t.Fatal(err)
	}
	sigs := make(chan *dbus.Signal, 8)
	conn.Signal(sigs)
	defer conn.RemoveSignal(sigs)

	script := `mount --make-rprivate / && mount --bind "$1" /usr/share/polkit-1/actions && exec "$2" --no-debug`
	cmd := exec.Command(unshare, "--mount", "--", "/bin/sh", "-c", script, "sh", actions, PolkitdPath)
	cmd.Env = append(os.Environ(), "DBUS_SYSTEM_BUS_ADDRESS="+bus.Address)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("cannot start polkitd: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	for {
		select {
		case sig := <-sigs:
			if len(sig.Body) == 3 && sig.Body[2] != "" {
				return
			}
		case <-exited:
			t.Fatalf("polkitd exited: %s", out.String())
		case <-ctx.Done():
			t.Fatalf("polkitd did not own %s: %s", polkit.BusName, out.String())
		}
	}
}
