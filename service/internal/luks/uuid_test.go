package luks

import "testing"

// badUUIDs are refused everywhere a LUKS UUID is used.
var badUUIDs = []string{"", "2F8C6BD5-7A0E-4C7E-9A55-0C1D3E9F7B21", "2f8c6bd5-7a0e-4c7e-9a55-0c1d3e9f7b2",
	"2f8c6bd5-7a0e-4c7e-9a55-0c1d3e9f7b21x", "../../etc", "2f8c6bd5 7a0e-4c7e-9a55-0c1d3e9f7b21",
	"-2f8c6bd5-7a0e-4c7e-9a55-0c1d3e9f7b2", "2f8c6bd5-7a0e-4c7e-9a55-0c1d3e9f7b21\n",
	"2f8c6bd57a0e4c7e9a550c1d3e9f7b21", "2f8c6bd5-7a0e-4c7e-9a55-0c1d3e9f7b21/..", "0b9f5c6e-1111-4a4a-9c9c-gggggggggggg"}

func TestCheckUUID(t *testing.T) {
	const good = "2f8c6bd5-7a0e-4c7e-9a55-0c1d3e9f7b21"
	if err := CheckUUID(good); err != nil {
		t.Errorf("CheckUUID(%q): %v", good, err)
	}
	for _, bad := range badUUIDs {
		if err := CheckUUID(bad); err == nil {
			t.Errorf("CheckUUID(%q) accepted", bad)
		}
	}
}

func TestMappingName(t *testing.T) {
	const uuid = "2f8c6bd5-7a0e-4c7e-9a55-0c1d3e9f7b21"
	name, err := MappingName(uuid)
	if err != nil || name != MappingPrefix+uuid {
		t.Errorf("MappingName(%q) = %q, %v", uuid, name, err)
	}
	if err := checkName(name); err != nil {
		t.Errorf("checkName refuses what MappingName made: %v", err)
	}
	for _, bad := range badUUIDs {
		if _, err := MappingName(bad); err == nil {
			t.Errorf("MappingName(%q) accepted", bad)
		}
		if err := checkName(MappingPrefix + bad); err == nil {
			t.Errorf("checkName(%q) accepted", MappingPrefix+bad)
		}
	}
	for _, bad := range []string{uuid, "other-" + uuid, "plugvault" + uuid, "Plugvault-" + uuid} {
		if err := checkName(bad); err == nil {
			t.Errorf("checkName(%q) accepted", bad)
		}
	}
}
