package main

import (
	"context"
	"slices"
	"syscall"
	"testing"

	"github.com/plugvault/plugvault/service/internal/drive"
)

// Restore and Verify run with the calling process's ids and groups as the bus reported them;
// the caller's user name is never looked up (it could name someone else's entry).
func TestCallerCredential(t *testing.T) {
	for _, c := range []struct {
		name   string
		caller drive.Caller
		want   syscall.Credential
	}{
		{"groups from the bus", drive.Caller{UID: 1000, GID: 1000, Groups: []uint32{1000, 24, 100}, User: "alice"}, syscall.Credential{Uid: 1000, Gid: 1000, Groups: []uint32{24, 100}}},
		{"the name is not looked up", drive.Caller{UID: 1002, GID: 1002, User: "root"}, syscall.Credential{Uid: 1002, Gid: 1002, Groups: []uint32{}}},
		{"no groups", drive.Caller{UID: 1003, GID: 50}, syscall.Credential{Uid: 1003, Gid: 50, Groups: []uint32{}}},
	} {
		got := callerCredential(c.caller)
		if got.Uid != c.want.Uid || got.Gid != c.want.Gid || !slices.Equal(got.Groups, c.want.Groups) || got.Groups == nil {
			t.Errorf("%s: %+v, want %+v", c.name, *got, c.want)
		}
	}
}

func TestUserCredentialRoot(t *testing.T) {
	cred, err := userCredential(context.Background(), "root")
	if err != nil || cred.Uid != 0 || cred.Gid != 0 {
		t.Errorf("userCredential(root) = %+v, %v", cred, err)
	}
	if _, err := userCredential(context.Background(), "no-such-user-plugvault"); err == nil {
		t.Error("an unknown user must be an error")
	}
}
