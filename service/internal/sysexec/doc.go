// Package sysexec is the only package of plugvault that runs other programs (os/exec). Every run
// has an absolute tool path resolved once, a fixed minimal environment, its own process group that
// is killed as a whole on cancellation, a bounded output buffer, and secrets only on stdin or on
// inherited file descriptors — never in argv or the environment.
//
// The Runner interface is what the luks, mount and other packages depend on, so their tests can
// record argv with a fake instead of running anything.
package sysexec
