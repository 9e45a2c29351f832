package sysexec

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
)

// ChildSpec describes a long-running child process, such as the backup engine.
type ChildSpec struct {
	Path       string   // absolute path of the program
	Args       []string // arguments after the program name
	Env        []string // nil means Env
	Dir        string   // working directory; "" means /
	Stdin      io.Reader
	Stdout     io.Writer
	Stderr     io.Writer
	ExtraFiles []*os.File
	// Credential, when set, runs the child as that user (and groups).
	Credential *syscall.Credential
}

// Child is a running child process in its own process group.
type Child struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// StartChild starts spec. When ctx ends the whole process group is killed at once (SIGKILL): the
// engine must not hold the mount a moment longer than needed when a stick is pulled.
func StartChild(ctx context.Context, spec ChildSpec) (*Child, error) {
	if len(spec.Path) == 0 || spec.Path[0] != '/' {
		return nil, fmt.Errorf("internal error: child path %q is not absolute", spec.Path)
	}
	cmd := command(ctx, spec.Path, spec.Args)
	if spec.Env != nil {
		cmd.Env = spec.Env
	}
	if spec.Dir != "" {
		cmd.Dir = spec.Dir
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = spec.Stdin, spec.Stdout, spec.Stderr
	cmd.ExtraFiles = spec.ExtraFiles
	cmd.SysProcAttr.Credential = spec.Credential
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("cannot start %s: %w", spec.Path, err)
	}
	c := &Child{cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// Pid returns the child's pid (also its process group id).
func (c *Child) Pid() int { return c.cmd.Process.Pid }

// Done is closed when the child has exited.
func (c *Child) Done() <-chan struct{} { return c.done }

// Wait waits for the child and returns how it ended (an *exec.ExitError for a non-zero exit).
func (c *Child) Wait() error {
	<-c.done
	return c.err
}

// Kill kills the child's whole process group at once.
func (c *Child) Kill() {
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
}
