package luks

import (
	"fmt"
	"regexp"
	"strings"
)

// MappingPrefix begins the name of every device-mapper mapping plugvault creates or touches:
// "plugvault-<luks uuid>". On start plugvaultd adopts or cleans up the mappings whose names
// begin with it.
const MappingPrefix = "plugvault-"

// uuidRE is the form cryptsetup luksUUID prints: 8-4-4-4-12 lower-case hex digits.
var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// CheckUUID accepts a LUKS UUID in the one form plugvault uses: 8-4-4-4-12 lower-case hex
// digits, as cryptsetup luksUUID prints it. A LUKS UUID comes from a header anyone could have
// written, and it names a mapping, a keyfile, a udev rule and a directory under /run/plugvault:
// it is checked with this function before it does any of that.
func CheckUUID(uuid string) error {
	if !uuidRE.MatchString(uuid) {
		return fmt.Errorf("%q is not a LUKS UUID: want 8-4-4-4-12 lower-case hex digits", uuid)
	}
	return nil
}

// MappingName returns the name of the mapping of the LUKS device with UUID uuid:
// MappingPrefix followed by the UUID, which must pass CheckUUID.
func MappingName(uuid string) (string, error) {
	if err := CheckUUID(uuid); err != nil {
		return "", fmt.Errorf("cannot name a mapping: %w", err)
	}
	return MappingPrefix + uuid, nil
}

// checkName accepts only a name MappingName returns.
func checkName(name string) error {
	uuid, ok := strings.CutPrefix(name, MappingPrefix)
	if !ok || CheckUUID(uuid) != nil {
		return fmt.Errorf("cannot use mapping name %q: want %s<uuid>", name, MappingPrefix)
	}
	return nil
}
