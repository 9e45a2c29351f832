package backup

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// btrfs ioctls (linux/btrfs.h). Creating a subvolume needs only write access to the parent;
// a read-only snapshot of a subvolume one does not own and every delete need root (or
// user_subvol_rm_allowed), which is why they run in the daemon.
const (
	btrfsIocSubvolCreate  = 0x5000940e // _IOW(0x94, 14, struct btrfs_ioctl_vol_args)
	btrfsIocSnapDestroy   = 0x5000940f // _IOW(0x94, 15, struct btrfs_ioctl_vol_args)
	btrfsIocSnapCreateV2  = 0x50009417 // _IOW(0x94, 23, struct btrfs_ioctl_vol_args_v2)
	btrfsIocSync          = 0x00009408 // _IO(0x94, 8)
	btrfsSubvolRdonly     = 1 << 1
	btrfsPathNameMax      = 4087
	btrfsSubvolNameMax    = 4039
	btrfsFirstFreeObjectd = 256 // the root directory of every subvolume has this inode number
)

type btrfsVolArgs struct {
	Fd   int64
	Name [btrfsPathNameMax + 1]byte
}

type btrfsVolArgsV2 struct {
	Fd      int64
	Transid uint64
	Flags   uint64
	Unused  [4]uint64
	Name    [btrfsSubvolNameMax + 1]byte
}

func setName(dst []byte, name string) error {
	if len(name) >= len(dst) || name == "" {
		return fmt.Errorf("invalid subvolume name %q", name)
	}
	copy(dst, name)
	return nil
}

// btrfsCreateSubvol creates subvolume name in directory dir.
func btrfsCreateSubvol(dir int, name string) error {
	var a btrfsVolArgs
	if err := setName(a.Name[:], name); err != nil {
		return err
	}
	return ioctl(dir, btrfsIocSubvolCreate, unsafe.Pointer(&a))
}

// btrfsSnapshot creates a (read-only) snapshot of the subvolume open as src, named name in dir.
func btrfsSnapshot(src, dir int, name string, readOnly bool) error {
	var a btrfsVolArgsV2
	a.Fd = int64(src)
	if readOnly {
		a.Flags = btrfsSubvolRdonly
	}
	if err := setName(a.Name[:], name); err != nil {
		return err
	}
	return ioctl(dir, btrfsIocSnapCreateV2, unsafe.Pointer(&a))
}

// btrfsDestroy deletes subvolume name in dir.
func btrfsDestroy(dir int, name string) error {
	var a btrfsVolArgs
	if err := setName(a.Name[:], name); err != nil {
		return err
	}
	return ioctl(dir, btrfsIocSnapDestroy, unsafe.Pointer(&a))
}

// btrfsSync commits the filesystem of fd and wakes its cleaner, which removes deleted
// subvolumes (a plain syncfs leaves that to the next periodic commit, up to 30 s away). On
// another filesystem it is a syncfs.
func btrfsSync(fd int) {
	if ioctl(fd, btrfsIocSync, nil) != nil {
		_ = unix.Syncfs(fd)
	}
}

// isSubvolume reports whether name in dir is the root of a btrfs subvolume.
func isSubvolume(dir int, name string) bool {
	st, err := lstatAt(dir, name)
	return err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR && st.Ino == btrfsFirstFreeObjectd
}

func ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
	if errno != 0 {
		return errno
	}
	return nil
}
