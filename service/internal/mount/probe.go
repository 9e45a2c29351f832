package mount

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Superblock signatures of the filesystems we mount (the same places libblkid looks).
var probes = []struct {
	fstype string
	off    int64
	magic  []byte
}{
	{"btrfs", 0x10040, []byte("_BHRfS_M")},
	{"xfs", 0, []byte("XFSB")},
	{"ext4", 0x438, binary.LittleEndian.AppendUint16(nil, 0xEF53)},
}

// ProbeFSType reads the superblock of device (an opened mapping such as
// /dev/mapper/plugvault-<uuid>, a udev symlink to ../dm-N) and returns "btrfs", "ext4" or
// "xfs". It reads a few bytes and needs no tool, so the filesystem inside the mapping is known
// before anything mounts it. Only block devices (and, for tests, image files) are read.
func ProbeFSType(device string) (string, error) {
	f, err := os.OpenFile(device, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("cannot probe the filesystem on %s: %w", device, err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return "", fmt.Errorf("cannot probe the filesystem on %s: %w", device, err)
	}
	if t := st.Mode & unix.S_IFMT; t != unix.S_IFBLK && t != unix.S_IFREG {
		return "", fmt.Errorf("cannot probe the filesystem on %s: not a block device", device)
	}
	return probeFSType(f)
}

func probeFSType(r io.ReaderAt) (string, error) {
	for _, p := range probes {
		buf := make([]byte, len(p.magic))
		if _, err := r.ReadAt(buf, p.off); err != nil {
			continue // too small for this one
		}
		if bytes.Equal(buf, p.magic) {
			if p.fstype == "ext4" {
				return extFamily(r)
			}
			return p.fstype, nil
		}
	}
	return "", fmt.Errorf("cannot find a btrfs, ext4 or xfs filesystem (is the drive formatted?)")
}

// extFamily tells ext4 from ext2/ext3, which share the magic: the ext4 kernel driver mounts all
// three, so "ext4" is right for each; the check only guards against a corrupt superblock.
func extFamily(r io.ReaderAt) (string, error) {
	var sb [4]byte
	// s_rev_level at 0x44c (within the superblock at 0x400): 0 or 1 on every valid ext2/3/4.
	if _, err := r.ReadAt(sb[:], 0x44c); err != nil {
		return "", fmt.Errorf("cannot read the ext superblock: %w", err)
	}
	if rev := binary.LittleEndian.Uint32(sb[:]); rev > 1 {
		return "", fmt.Errorf("cannot use the ext filesystem: unknown revision %d", rev)
	}
	return "ext4", nil
}
