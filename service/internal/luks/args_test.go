package luks

import (
	"slices"
	"strings"
	"testing"
)

func TestArgv(t *testing.T) {
	const dev = "/dev/sdb"
	const name = "plugvault-2f8c6bd5-7a0e-4c7e-9a55-0c1d3e9f7b21"
	cases := []struct {
		name string
		got  []string
		want string
	}{
		{"isLuks", isLuksArgs(dev), "isLuks --disable-external-tokens -- /dev/sdb"},
		{"uuid", uuidArgs(dev), "luksUUID --disable-external-tokens -- /dev/sdb"},
		{"dump json", dumpJSONArgs(dev), "luksDump --dump-json-metadata --disable-external-tokens -- /dev/sdb"},
		{"dump text", dumpTextArgs(dev), "luksDump --disable-external-tokens -- /dev/sdb"},
		{"test any slot", testKeyArgs(dev, -1), "open --test-passphrase --type=luks --key-file=- --disable-external-tokens -- /dev/sdb"},
		{"test slot 1", testKeyArgs(dev, 1), "open --test-passphrase --type=luks --key-file=- --key-slot=1 --disable-external-tokens -- /dev/sdb"},
		{"open", openArgs(dev, name, 1, false), "open --type=luks --key-file=- --key-slot=1 --disable-external-tokens -- /dev/sdb " + name},
		{"open ro any", openArgs(dev, name, -1, true), "open --type=luks --key-file=- --readonly --disable-external-tokens -- /dev/sdb " + name},
		{"close", closeArgs(name, false), "close -- " + name},
		{"close deferred", closeArgs(name, true), "close --deferred -- " + name},
		{"status", statusArgs(name), "status -- " + name},
		{"format default", formatArgs(dev, "", PBKDF{}), "luksFormat --type=luks2 --batch-mode --key-file=- --key-slot=0 --pbkdf=argon2id -- /dev/sdb"},
		{"format label fast", formatArgs(dev, "backup stick", FastPBKDF), "luksFormat --type=luks2 --batch-mode --key-file=- --key-slot=0 --pbkdf=pbkdf2 --pbkdf-force-iterations=1000 --label=backup stick -- /dev/sdb"},
		{"format argon capped", formatArgs(dev, "", PBKDF{Type: "argon2id", Iterations: 4, MemoryKiB: 32768}), "luksFormat --type=luks2 --batch-mode --key-file=- --key-slot=0 --pbkdf=argon2id --pbkdf-force-iterations=4 --pbkdf-memory=32768 -- /dev/sdb"},
		{"add key fast", addKeyArgs(dev, FastPBKDF), "luksAddKey --key-file=- --pbkdf=pbkdf2 --pbkdf-force-iterations=1000 --disable-external-tokens -- /dev/sdb /dev/fd/3"},
		{"add key argon", addKeyArgs(dev, PBKDF{}), "luksAddKey --key-file=- --pbkdf=argon2id --disable-external-tokens -- /dev/sdb /dev/fd/3"},
		{"header backup", headerBackupArgs(dev, "/run/x/header"), "luksHeaderBackup --batch-mode --disable-external-tokens --header-backup-file=/run/x/header -- /dev/sdb"},
		{"kill slot", killSlotArgs(dev, 3), "luksKillSlot --key-file=- --disable-external-tokens -- /dev/sdb 3"},
	}
	for _, c := range cases {
		if got := strings.Join(c.got, " "); got != c.want {
			t.Errorf("%s:\n got  %s\n want %s", c.name, got, c.want)
		}
		// Every positional argument comes after "--".
		i := slices.Index(c.got, "--")
		if i < 0 || i == len(c.got)-1 {
			t.Errorf("%s: no positional arguments after --", c.name)
		}
		for _, a := range c.got[:i] {
			if !strings.HasPrefix(a, "-") && a != c.got[0] {
				t.Errorf("%s: %q is a positional argument before --", c.name, a)
			}
		}
	}
}

func TestParseVersion(t *testing.T) {
	for in, want := range map[string]string{
		"cryptsetup 2.6.1 flags: UDEV BLKID KEYRING KERNEL_CAPI \n": "2.6.1",
		"cryptsetup 2.7.0-rc1\n":                                    "2.7.0",
		"cryptsetup 3.0.0":                                          "3.0.0",
	} {
		if got, err := parseVersion(in); err != nil || got != want {
			t.Errorf("parseVersion(%q) = %q, %v", in, got, err)
		}
	}
	for _, bad := range []string{"cryptsetup 2.3.7", "cryptsetup 1.7.5", "", "veracrypt 1.0.0"} {
		if _, err := parseVersion(bad); err == nil {
			t.Errorf("parseVersion(%q) accepted", bad)
		}
	}
}

func TestCheckDevice(t *testing.T) {
	for _, bad := range []string{"", "sdb", "-sdb", "/dev/../etc/passwd", "/dev/sdb/", "/dev//sdb", "/etc/passwd", "/dev", "/dev/", "/dev/null", "/dev/stdin"} {
		if err := checkDevice(bad); err == nil {
			t.Errorf("checkDevice(%q) accepted", bad)
		}
	}
}

func TestParseDumps(t *testing.T) {
	h, err := parseJSONDump([]byte(`{"keyslots":{"0":{"type":"luks2","kdf":{"type":"argon2id","time":4,"memory":1048576,"cpus":4}},
		"1":{"type":"luks2","kdf":{"type":"pbkdf2","hash":"sha256","iterations":1000}}},"tokens":{},"segments":{}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[int]Keyslot{0: {"luks2", "argon2id", 4, 1048576}, 1: {"luks2", "pbkdf2", 1000, 0}}
	if h.Version != 2 || len(h.Keyslots) != 2 || h.Keyslots[0] != want[0] || h.Keyslots[1] != want[1] {
		t.Errorf("got %+v", h)
	}
	for _, bad := range []string{`{}`, `{"keyslots":{"x":{}}}`, `{"keyslots":{"32":{}}}`, `{"keyslots":{"01":{}}}`, `nope`} {
		if _, err := parseJSONDump([]byte(bad)); err == nil {
			t.Errorf("parseJSONDump(%s) accepted", bad)
		}
	}
	text := "LUKS header information for l1.img\n\nVersion:       \t1\nCipher name:   \taes\n" +
		"Key Slot 0: ENABLED\n\tIterations:         \t1000\n\tSalt: 03 f2\nKey Slot 1: DISABLED\nKey Slot 2: ENABLED\n\tIterations:         \t2048\n"
	h, err = parseTextDump([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if h.Version != 1 || len(h.Keyslots) != 2 || h.Keyslots[2].Iterations != 2048 || h.Keyslots[0].PBKDF != "pbkdf2" {
		t.Errorf("got %+v", h)
	}
	if _, err := parseTextDump([]byte("Version:       \t2\n")); err == nil {
		t.Error("a LUKS2 text dump must be refused")
	}
}
