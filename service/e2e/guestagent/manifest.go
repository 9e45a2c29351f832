package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/plugvault/plugvault/service/e2e/agentproto"
)

// manifest describes every entry below root without following symlinks: type, permission bits,
// owner, size, mtime, content hash, link target, inode, xattrs and optionally the physical
// extents (FIEMAP), which show whether two files share storage.
func manifest(root string, extents bool) ([]agentproto.Entry, error) {
	var out []agentproto.Entry
	var problems []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			problems = append(problems, err.Error())
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			problems = append(problems, err.Error())
			return nil
		}
		e := agentproto.Entry{Path: rel, Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid, Size: st.Size,
			MtimeNS: st.Mtim.Nano(), Ino: st.Ino, Nlink: uint64(st.Nlink), Dev: st.Dev}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			e.Type = "file"
			sum, err := hashFile(p)
			if err != nil {
				problems = append(problems, err.Error())
			}
			e.SHA256 = sum
			if extents {
				e.Extents, err = fiemap(p)
				if err != nil {
					problems = append(problems, err.Error())
				}
			}
		case unix.S_IFDIR:
			e.Type = "dir"
			e.Size = 0 // directory sizes are a property of the filesystem, not of the data
		case unix.S_IFLNK:
			e.Type = "symlink"
			e.Link, _ = os.Readlink(p)
		default:
			e.Type = "other"
		}
		e.Xattrs = xattrs(p)
		out = append(out, e)
		return nil
	})
	if err == nil && len(problems) > 0 {
		err = fmt.Errorf("cannot describe every entry: %s", strings.Join(problems, "; "))
	}
	return out, err
}

func hashFile(p string) (string, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func xattrs(p string) map[string]string {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil || n == 0 {
		return nil
	}
	out := map[string]string{}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		val := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, name, val)
		if err == nil {
			out[name] = hex.EncodeToString(val[:m])
		}
	}
	return out
}

// FIEMAP (linux/fiemap.h).
const (
	fsIocFiemap     = 0xC020660B
	fiemapFlagSync  = 0x1
	fiemapExtLast   = 0x1
	fiemapMaxExtent = 256
)

type fiemapHeader struct {
	Start, Length                      uint64
	Flags, Mapped, ExtentCount, Unused uint32
}

type fiemapExtent struct {
	Logical, Physical, Length uint64
	reserved64                [2]uint64
	Flags                     uint32
	reserved                  [3]uint32
}

// fiemap returns the physical extents of a file: two files whose extents are equal share their
// storage (btrfs reflinks and snapshots).
func fiemap(p string) ([][2]uint64, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out [][2]uint64
	var start uint64
	for {
		buf := make([]byte, int(unsafe.Sizeof(fiemapHeader{}))+fiemapMaxExtent*int(unsafe.Sizeof(fiemapExtent{})))
		hdr := (*fiemapHeader)(unsafe.Pointer(&buf[0]))
		hdr.Start, hdr.Length, hdr.Flags, hdr.ExtentCount = start, ^uint64(0)-start, fiemapFlagSync, fiemapMaxExtent
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), fsIocFiemap, uintptr(unsafe.Pointer(&buf[0]))); errno != 0 {
			return nil, fmt.Errorf("cannot map the extents of %s: %w", p, errno)
		}
		if hdr.Mapped == 0 {
			return out, nil
		}
		exts := unsafe.Slice((*fiemapExtent)(unsafe.Pointer(&buf[unsafe.Sizeof(fiemapHeader{})])), hdr.Mapped)
		for _, e := range exts {
			out = append(out, [2]uint64{e.Physical, e.Length})
			start = e.Logical + e.Length
			if e.Flags&fiemapExtLast != 0 {
				return out, nil
			}
		}
	}
}
