package main

import (
	"context"
	"fmt"
	"strconv"
	"syscall"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/internal/backup"
	"github.com/plugvault/plugvault/service/internal/config"
	"github.com/plugvault/plugvault/service/internal/drive"
	"github.com/plugvault/plugvault/service/internal/mount"
	"github.com/plugvault/plugvault/service/internal/udev"
	"github.com/plugvault/plugvault/service/internal/users"
)

// This file adapts the real OS layers to the state machine's small interfaces. It only converts
// types; the behaviour lives in the packages it wraps.

// newUdevSource adapts a udev monitor (already subscribed) to drive.Source. The returned source's
// event channel closes when the monitor's does.
func newUdevSource(m *udev.Monitor) drive.Source {
	s := &udevSource{m: m, events: make(chan drive.Event, 64)}
	go func() {
		defer close(s.events)
		for ev := range m.Events() {
			s.events <- fromUdev(ev)
		}
	}()
	return s
}

type udevSource struct {
	m      *udev.Monitor
	events chan drive.Event
}

func (s *udevSource) Events() <-chan drive.Event { return s.events }

func (s *udevSource) Enumerate(ctx context.Context) ([]drive.Event, error) {
	evs, err := s.m.Enumerate(ctx)
	out := make([]drive.Event, len(evs))
	for i, ev := range evs {
		out[i] = fromUdev(ev)
	}
	return out, err
}

func fromUdev(ev udev.Event) drive.Event {
	return drive.Event{Action: ev.Action, DevPath: ev.DevPath, Subsystem: ev.Subsystem, DevType: ev.DevType,
		DevName: ev.DevName, Major: ev.Major, Minor: ev.Minor, SeqNum: ev.SeqNum, Props: ev.Props}
}

// systemMounter adapts service/internal/mount to drive.Mounter.
type systemMounter struct {
	M *mount.Mounter
}

// Mount mounts source (an opened mapping) at target, for root and the user runAs only.
func (s systemMounter) Mount(ctx context.Context, source, target, fstype string, readOnly bool, extra []string, runAs string) error {
	var uid uint32
	if runAs != "" && runAs != "root" {
		cred, err := userCredential(ctx, runAs)
		if err != nil {
			return fmt.Errorf("cannot mount the drive for %q: %w", runAs, err)
		}
		uid = cred.Uid
	}
	return s.M.Mount(ctx, source, target, fstype, readOnly, extra, uid)
}

// Unmount unmounts target, retrying while it is busy; a mount that stays busy is an error
// naming its holders (mount.BusyError, which wraps api.ErrBusy).
func (s systemMounter) Unmount(ctx context.Context, target string) error {
	return s.M.Unmount(ctx, target)
}

// Detach unmounts target lazily.
func (s systemMounter) Detach(target string) error { return s.M.Detach(target) }

// FSType probes the filesystem inside an opened mapping.
func (systemMounter) FSType(device string) (string, error) { return mount.ProbeFSType(device) }

// DeviceNumber returns a block device's number.
func (systemMounter) DeviceNumber(path string) (uint64, error) { return mount.DeviceNumber(path) }

// Mounts lists the mounts at or below base.
func (systemMounter) Mounts(base string) ([]drive.MountInfo, error) {
	infos, err := mount.Mounts(base)
	out := make([]drive.MountInfo, len(infos))
	for i, in := range infos {
		out[i] = drive.MountInfo{Target: in.Target, Source: in.Source, FSType: in.FSType, Dev: in.Dev}
	}
	return out, err
}

// systemEngine runs the backup engine child (service/cmd/plugvault-engine) through
// service/internal/backup: Prepare, the unprivileged child, then Promote and Prune as root.
type systemEngine struct {
	// Path is the engine binary.
	Path string
	// LookupUser returns the credentials of a user (nil: userCredential, through NSS).
	LookupUser func(name string) (*syscall.Credential, error)
}

// Run backs up job as job.RunAs ("" or "root": as root, for system sources). The engine is
// crash safe, so when ctx ends its process group is killed at once and the next run resumes.
func (e systemEngine) Run(ctx context.Context, job drive.Job, progress func(drive.Progress)) (drive.Result, error) {
	var cred *syscall.Credential
	if job.RunAs != "" && job.RunAs != "root" {
		var err error
		if cred, err = e.lookup(ctx, job.RunAs); err != nil {
			return drive.Result{}, err
		}
	}
	bj := backup.Job{Sources: job.Sources, Excludes: job.Excludes, Target: job.Target, Host: job.Host,
		FSType: job.FSType, Dev: job.Dev, Retention: config.Drive{Retention: job.Retention}.EffectiveRetention()}
	res, err := backup.Spawn(ctx, e.Path, bj, cred, func(p backup.Progress) {
		if progress != nil {
			progress(drive.Progress{Phase: p.Phase, FilesDone: p.FilesDone, FilesTotal: p.FilesTotal,
				BytesDone: p.BytesDone, BytesTotal: p.BytesTotal, Rate: p.Rate, ETA: p.ETA})
		}
	})
	return drive.Result{Snapshot: res.Snapshot, Files: res.Files, Bytes: res.Bytes, Warnings: res.Warnings, Dropped: res.Dropped}, err
}

// List lists the snapshots of host on the mounted drive at target.
func (systemEngine) List(target, host string) ([]api.Snapshot, error) {
	return backup.List(target, host)
}

// Verify re-reads a snapshot in an engine child with the caller's credentials: a user verifies
// what they may read, and the problems never name other users' files.
func (e systemEngine) Verify(ctx context.Context, target, host, snapshot string, caller drive.Caller, progress func(done, total uint64)) (uint64, []string, error) {
	return backup.SpawnVerify(ctx, e.Path, callerCredential(caller), target, host, snapshot, progress)
}

// Restore copies a path out of a snapshot in an engine child with the caller's credentials, so
// it writes only where the caller may write.
func (e systemEngine) Restore(ctx context.Context, target, host string, req drive.RestoreRequest, progress func(done, total uint64)) error {
	return backup.SpawnRestore(ctx, e.Path, callerCredential(req.Caller), target, host, req.Snapshot, req.Path, req.Destination, req.Overwrite, progress)
}

// callerCredential is the caller's identity for an engine child: the uid and groups of the
// calling process as the bus daemon reported them, never what a user database says about a
// name.
func callerCredential(c drive.Caller) *syscall.Credential {
	cred := &syscall.Credential{Uid: c.UID, Gid: c.GID, Groups: []uint32{}}
	for _, g := range c.Groups {
		if g != c.GID {
			cred.Groups = append(cred.Groups, g)
		}
	}
	return cred
}

func (e systemEngine) lookup(ctx context.Context, name string) (*syscall.Credential, error) {
	if e.LookupUser != nil {
		return e.LookupUser(name)
	}
	return userCredential(ctx, name)
}

// userCredential returns the uid, primary gid and supplementary groups of the user name, as
// NSS knows them (service/internal/users: getent, so LDAP users work).
func userCredential(ctx context.Context, name string) (*syscall.Credential, error) {
	u, err := users.Default.Lookup(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("cannot run the backup as %q: %w", name, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("cannot run the backup as %q: unusable uid %q or gid %q", name, u.Uid, u.Gid)
	}
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	groups, err := users.Default.GroupIDs(ctx, name, cred.Gid)
	if err != nil {
		return nil, fmt.Errorf("cannot run the backup as %q: %w", name, err)
	}
	for _, g := range groups {
		if g != cred.Gid {
			cred.Groups = append(cred.Groups, g)
		}
	}
	return cred, nil
}
