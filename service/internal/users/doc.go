// Package users resolves user names, uids and group lists through NSS by running getent(1)
// (service/internal/sysexec). plugvaultd is built with CGO_ENABLED=0, so the standard library's
// os/user reads only /etc/passwd and /etc/group: users from LDAP, SSSD or systemd-homed would
// be unknown to it. getent asks the C library, which follows /etc/nsswitch.conf.
//
// Only names and ids go on getent's command line; a name is checked first (no leading "-", no
// ":", no whitespace or control characters), and an answer whose name or uid is not the one
// asked for is treated as unknown (getent passwd 1000 would look up a uid).
package users
