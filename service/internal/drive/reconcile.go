package drive

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/plugvault/plugvault/service/internal/luks"
)

// reconcile adopts (stick present) or cleans (stick absent) the mappings and mounts an earlier
// daemon left behind.
func (m *Manager) reconcile(ctx context.Context, cold []Event) {
	present := make(map[*drive]bool)
	m.mu.Lock()
	// Bus calls may already add drives (AddDrive, from an enrollment): look up a copy.
	drives := maps.Clone(m.drives)
	for _, e := range cold {
		if d, _ := m.match(e); d != nil {
			present[d] = true
		}
	}
	m.mu.Unlock()

	var names []string
	var err error
	if m.deps.Mappings != nil {
		names, err = m.deps.Mappings(ctx)
	} else {
		names, err = listMappings(m.mapper)
	}
	if err != nil {
		m.log.Warn("cannot list device-mapper mappings", "err", err)
	}
	mounts, err := m.deps.Mounter.Mounts(m.base)
	if err != nil {
		m.log.Warn("cannot list mounts", "base", m.base, "err", err)
	}
	mappedDrive := make(map[string]*drive) // mapping name -> present drive
	for _, name := range names {
		if !strings.HasPrefix(name, luks.MappingPrefix) {
			continue
		}
		if d := drives[strings.TrimPrefix(name, luks.MappingPrefix)]; d != nil && present[d] {
			mappedDrive[name] = d
		}
	}
	// Deepest first, so nested leftovers come off before their parents.
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i].Target) > len(mounts[j].Target) })
	for _, mi := range mounts {
		if gate := filepath.Dir(mi.Target); filepath.Dir(gate) == m.base {
			d := drives[filepath.Base(gate)]
			if d != nil && mi.Target == m.target(d) && mappedDrive[m.mappingName(d)] == d && m.mountOfMapping(mi, d) {
				m.log.Info("adopting the mount of a plugged-in drive", "drive", d.cfg.Name, "target", mi.Target)
				m.apply(d, evAdopted{mount: true})
				continue
			}
		}
		if mi.Target == m.base {
			continue
		}
		m.log.Info("cleaning a leftover mount", "target", mi.Target, "source", mi.Source)
		if err := m.deps.Mounter.Unmount(ctx, mi.Target); err != nil {
			m.log.Warn("cannot unmount a leftover mount", "target", mi.Target, "err", err)
		}
	}
	for _, name := range names {
		if !strings.HasPrefix(name, luks.MappingPrefix) {
			continue
		}
		if d := mappedDrive[name]; d != nil {
			m.log.Info("adopting the mapping of a plugged-in drive", "drive", d.cfg.Name, "mapping", name)
			m.apply(d, evAdopted{})
			continue
		}
		m.log.Info("closing a leftover mapping", "mapping", name)
		if err := m.closeMapping(ctx, name); err != nil {
			m.log.Warn("cannot close a leftover mapping", "mapping", name, "err", err)
		}
	}
}

// mountOfMapping tells whether mi is a mount of d's mapping.
func (m *Manager) mountOfMapping(mi MountInfo, d *drive) bool {
	if mi.Source == m.mapperPath(d) {
		return true
	}
	dev, err := m.deps.Mounter.DeviceNumber(m.mapperPath(d))
	return err == nil && dev != 0 && dev == mi.Dev
}

// listMappings lists the plugvault-* entries of the mapper directory.
func listMappings(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), luks.MappingPrefix) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// closeMapping closes a mapping, deferred if it is still held (it then goes when its last
// user does).
func (m *Manager) closeMapping(ctx context.Context, name string) error {
	err := m.deps.LUKS.Close(ctx, name, false)
	if err == nil {
		return nil
	}
	m.log.Warn("cannot close mapping; deferring the close", "mapping", name, "err", err)
	if derr := m.deps.LUKS.Close(ctx, name, true); derr != nil {
		return fmt.Errorf("cannot close %s: %w", name, errors.Join(err, derr))
	}
	return nil
}
