// Package keyseal seals drive keys at rest with systemd-creds(1), so that a copy of
// /etc/plugvault/keys (a backup of /etc, a stolen config) does not open anyone's backup stick.
//
// A sealed keyfile is Header followed by the credential systemd-creds encrypt prints (Base64):
// the key encrypted with the machine's host key (/var/lib/systemd/credential.secret, created on
// first use) and, where a TPM2 is present, bound to that TPM as well (--with-key=auto). With
// the host key alone, a copy of the whole root disk still carries the host key; only the TPM2
// binding keeps a disk image from unlocking the sticks. A keyfile without Header is a plain
// key and keeps working.
package keyseal
