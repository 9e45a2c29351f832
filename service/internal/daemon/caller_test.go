package daemon_test

import (
	"context"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/apitest"
	"github.com/plugvault/plugvault/service/internal/drive"
	"github.com/plugvault/plugvault/service/internal/testbus"
)

// callerEnv makes the test binary a client that calls Verify on uuidOne (see TestMain).
const callerEnv = "PLUGVAULT_TEST_CALLER_BUS"

// cancelJobEnv makes the test binary a client that calls Cancel on a job and prints the error
// name of the answer, or "ok": "address;job" (see TestMain).
const cancelJobEnv = "PLUGVAULT_TEST_CANCEL_JOB"

func TestMain(m *testing.M) {
	if v := os.Getenv(cancelJobEnv); v != "" {
		addr, job, _ := strings.Cut(v, ";")
		conn, err := dbus.Connect(addr)
		if err == nil {
			err = api.NewClient(conn).CancelJob(context.Background(), dbus.ObjectPath(job), nil)
		}
		if err == nil {
			os.Stdout.WriteString("ok")
		} else {
			os.Stdout.WriteString(api.ErrorName(err))
		}
		os.Exit(0)
	}
	if addr := os.Getenv(callerEnv); addr != "" {
		conn, err := dbus.Connect(addr)
		if err == nil {
			_, _, err = api.NewClient(conn).Verify(context.Background(), api.DrivePath(uuidOne), "", nil)
		}
		if err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// The caller's groups are those of the calling process, from the bus daemon (UnixGroupIDs,
// SO_PEERGROUPS), not those a user database lists for its name: a client started with groups
// 4242 and 4343 (which NSS does not list for root) is verified with exactly those.
func TestCallerGroupsComeFromTheBus(t *testing.T) {
	apitest.Require(t, os.Geteuid() == 0, "needs root to start a client with other groups")
	env := startEnv(t, testbus.EnvOptions{})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = []string{callerEnv + "=" + env.Bus.Address}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 0, Gid: 0, Groups: []uint32{4242, 4343}}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("client: %v\n%s", err, out)
	}
	calls := env.Backend.Calls()
	if len(calls) != 1 || calls[0].Method != api.MethodVerify {
		t.Fatalf("backend calls %v", calls)
	}
	who, ok := calls[0].Args[1].(drive.Caller)
	if !ok {
		t.Fatalf("no caller in %v", calls[0].Args)
	}
	// dbus-daemon lists the primary group (0) with the supplementary ones.
	groups := slices.Sorted(slices.Values(who.Groups))
	if who.UID != 0 || who.User != "root" || who.GID != 0 || !slices.Equal(groups, []uint32{0, 4242, 4343}) {
		t.Errorf("caller %+v, want root with the groups 0, 4242 and 4343", who)
	}
}
