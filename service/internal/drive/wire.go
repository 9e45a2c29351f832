package drive

import (
	"context"
	"errors"

	"github.com/plugvault/plugvault/service/internal/mount"
	"github.com/plugvault/plugvault/service/internal/udev"
)

// This file adapts the real OS layers to the state machine's small interfaces. It only converts
// types; the behaviour lives in the packages it wraps.

// UdevSource adapts a udev monitor (already subscribed) to Source. The returned source's
// event channel closes when the monitor's does.
func UdevSource(m *udev.Monitor) Source {
	s := &udevSource{m: m, events: make(chan Event, 64)}
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
	events chan Event
}

func (s *udevSource) Events() <-chan Event { return s.events }

func (s *udevSource) Enumerate(ctx context.Context) ([]Event, error) {
	evs, err := s.m.Enumerate(ctx)
	out := make([]Event, len(evs))
	for i, ev := range evs {
		out[i] = fromUdev(ev)
	}
	return out, err
}

func fromUdev(ev udev.Event) Event {
	return Event{Action: ev.Action, DevPath: ev.DevPath, Subsystem: ev.Subsystem, DevType: ev.DevType,
		DevName: ev.DevName, Major: ev.Major, Minor: ev.Minor, SeqNum: ev.SeqNum, Props: ev.Props}
}

// SystemMounter adapts service/internal/mount to Mounter.
type SystemMounter struct {
	M *mount.Mounter
}

// Mount mounts source (an opened mapping) at target.
func (s SystemMounter) Mount(ctx context.Context, source, target, fstype string, readOnly bool, extra []string) error {
	return s.M.Mount(ctx, source, target, fstype, readOnly, extra)
}

// Unmount unmounts target, retrying while it is busy, and detaches it lazily as the last
// resort (the state machine has already killed the engine; what still holds the mount is a
// user's shell or file manager, and the stick may be gone).
func (s SystemMounter) Unmount(ctx context.Context, target string) error {
	err := s.M.Unmount(ctx, target)
	var busy *mount.BusyError
	if errors.As(err, &busy) {
		return s.M.Detach(target)
	}
	return err
}

// FSType probes the filesystem inside an opened mapping.
func (SystemMounter) FSType(device string) (string, error) { return mount.ProbeFSType(device) }

// DeviceNumber returns a block device's number.
func (SystemMounter) DeviceNumber(path string) (uint64, error) { return mount.DeviceNumber(path) }

// Mounts lists the mounts at or below base.
func (SystemMounter) Mounts(base string) ([]MountInfo, error) {
	infos, err := mount.Mounts(base)
	out := make([]MountInfo, len(infos))
	for i, in := range infos {
		out[i] = MountInfo{Target: in.Target, Source: in.Source, FSType: in.FSType, Dev: in.Dev}
	}
	return out, err
}
