// Command plugvault-engine is plugvault's backup engine child. plugvaultd starts it (see
// backup.Spawn) with the configured user's credentials, in its own process group; it reads one
// request (backup.ChildRequest) as JSON on stdin and writes progress and the result as JSON
// lines (backup.ChildMessage) on stdout. It lowers its own priority first: idle I/O class and
// SCHED_BATCH, so a backup never makes the desktop sluggish.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/plugvault/plugvault/service/internal/backup"
	"github.com/plugvault/plugvault/service/internal/mount"
)

// ioprio constants (linux/ioprio.h).
const (
	ioprioWhoProcess = 1
	ioprioClassIdle  = 3
	ioprioClassShift = 13
)

func lowerPriority() {
	_, _, _ = unix.Syscall(unix.SYS_IOPRIO_SET, ioprioWhoProcess, 0, ioprioClassIdle<<ioprioClassShift)
	_ = unix.SchedSetAttr(0, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: 3 /* SCHED_BATCH */}, 0)
	_ = unix.Setpriority(unix.PRIO_PROCESS, 0, 10)
}

func main() {
	if len(os.Args) > 1 {
		fmt.Fprintln(os.Stderr, "plugvault-engine takes no arguments: it is started by plugvaultd with a job on stdin")
		os.Exit(2)
	}
	lowerPriority()
	// plugvaultd runs with UMask=0077; the engine sets every mode it means explicitly, and the
	// directories it creates without one (snapshot roots) are meant to be browsable (0755).
	unix.Umask(0o022)
	// The scan and the manifests live for the whole run: collecting less often saves CPU on a
	// 100k-file tree. A backup bounds the heap with a soft memory limit that grows with the
	// tree (backup's memBudget).
	debug.SetGCPercent(400)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := backup.ServeChild(ctx, os.Stdin, os.Stdout, mount.Guard); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
