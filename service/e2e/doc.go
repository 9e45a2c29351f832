// Package e2e is the VM test level: it builds a small Debian 12 guest image, installs
// plugvault's Debian package into it (make deb, dpkg -i), boots it under QEMU (TCG) and plugs and pulls virtual USB
// sticks through QMP, so that the daemon meets a real kernel, udev, systemd, dm-crypt and polkit.
// A guest agent (guestagent, protocol in agentproto) runs commands and D-Bus calls in the guest
// and reports udev and D-Bus events, so tests wait on events, never on sleeps.
//
// It is test support: it runs host tools (qemu, mmdebstrap, cryptsetup, mkfs) with os/exec and
// is never linked into a shipped binary. The tests run only with -run-vm-tests (make e2e); see
// README.md for the host requirements.
package e2e
