// Package usbpower powers off a USB disk after it was unmounted and locked, as udisks'
// Drive.PowerOff does, so the user can pull it (and a disk's motor and LED stop).
//
// What udisks does (src/udiskslinuxdrive.c, handle_power_off): fsync every block device of
// the drive; open the disk and send SCSI SYNCHRONIZE CACHE and START STOP UNIT (failures
// ignored: many USB bridges reject them); then find the disk's parent with subsystem "usb" and
// devtype "usb_device" and write "1" to its sysfs attribute "remove" (Linux 3.18, commit
// 253e05724f92 "USB: add a 'remove' hub port attribute").
//
// What PowerOff does, and why it differs:
//  0. Refuse (*InUseError, api.ErrBusy) while anything is stacked on the disk or a partition
//     (sysfs "holders", e.g. our LUKS mapping still open, LVM) or a filesystem is mounted from
//     either (mountinfo, matched by device number or source: a second partition of the stick
//     that the desktop mounted): pulling it away would lose data.
//  1. fsync every partition's device node and then the disk's (each has its own block device
//     cache; fsync also issues a cache flush to the drive).
//  2. Resolve the USB device ancestor first: once the SCSI device is gone, the disk's sysfs
//     directory is gone too.
//  3. Write "1" to /sys/<devpath>/device/delete: the SCSI disk driver detaches the disk
//     cleanly, which sends SYNCHRONIZE CACHE itself (sd_shutdown) and makes udev report
//     "remove". This replaces udisks' hand-built SCSI commands (no SG_IO ioctl code here).
//  4. Write "1" to the USB device's "remove" attribute, which logically disconnects it from
//     its hub port; where the kernel has no "remove" but the port has a "disable" attribute
//     (<usb device>/port/disable), write that instead.
//
// A disk that is not on USB but is SCSI (e.g. a SATA disk in a dock seen as SCSI) gets steps
// 1-3 only. The sysfs and /dev roots are parameters (PowerOffAt) so the walk is unit-tested
// on a fake tree and can run in a VM harness.
package usbpower
