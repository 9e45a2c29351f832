// Command plugvault is the command-line client of plugvaultd: status, list, backup, cancel,
// eject, unlock, check-passphrase, snapshots, browse, restore, verify, log, enroll, adopt and forget. It is a thin,
// unprivileged client of the D-Bus contract in service/api; every privileged decision is
// plugvaultd's (polkit). It imports service/api, godbus (the contract's own types) and
// golang.org/x/sys/unix (terminal echo) besides the standard library, and never service/internal
// (deps_test.go enforces it).
//
// # Interaction
//
// Polkit may ask for a password only when stdin is a terminal (and --non-interactive is not
// given); otherwise every call carries auth.no_user_interaction and an authorization that needs
// a password fails with exit code 3. Calls that may show a polkit dialog wait up to 15 minutes;
// long operations (eject, browse, restore, verify, enroll, adopt, forget) are bounded only by
// Ctrl-C.
//
// Passphrases are read from the terminal with echo off (echo is switched off before the prompt
// appears), or with --passphrase-stdin from stdin up to end of file, removing exactly one
// trailing "\n" (so `echo pass |` and `printf pass |` give the same passphrase; a "\r" or a
// second newline stays part of it). Keyfiles (adopt --key-file) are sent byte-exact.
//
// # log
//
// plugvault never starts other programs: only service/internal/sysexec may import os/exec, and
// the CLI may not import service/internal. `plugvault log` therefore prints the journalctl
// command line (shell-quoted; --json gives argv) instead of running it.
//
// # Exit codes and JSON
//
// The exit codes are listed by `plugvault help exit-codes` (exitCodesHelp) and mapped in one
// switch (exitCode). The --json shapes are listed by `plugvault help json` (jsonHelp); they only
// ever gain fields.
package main
