// Package keyseal seals drive keys at rest with systemd-creds(1), so that a copy of
// /etc/plugvault/keys (a backup of /etc, a stolen config) does not open anyone's backup stick.
//
// A sealed keyfile is Header followed by the credential systemd-creds encrypt prints (Base64):
// the key encrypted with the machine's host key (/var/lib/systemd/credential.secret, created on
// first use) and, where a TPM2 is present, bound to that TPM as well (--with-key=auto). With
// the host key alone, a copy of the whole root disk still carries the host key; only the TPM2
// binding keeps a disk image from unlocking the sticks. A key larger than MaxCredKeySize (the
// classic tutorial's 1 MiB keyfile, kept by adopt --keep-slot) is sealed in an envelope
// (EnvelopeHeader): the credential holds a random data key, and the key follows encrypted with
// it under AES-256-GCM. A keyfile without either header is a plain key and keeps working.
package keyseal
