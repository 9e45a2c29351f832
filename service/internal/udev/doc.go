// Package udev tells plugvaultd which block devices come and go. It listens to udevd's
// broadcasts on NETLINK_KOBJECT_UEVENT group 2 (events after udev's rules ran, so they carry
// ID_FS_TYPE, ID_FS_UUID, ID_SERIAL and the rest) and enumerates the devices already present
// from sysfs and udev's database ("coldplug").
//
// Trust follows libudev (sd-device's device_monitor_receive_device): SO_PASSCRED is enabled
// before bind, and a message is dropped unless it carries SCM_CREDENTIALS with uid 0, was
// multicast to group 2, was not truncated and has a valid libudev header. A BPF socket filter
// keeps only udevd messages of subsystem "block" in the kernel, as
// udev_monitor_filter_add_match_subsystem_devtype does.
//
// Parse and ParseDatabase are pure functions and are fuzzed (go test -fuzz=FuzzParse).
//
// Subscribe first (NewMonitor binds at once), then Enumerate: a device that appears in between
// is reported twice, never missed; the consumer merges duplicates by DEVPATH. A device without a
// udev database entry has not been processed by udevd yet and is skipped: its event will come.
package udev
