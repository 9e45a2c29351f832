package users_test

import (
	"context"
	"errors"
	"os/user"
	"slices"
	"strings"
	"testing"

	"github.com/plugvault/plugvault/service/api/apitest"
	"github.com/plugvault/plugvault/service/internal/sysexec"
	"github.com/plugvault/plugvault/service/internal/users"
)

// fakeGetent stands for getent(1) with an NSS database that has a user from LDAP only
// ("carol", not in /etc/passwd); it records every argv.
type fakeGetent struct{ argv [][]string }

func (f *fakeGetent) Run(_ context.Context, c sysexec.Cmd) (sysexec.Result, error) {
	f.argv = append(f.argv, c.Args)
	out := map[string]string{
		"passwd carol":     "carol:*:70001:70000:Carol:/home/carol:/bin/bash\n",
		"passwd 70001":     "carol:*:70001:70000:Carol:/home/carol:/bin/bash\n",
		"passwd 1000":      "alice:x:1000:1000::/home/alice:/bin/sh\n",
		"passwd broken":    "broken:x:notanumber:1::/:/bin/sh\n",
		"initgroups carol": "carol                 70000 70005 24\n",
	}[strings.Join(c.Args, " ")]
	if out == "" {
		return sysexec.Result{}, &sysexec.ExitError{Tool: c.Path, Code: 2}
	}
	return sysexec.Result{Stdout: []byte(out)}, nil
}

func TestLookupThroughNSS(t *testing.T) {
	ctx := context.Background()
	f := &fakeGetent{}
	r := users.Resolver{Runner: f, Getent: "/usr/bin/getent"}

	u, err := r.Lookup(ctx, "carol")
	if err != nil || u.Username != "carol" || u.Uid != "70001" || u.Gid != "70000" || u.HomeDir != "/home/carol" {
		t.Fatalf("Lookup(carol) = %+v, %v", u, err)
	}
	if u, err := r.LookupID(ctx, 70001); err != nil || u.Username != "carol" {
		t.Errorf("LookupID(70001) = %+v, %v", u, err)
	}
	groups, err := r.GroupIDs(ctx, "carol", 70000)
	if err != nil || !slices.Equal(groups, []uint32{70000, 70005, 24}) {
		t.Errorf("GroupIDs(carol) = %v, %v", groups, err)
	}

	// Unknown, and a number that getent would read as a uid: unknown users.
	for _, name := range []string{"nobody-here", "1000"} {
		var unknown user.UnknownUserError
		if _, err := r.Lookup(ctx, name); !errors.As(err, &unknown) {
			t.Errorf("Lookup(%q) = %v, want UnknownUserError", name, err)
		}
	}
	var unknownID user.UnknownUserIdError
	if _, err := r.LookupID(ctx, 4242); !errors.As(err, &unknownID) {
		t.Errorf("LookupID(4242) = %v, want UnknownUserIdError", err)
	}
	if _, err := r.Lookup(ctx, "broken"); err == nil || errors.As(err, new(user.UnknownUserError)) {
		t.Errorf("a malformed entry: %v", err)
	}

	// Names that getent would take as options or that cannot be names never reach it.
	f.argv = nil
	for _, name := range []string{"", "-s", "--help", "a:b", "a b", "a\nb"} {
		if _, err := r.Lookup(ctx, name); !errors.As(err, new(user.UnknownUserError)) {
			t.Errorf("Lookup(%q) = %v", name, err)
		}
		if _, err := r.GroupIDs(ctx, name, 1); err == nil {
			t.Errorf("GroupIDs(%q) succeeded", name)
		}
	}
	if len(f.argv) != 0 {
		t.Errorf("getent ran for invalid names: %q", f.argv)
	}
}

// The real getent knows root.
func TestRealGetent(t *testing.T) {
	_, err := sysexec.LookPath("getent")
	apitest.Require(t, err == nil, "needs getent (libc-bin)")
	ctx := context.Background()
	u, err := users.Default.Lookup(ctx, "root")
	if err != nil || u.Uid != "0" || u.Gid != "0" {
		t.Fatalf("Lookup(root) = %+v, %v", u, err)
	}
	if u, err := users.Default.LookupID(ctx, 0); err != nil || u.Username != "root" {
		t.Fatalf("LookupID(0) = %+v, %v", u, err)
	}
	if g, err := users.Default.GroupIDs(ctx, "root", 0); err != nil || len(g) == 0 || g[0] != 0 {
		t.Fatalf("GroupIDs(root) = %v, %v", g, err)
	}
	if _, err := users.Lookup("no-such-user-plugvault"); !errors.As(err, new(user.UnknownUserError)) {
		t.Fatalf("Lookup(no-such-user) = %v", err)
	}
}
