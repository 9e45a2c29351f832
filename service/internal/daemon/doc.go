// Package daemon exports plugvaultd's objects on the bus: the Manager and one Drive per enrolled
// drive. Every method that changes anything follows one pattern: authorize with polkit (subject:
// the caller's unique bus name), then validate the arguments, then delegate to a Backend or an
// Enroller. Properties are read-only and published through Publisher; every change is a
// PropertiesChanged signal.
package daemon
