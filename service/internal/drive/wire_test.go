package drive

import (
	"errors"
	"slices"
	"syscall"
	"testing"

	"github.com/plugvault/plugvault/service/internal/daemon"
)

func TestCallerCredential(t *testing.T) {
	users := map[string]*syscall.Credential{
		"alice": {Uid: 1000, Gid: 1000, Groups: []uint32{24, 100}},
		"bob":   {Uid: 1001, Gid: 1001},
	}
	e := SystemEngine{LookupUser: func(name string) (*syscall.Credential, error) {
		if c, ok := users[name]; ok {
			return c, nil
		}
		return nil, errors.New("no such user")
	}}
	for _, c := range []struct {
		name   string
		caller daemon.Caller
		want   syscall.Credential
	}{
		{"known user: their groups too", daemon.Caller{UID: 1000, GID: 1000, User: "alice"}, syscall.Credential{Uid: 1000, Gid: 1000, Groups: []uint32{24, 100}}},
		// The name resolves to someone else: trust only the bus daemon's ids.
		{"name of another uid", daemon.Caller{UID: 1002, GID: 1002, User: "bob"}, syscall.Credential{Uid: 1002, Gid: 1002}},
		{"unknown name", daemon.Caller{UID: 1003, GID: 50, User: "ghost"}, syscall.Credential{Uid: 1003, Gid: 50}},
	} {
		got := e.callerCredential(c.caller)
		if got.Uid != c.want.Uid || got.Gid != c.want.Gid || !slices.Equal(got.Groups, c.want.Groups) {
			t.Errorf("%s: %+v, want %+v", c.name, *got, c.want)
		}
	}
}

func TestUserCredentialRoot(t *testing.T) {
	cred, err := UserCredential("root")
	if err != nil || cred.Uid != 0 || cred.Gid != 0 {
		t.Errorf("UserCredential(root) = %+v, %v", cred, err)
	}
	if _, err := UserCredential("no-such-user-plugvault"); err == nil {
		t.Error("an unknown user must be an error")
	}
}
