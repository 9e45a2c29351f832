package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/plugvault/plugvault/service/api"
)

// Without a terminal, a browse of a drive that waits for its passphrase says where to enter
// it and goes on once it was given (here by another client, as the tray or plugvault unlock
// would).
func TestBrowseTellsWhereToEnterThePassphrase(t *testing.T) {
	e := newEnv(t)
	blue, _ := e.twoDrives()
	e.fake.NeedPassphrase(blue, []byte("right"))
	hint := "Enter the passphrase in the tray's dialog, or with: plugvault unlock blue\n"
	errOut := newSyncBuffer()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := e.runAsync(ctx, strings.NewReader(""), &out, errOut, "browse", "blue")
	errOut.waitFor(t, hint, 1)
	if !strings.Contains(errOut.String(), "blue: The keyfile is missing — enter the passphrase\n") {
		t.Errorf("stderr %q does not say why", errOut.String())
	}
	c := api.NewClient(e.bus.Conn(t))
	if err := c.Unlock(ctx, blue, []byte("wrong"), nil); !errors.Is(err, api.ErrBadPassphrase) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	if err := c.Unlock(ctx, blue, []byte("right"), nil); err != nil {
		t.Fatal(err)
	}
	if code := waitCode(t, done); code != 0 || out.String() != "/run/plugvault/browse/fake\n" {
		t.Errorf("browse: exit %d, stdout %q, stderr %q", code, out.String(), errOut.String())
	}
	if n := strings.Count(errOut.String(), hint); n != 1 {
		t.Errorf("the hint was given %d times: %q", n, errOut.String())
	}
}

// On a terminal, the browse asks for the passphrase without echo, again after a wrong one,
// and hands each to Unlock.
func TestBrowseAsksForThePassphraseOnTheTerminal(t *testing.T) {
	e := newEnv(t)
	blue, _ := e.twoDrives()
	e.fake.NeedPassphrase(blue, []byte("right pass"))
	master, slave := openPTY(t)
	stderr := newSyncBuffer()
	var stdout strings.Builder
	done := e.runAsync(t.Context(), slave, &stdout, stderr, "browse", "blue")
	stderr.waitFor(t, "Passphrase for blue: ", 1)
	if _, err := master.Write([]byte("wrong\n")); err != nil {
		t.Fatal(err)
	}
	stderr.waitFor(t, "Passphrase for blue: ", 2)
	if !strings.Contains(stderr.String(), "That passphrase does not unlock blue.") {
		t.Errorf("no word about the wrong passphrase: %q", stderr.String())
	}
	if _, err := master.Write([]byte("right pass\n")); err != nil {
		t.Fatal(err)
	}
	if code := waitCode(t, done); code != 0 || stdout.String() != "/run/plugvault/browse/fake\n" {
		t.Fatalf("exit %d, stdout %q: %s", code, stdout.String(), stderr.String())
	}
	var got []string
	for _, c := range e.fake.Calls() {
		if c.Method == api.MethodUnlock {
			got = append(got, string(c.Args[0].([]byte)))
		}
	}
	if strings.Join(got, "|") != "wrong|right pass" {
		t.Errorf("the daemon got the passphrases %q", got)
	}
	if echo := echoed(t, master, slave); strings.Contains(echo, "right") || strings.Contains(echo, "wrong") {
		t.Errorf("the passphrase was echoed: %q", echo)
	}
}

// check-passphrase hands the passphrase to CheckPassphrase and exits 0 when it is right, 6
// when it is not.
func TestCheckPassphrase(t *testing.T) {
	e := newEnv(t)
	blue, _ := e.twoDrives()
	code, out, errOut := e.run("my pass\n", "check-passphrase", "blue", "--passphrase-stdin", "--json")
	if code != 0 || strings.TrimSpace(out) != `{"drive":"`+string(blue)+`","correct":true}` {
		t.Errorf("right passphrase: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	c := e.lastCall(api.MethodCheckPassphrase)
	if c.Path != blue || string(c.Args[0].([]byte)) != "my pass" {
		t.Errorf("call %v", c)
	}
	e.fake.FailNext(api.MethodCheckPassphrase, fmt.Errorf("the passphrase does not open blue: %w", api.ErrBadPassphrase))
	code, out, errOut = e.run("not it", "check-passphrase", "blue", "--passphrase-stdin")
	if code != exitBadPassphrase || out != "" || !strings.Contains(errOut, "that is not the passphrase of blue; its keyfile still unlocks it") {
		t.Errorf("wrong passphrase: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if c := e.lastCall(api.MethodCheckPassphrase); string(c.Args[0].([]byte)) != "not it" {
		t.Errorf("call %v", c)
	}
}
