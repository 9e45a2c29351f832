// Package mount mounts and unmounts the unlocked backup filesystem with mount(2) and
// umount2(2) (no mount(8)), and answers the one question the backup engine asks before every
// batch of writes: "is this path still our mount of our mapping?" (Guard). If the stick was
// pulled and the mount is gone, the mount point is an empty directory on the internal disk;
// writing there would silently fill the wrong disk, so the engine must stop instead.
//
// Mount points live two levels below a base directory (default /run/plugvault: root-owned,
// 0711, created if missing, refused if it is a symlink or owned by anyone else), at
// <base>/<uuid>/drive. The base is traversable but not listable. <base>/<uuid> is the gate: root's,
// 0700, with a POSIX ACL that lets in only the drive's user (udisks' /run/media/<user> works
// the same way), because the mode of a mount point itself is hidden by the filesystem mounted
// on it. So the engine child, which runs as the drive's user, and that user browsing the
// read-only backups reach the mount, and what they then see is the drive's own permissions;
// nobody else can enter it, and so nobody else can keep it mounted by sitting in it.
// Unmount and Detach also accept <base>/<name>, a mount point with no gate, and clean it up.
// Mounts are always nosuid,nodev,noexec,noatime; the filesystem type and every extra option
// come from an allow-list.
//
// btrfs reports an anonymous device number (0:N) in /proc/self/mountinfo and yet another one
// in stat(2), never the block device's. For btrfs, Guard and Mounts therefore ask the
// filesystem for its fsid (BTRFS_IOC_FS_INFO on the mount point) and read its device list from
// /sys/fs/btrfs/<fsid>/devices, which must be exactly the expected device.
package mount
