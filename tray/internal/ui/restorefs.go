package ui

import (
	"errors"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/plugvault/plugvault/service/api"
)

// snapshotMeta is the engine's metadata directory in a snapshot's root; it is not the user's.
const snapshotMeta = ".plugvault"

// maxFound bounds a search's results: a person reads the first few.
const maxFound = 500

// hostDir finds the directory that holds the snapshots in the read-only mount at mount
// (MOUNT/plugvault/HOST): the host directory that has snapshot name. Everything is read with
// the user's own permissions, and no symbolic link is followed.
func hostDir(mount, name string) (string, error) {
	root := filepath.Join(mount, "plugvault")
	entries, err := os.ReadDir(root)
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		if fi, err := os.Lstat(filepath.Join(root, e.Name(), name)); err == nil && fi.IsDir() {
			return filepath.Join(root, e.Name()), nil
		}
	}
	return "", errors.New("cannot find snapshot " + name + " on the drive")
}

// children lists the entries of rel ("" = the root) in snapshot dir snap, directories first,
// as paths relative to the snapshot root; dirs says which are directories (symbolic links to
// directories are not: they are shown, never followed).
func children(snap, rel string) (ids []string, dirs map[string]bool) {
	entries, err := os.ReadDir(filepath.Join(snap, filepath.FromSlash(rel)))
	dirs = map[string]bool{}
	if err != nil {
		return nil, dirs
	}
	for _, e := range entries {
		if rel == "" && e.Name() == snapshotMeta {
			continue
		}
		id := path.Join(rel, e.Name())
		ids = append(ids, id)
		dirs[id] = e.IsDir()
	}
	sort.SliceStable(ids, func(i, j int) bool {
		if dirs[ids[i]] != dirs[ids[j]] {
			return dirs[ids[i]]
		}
		return strings.ToLower(ids[i]) < strings.ToLower(ids[j])
	})
	return ids, dirs
}

// search returns up to maxFound paths in snapshot dir snap whose name contains text (ignoring
// case), in walk order. It does not follow symbolic links and skips what it cannot read.
func search(snap, text string) []string {
	text = strings.ToLower(text)
	var found []string
	_ = filepath.WalkDir(snap, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // unreadable: skip it, keep going
		}
		rel, rerr := filepath.Rel(snap, p)
		if rerr != nil || rel == "." {
			return nil
		}
		if rel == snapshotMeta {
			return filepath.SkipDir
		}
		if strings.Contains(strings.ToLower(d.Name()), text) {
			found = append(found, filepath.ToSlash(rel))
			if len(found) >= maxFound {
				return filepath.SkipAll
			}
		}
		return nil
	})
	return found
}

// version is rel as one snapshot holds it.
type version struct {
	snap    api.Snapshot
	size    int64
	modTime time.Time
}

// versions returns the distinct versions of rel across snaps (newest snapshot first): each
// version is named by the oldest snapshot of the unbroken run that holds it unchanged (same
// size and modification time), that is, since when it was backed up as it is.
func versions(base string, snaps []api.Snapshot, rel string) []version {
	var out []version
	for _, s := range snaps {
		fi, err := os.Lstat(filepath.Join(base, s.Name, filepath.FromSlash(rel)))
		if err != nil {
			continue
		}
		v := version{snap: s, size: fi.Size(), modTime: fi.ModTime()}
		if n := len(out); n > 0 && out[n-1].size == v.size && out[n-1].modTime.Equal(v.modTime) {
			out[n-1] = v // the same content, kept since an older snapshot
			continue
		}
		out = append(out, v)
	}
	return out
}

// moveNoReplace renames from to to, failing if to exists (never replacing the user's file).
func moveNoReplace(from, to string) error {
	return unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, unix.RENAME_NOREPLACE)
}
