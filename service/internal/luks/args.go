package luks

import "strconv"

// fdNewKey is the inherited fd that carries the new key of luksAddKey (Cmd.ExtraFiles[0]).
const fdNewKey = "/dev/fd/3"

// noTokens keeps cryptsetup from loading external LUKS2 token plugins named by the header of an
// untrusted stick (cryptsetup >= 2.4).
const noTokens = "--disable-external-tokens"

// PBKDF selects the key derivation for a new key slot.
type PBKDF struct {
	// Type is "argon2id" (the default when empty) or "pbkdf2".
	Type string
	// Iterations forces the iteration count (pbkdf2: >= 1000) or time cost (argon2, >= 4)
	// instead of cryptsetup's benchmark; 0 means benchmark.
	Iterations int
	// MemoryKiB caps argon2 memory; 0 means cryptsetup's default.
	MemoryKiB int
}

// FastPBKDF is for slots holding a random key of >= 256 bits (the keyfile slot): stretching
// adds nothing to a key with that much entropy (cryptsetup(8) on --pbkdf-force-iterations;
// systemd-cryptenroll does the same for TPM2/FIDO2 slots), and it opens in 0.07 s instead of
// ~0.3 s and ~1 GiB of memory.
var FastPBKDF = PBKDF{Type: "pbkdf2", Iterations: 1000}

// pbkdfArgs renders p as flags.
func pbkdfArgs(p PBKDF) []string {
	t := p.Type
	if t == "" {
		t = "argon2id"
	}
	args := []string{"--pbkdf=" + t} // the KDF of the new slot
	if p.Iterations > 0 {
		// skip the benchmark and use exactly this cost
		args = append(args, "--pbkdf-force-iterations="+strconv.Itoa(p.Iterations))
	}
	if p.MemoryKiB > 0 && t != "pbkdf2" {
		args = append(args, "--pbkdf-memory="+strconv.Itoa(p.MemoryKiB)) // argon2 memory cost in KiB
	}
	return args
}

func isLuksArgs(device string) []string {
	return []string{
		"isLuks", // exit 0 if device has a LUKS header, 1 if not, 4 if it does not exist
		noTokens,
		"--", device,
	}
}

func uuidArgs(device string) []string {
	return []string{
		"luksUUID", // prints the header's UUID
		noTokens,
		"--", device,
	}
}

func dumpJSONArgs(device string) []string {
	return []string{
		"luksDump",
		"--dump-json-metadata", // LUKS2 only: the JSON metadata area (exit 1 on LUKS1)
		noTokens,
		"--", device,
	}
}

func dumpTextArgs(device string) []string {
	return []string{
		"luksDump", // human-readable dump; used for LUKS1 headers
		noTokens,
		"--", device,
	}
}

func slotArgs(slot int) []string {
	if slot < 0 {
		return nil
	}
	// try only this slot: a keyfile must not pay for the argon2 passphrase slot first
	return []string{"--key-slot=" + strconv.Itoa(slot)}
}

func testKeyArgs(device string, slot int) []string {
	args := []string{
		"open",
		"--test-passphrase", // check the key against the header only; needs no device-mapper
		"--type=luks",       // LUKS1 or LUKS2, never plain/loopaes/tcrypt
		"--key-file=-",      // the key is stdin, read to EOF, exact bytes
	}
	args = append(args, slotArgs(slot)...)
	return append(args, noTokens, "--", device)
}

func openArgs(device, name string, slot int, readOnly bool) []string {
	args := []string{
		"open",
		"--type=luks",  // LUKS1 or LUKS2, never plain/loopaes/tcrypt
		"--key-file=-", // the key is stdin, read to EOF, exact bytes
	}
	args = append(args, slotArgs(slot)...)
	if readOnly {
		args = append(args, "--readonly") // read-only mapping (browsing backups)
	}
	return append(args, noTokens, "--", device, name)
}

func closeArgs(name string, deferred bool) []string {
	args := []string{"close"} // remove the mapping; exit 4 if it is not active, 5 if in use
	if deferred {
		args = append(args, "--deferred") // remove it when its last user closes it (stick pulled)
	}
	return append(args, "--", name)
}

// removeStaleArgs are dmsetup's (not cryptsetup's): it removes a device-mapper device whatever
// its table, or with none, which cryptsetup close refuses (Cryptsetup.removeStale).
func removeStaleArgs(name string) []string {
	return []string{
		"remove", // exit 0 once removed; 1 if there is no such device or it is in use
		"--", name,
	}
}

func statusArgs(name string) []string {
	return []string{
		"status", // exit 0 if the mapping is active, 4 if not, 1 for a device-mapper device without a table
		"--", name,
	}
}

func formatArgs(device, label string, p PBKDF) []string {
	args := []string{
		"luksFormat",
		"--type=luks2", // LUKS2: argon2id, labels, JSON metadata
		"--batch-mode", // no "Are you sure? (Type 'yes')" prompt: the caller has confirmed
		"--key-file=-", // the passphrase is stdin, read to EOF, exact bytes
		"--key-slot=0", // the passphrase goes in slot 0
	}
	args = append(args, pbkdfArgs(p)...)
	if label != "" {
		args = append(args, "--label="+label) // LUKS2 label, shown by lsblk and file managers
	}
	return append(args, "--", device)
}

func addKeyArgs(device string, p PBKDF) []string {
	args := []string{
		"luksAddKey",
		"--key-file=-", // an existing key is stdin, read to EOF, exact bytes
	}
	args = append(args, pbkdfArgs(p)...)
	// the new key is read to EOF from the inherited pipe (never a file on disk)
	return append(args, noTokens, "--", device, fdNewKey)
}

func killSlotArgs(device string, slot int) []string {
	return []string{
		"luksKillSlot",
		"--key-file=-", // a key of another, remaining slot is stdin (cryptsetup checks it)
		noTokens,
		"--", device, strconv.Itoa(slot),
	}
}

// headerBackupArgs writes a backup of device's LUKS header (metadata and keyslot area) to file,
// which must not exist: cryptsetup creates it exclusively, mode 0400.
func headerBackupArgs(device, file string) []string {
	return []string{
		"luksHeaderBackup",
		"--batch-mode", // never prompt
		noTokens,
		"--header-backup-file=" + file, // the new file; HeaderBackup checked it is an absolute clean path
		"--", device,
	}
}
