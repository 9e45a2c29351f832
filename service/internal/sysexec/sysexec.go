package sysexec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Env is the whole environment of every program we run: no locale surprises in messages, a
// fixed PATH, nothing inherited (the daemon's environment could carry anything).
var Env = []string{"LC_ALL=C", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}

// searchPath is where tools are looked up, in order; the same as Env's PATH.
var searchPath = []string{"/usr/sbin", "/usr/bin", "/sbin", "/bin"}

// maxOutput bounds how much of a tool's stdout and stderr is kept.
const maxOutput = 1 << 20

// Cmd describes one run of a tool.
type Cmd struct {
	// Path is the tool's absolute path (see LookPath).
	Path string
	// Args are the arguments after the program name. Never put a secret here: argv is world
	// readable in /proc.
	Args []string
	// Stdin is fed to the program; nil means /dev/null, so a tool never waits at a prompt.
	// Secrets go here (or in ExtraFiles).
	Stdin io.Reader
	// ExtraFiles become fds 3, 4, … in the child (for example a pipe carrying a second key,
	// named /dev/fd/3 in Args).
	ExtraFiles []*os.File
	// Timeout bounds the run; 0 means only the context bounds it.
	Timeout time.Duration
}

// Result is what a finished run printed.
type Result struct {
	Stdout []byte
	Stderr []byte
}

// Runner runs tools. The real one is Exec; tests use fakes that record argv.
type Runner interface {
	Run(ctx context.Context, cmd Cmd) (Result, error)
}

// ExitError is returned when a tool ran and exited with a non-zero status. Callers branch on
// Code (documented exit codes), never on the text.
type ExitError struct {
	Tool   string
	Code   int
	Stderr string // trimmed, at most a few lines
}

func (e *ExitError) Error() string {
	msg := fmt.Sprintf("%s exited with status %d", e.Tool, e.Code)
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	return msg
}

// Exec is the Runner that really runs programs.
type Exec struct{}

// Run runs cmd and waits for it. On cancellation or timeout the whole process group is killed.
// A non-zero exit is an *ExitError carrying the trimmed stderr (stdin is never attached).
func (Exec) Run(ctx context.Context, c Cmd) (Result, error) {
	if !strings.HasPrefix(c.Path, "/") {
		return Result{}, fmt.Errorf("internal error: tool path %q is not absolute", c.Path)
	}
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	cmd := command(ctx, c.Path, c.Args)
	cmd.Stdin = c.Stdin
	cmd.ExtraFiles = c.ExtraFiles
	var stdout, stderr boundedBuffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	res := Result{Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}
	if err == nil {
		return res, nil
	}
	if ctx.Err() != nil {
		return res, fmt.Errorf("%s: %w", c.Path, ctx.Err())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return res, &ExitError{Tool: c.Path, Code: ee.ExitCode(), Stderr: trimStderr(res.Stderr)}
	}
	return res, fmt.Errorf("cannot run %s: %w", c.Path, err)
}

// command builds an exec.Cmd in its own process group, killed with the daemon (Pdeathsig) and
// as a whole group when ctx ends.
func command(ctx context.Context, path string, args []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = Env
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error {
		// Negative pid: the whole process group, so helpers the tool started die too.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// trimStderr keeps the last few non-empty lines, enough to tell the user what went wrong.
func trimStderr(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 4 {
		lines = lines[len(lines)-4:]
	}
	return strings.TrimSpace(strings.Join(lines, "; "))
}

// boundedBuffer keeps the first maxOutput bytes and discards the rest.
type boundedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := maxOutput - b.buf.Len(); room > 0 {
		if len(p) > room {
			b.buf.Write(p[:room])
		} else {
			b.buf.Write(p)
		}
	}
	return len(p), nil
}

func (b *boundedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// LookPath finds a tool by name in the fixed search path (never in the daemon's PATH, never in
// the current directory) and returns its absolute path.
func LookPath(name string) (string, error) {
	if strings.Contains(name, "/") {
		return "", fmt.Errorf("internal error: tool name %q must not contain a slash", name)
	}
	for _, dir := range searchPath {
		p := dir + "/" + name
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("cannot find %s in %s (is it installed?)", name, strings.Join(searchPath, ":"))
}
