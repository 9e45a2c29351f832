// Package luks drives LUKS volumes through the cryptsetup command-line tool (run by
// sysexec.Runner; plugvault has no cgo binding to libcryptsetup).
//
// Rules every method follows:
//   - The tool's absolute path is resolved once (New), and its version detected once.
//   - Keys go only on stdin (--key-file=-, the exact bytes: cryptsetup reads to EOF, so a
//     trailing newline is part of the key) or, for a second key, on an inherited pipe (fd 3,
//     named /dev/fd/3). Never in argv, the environment or a log line.
//   - Device paths are validated (absolute, canonical, under /dev, a block device, not a
//     symlink); a LUKS UUID passes CheckUUID and a mapping name is one MappingName made.
//   - Positional arguments follow "--", so no value is ever parsed as an option.
//   - --disable-external-tokens on every command that reads a header: the stick is untrusted
//     media, and a LUKS2 token could otherwise make cryptsetup load a token plugin.
//   - The exit status is mapped, never the text (cryptsetup(8), "RETURN CODES"):
//     0 success; 1 wrong parameters or not a LUKS device; 2 no permission / bad passphrase
//     (ErrBadKey); 3 out of memory; 4 wrong device specified / mapping not active
//     (ErrNoDevice); 5 device already exists or is busy (ErrBusy).
//
// Argv is built by pure functions (args.go) that comment every flag and are table-tested.
package luks
