// Package buildinfo holds the version stamped in at build time (make sets it with -ldflags).
package buildinfo

// Version is plugvault's version; "0.1.0-dev" when built without make.
var Version = "0.1.0-dev"
