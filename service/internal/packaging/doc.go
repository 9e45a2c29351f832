// Package packaging holds no code, only tests: the proof that what `make install` ships works
// as a whole and that the module keeps its layering rules.
//
//   - The D-Bus policy, the introspection XML and the polkit policy are valid against the DTDs
//     Debian ships (xmllint --dtdvalid).
//   - A real dbus-daemon with the stock system-bus defaults plus our policy lets root own
//     org.plugvault.PlugVault1 and lets an unprivileged user (uid 65534) call it but not own
//     it; without our policy neither works, so the test proves what our file adds.
//   - The systemd unit is Type=notify with BusName, has a watchdog and a file-descriptor
//     limit, and sets nothing that gives the daemon a private mount namespace (its mounts
//     must be visible to users); systemd-analyze verify accepts it.
//   - The dependency rules: the CLI and the tray never link service/internal/..., and only
//     service/internal/sysexec and test support import os/exec.
package packaging
