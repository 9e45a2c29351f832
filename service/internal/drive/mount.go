package drive

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/plugvault/plugvault/service/api"
)

// teardownTimeout bounds one teardown (unmount and close).
const teardownTimeout = 2 * time.Minute

// mount mounts d's open mapping at its mount point (unless it already is) and returns its
// filesystem type and device number.
func (m *Manager) mount(ctx context.Context, d *drive, readOnly bool) (fstype string, dev uint64, err error) {
	src := m.mapperPath(d)
	fstype, err = m.deps.Mounter.FSType(src)
	if err != nil {
		return "", 0, failf(err, "The drive's filesystem cannot be recognised: %v", err)
	}
	m.mu.Lock()
	mounted := d.m.mounted
	m.applyLocked(d, evMountBegin{})
	m.unlock()
	if !mounted {
		if err := m.deps.Mounter.Mount(ctx, src, m.target(d), fstype, readOnly, d.cfg.MountOptions, d.cfg.RunAs); err != nil {
			return "", 0, failf(err, "The drive cannot be mounted: %v", err)
		}
		m.apply(d, evMounted{readOnly: readOnly})
	}
	dev, err = m.deps.Mounter.DeviceNumber(src)
	if err != nil {
		return "", 0, failf(err, "The drive's device cannot be checked: %v", err)
	}
	return fstype, dev, nil
}

// teardown unmounts and locks whatever d has set up, looking at what is really there. With
// publish, it passes through unmounting and locking.
func (m *Manager) teardown(d *drive, publish bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), teardownTimeout)
	defer cancel()
	m.mu.Lock()
	mountTried, mapTried := d.m.mountTried || d.m.mounted, d.m.mapTried || d.m.mapped
	gone := d.m.gone
	m.mu.Unlock()
	var errs []error
	if mountTried {
		if publish {
			m.apply(d, evUnmounting{})
		}
		target := m.target(d)
		mounted := true
		if infos, err := m.deps.Mounter.Mounts(m.base); err == nil {
			mounted = false
			for _, mi := range infos {
				if mi.Target == target {
					mounted = true
				}
			}
		}
		var err error
		if mounted {
			err = m.deps.Mounter.Unmount(ctx, target)
		}
		if err != nil && gone && errors.Is(err, api.ErrBusy) {
			// The stick is gone, so what still holds the mount cannot reach the device; the
			// mapping must go so that a replug works.
			m.log.Warn("the removed drive's mount is still in use; detaching it", "drive", d.cfg.Name, "err", err)
			if derr := m.deps.Mounter.Detach(target); derr != nil {
				err = errors.Join(err, derr)
			} else {
				err = nil
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("cannot unmount %s: %w", target, err))
			if !gone {
				// Keep the mapping under the mount: the drive stays unlocked and is never
				// called safe to remove; Eject tries again once the programs are closed.
				return errors.Join(errs...)
			}
		} else {
			m.apply(d, evUnmounted{})
		}
	}
	if mapTried {
		if publish {
			m.apply(d, evLocking{})
		}
		name := m.mappingName(d)
		active, err := m.deps.LUKS.Active(ctx, name)
		if err != nil || active {
			err = m.closeMapping(ctx, name)
		}
		if err != nil {
			errs = append(errs, err)
		} else {
			m.apply(d, evLocked{})
		}
	}
	if len(errs) == 0 {
		m.apply(d, evTornDown{})
	}
	return errors.Join(errs...)
}

// refreshSnapshots reads the snapshot list from the mounted drive into the cache and updates
// LastBackup and SnapshotCount.
func (m *Manager) refreshSnapshots(d *drive, target string) {
	snaps, err := m.deps.Engine.List(target, m.host)
	if err != nil {
		m.log.Warn("cannot list snapshots", "drive", d.cfg.Name, "err", err)
		return
	}
	m.mu.Lock()
	defer m.unlock()
	d.snapshots = snaps
	m.applyLocked(d, evSnapshots{snaps: snaps})
}

// openReadOnly unlocks with the keyfile and mounts read-only. A non-empty problem (lower
// case) says why the keyfile cannot open a stick that is the drive (its fingerprint matched):
// nothing is mounted then, and the drive's passphrase may be asked for.
func (m *Manager) openReadOnly(ctx context.Context, d *drive, dv device) (problem string, err error) {
	problem, err = m.unlockWithKeyfile(ctx, d, dv, true)
	if err != nil {
		return "", m.userErr(ctx, err)
	}
	if problem != "" {
		return problem, nil
	}
	return "", m.mountReadOnly(ctx, d)
}

// mountReadOnly mounts d's open mapping read-only and reads its snapshot list.
func (m *Manager) mountReadOnly(ctx context.Context, d *drive) error {
	if _, _, err := m.mount(ctx, d, true); err != nil {
		return m.userErr(ctx, err)
	}
	m.refreshSnapshots(d, m.target(d))
	return nil
}

// userErr turns a step's error into one for a D-Bus caller.
func (m *Manager) userErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("cannot open the drive: %v: %w", context.Cause(ctx), api.ErrCancelled)
	}
	var ue *userError
	if errors.As(err, &ue) {
		return fmt.Errorf("cannot open the drive: %s: %w", strings.ToLower(ue.reason[:1])+ue.reason[1:], api.ErrFailed)
	}
	return err
}
