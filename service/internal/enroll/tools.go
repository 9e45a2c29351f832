package enroll

import (
	"fmt"
	"regexp"
)

// labelPattern: filesystem labels fit ext4's 16 bytes and never look like an option.
var labelPattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,15}$`)

// mkfsTool returns the program that makes fstype.
func mkfsTool(fstype string) (string, error) {
	switch fstype {
	case "btrfs":
		return "mkfs.btrfs", nil
	case "ext4":
		return "mkfs.ext4", nil
	}
	return "", fmt.Errorf("internal error: unsupported filesystem %q", fstype)
}

// mkfsArgs builds the argv (after the program) that makes fstype with label on device (the
// opened mapping /dev/mapper/plugvault-UUID, which we created a moment ago).
func mkfsArgs(fstype, label, device string) ([]string, error) {
	if !labelPattern.MatchString(label) {
		return nil, fmt.Errorf("internal error: invalid label %q", label)
	}
	switch fstype {
	case "btrfs":
		return []string{
			"--force",        // the fresh mapping holds random bytes that may look like a signature
			"--label", label, // shown by file managers, and as ID_FS_LABEL
			"--", device,
		}, nil
	case "ext4":
		return []string{
			"-F",        // never ask (stdin is /dev/null): the mapping is ours and fresh
			"-q",        // no progress output
			"-L", label, // filesystem label
			"--", device,
		}, nil
	}
	return nil, fmt.Errorf("internal error: unsupported filesystem %q", fstype)
}

// udevReloadArgs makes udevd read the rules again (after a rule was added or removed).
func udevReloadArgs() []string { return []string{"control", "--reload"} }

// udevTriggerArgs replays a change event for device, so the new rule's UDISKS_IGNORE reaches
// udisks now rather than at the next plug.
func udevTriggerArgs(device string) []string {
	return []string{
		"trigger",
		"--action=change", // re-run the rules for the device without adding or removing it
		"--", device,
	}
}
