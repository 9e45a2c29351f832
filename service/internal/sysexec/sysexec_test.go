package sysexec

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func mustLook(t *testing.T, name string) string {
	t.Helper()
	p, err := LookPath(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRunPassesStdinAndFixedEnv(t *testing.T) {
	t.Setenv("SECRET_IN_ENV", "leak")
	res, err := Exec{}.Run(context.Background(), Cmd{Path: mustLook(t, "sh"), Args: []string{"-c", "cat; env"}, Stdin: strings.NewReader("key\n")})
	if err != nil {
		t.Fatal(err)
	}
	out := string(res.Stdout)
	if !strings.HasPrefix(out, "key\n") {
		t.Errorf("stdin not passed verbatim: %q", out)
	}
	if strings.Contains(out, "SECRET_IN_ENV") || !strings.Contains(out, "LC_ALL=C") {
		t.Errorf("environment is not the fixed one: %q", out)
	}
}

func TestRunExitErrorCarriesCodeAndStderr(t *testing.T) {
	_, err := Exec{}.Run(context.Background(), Cmd{Path: mustLook(t, "sh"), Args: []string{"-c", "echo one >&2; echo two >&2; exit 5"}})
	var ee *ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("want *ExitError, got %v", err)
	}
	if ee.Code != 5 || ee.Stderr != "one; two" {
		t.Errorf("got code %d stderr %q", ee.Code, ee.Stderr)
	}
}

func TestRunTimeoutKillsProcessGroup(t *testing.T) {
	start := time.Now()
	// The grandchild sleep would keep stdout open and hold Wait if only sh were killed.
	_, err := Exec{}.Run(context.Background(), Cmd{Path: mustLook(t, "sh"), Args: []string{"-c", "sleep 60 & sleep 60"}, Timeout: 200 * time.Millisecond})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want a deadline error, got %v", err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("the process group was not killed: Run took %v", d)
	}
}

func TestRunRefusesRelativePath(t *testing.T) {
	if _, err := (Exec{}).Run(context.Background(), Cmd{Path: "sh"}); err == nil {
		t.Fatal("a relative tool path must be refused")
	}
	if _, err := LookPath("../sh"); err == nil {
		t.Fatal("a tool name with a slash must be refused")
	}
}

func TestStartChildKillOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	c, err := StartChild(ctx, ChildSpec{Path: mustLook(t, "sleep"), Args: []string{"60"}})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("child not killed on cancel")
	}
	if c.Wait() == nil {
		t.Error("a killed child must report an error")
	}
}
