// Package api is the D-Bus contract of plugvaultd: the embedded introspection XML (the source of
// truth), the Go names of its interfaces, members, properties, errors and polkit actions, the wire
// types, the one table that maps D-Bus error names to Go errors, and the typed client that the CLI
// and the tray use.
//
// It imports only the standard library and godbus, never service/internal, so that unprivileged
// programs can link it.
package api
