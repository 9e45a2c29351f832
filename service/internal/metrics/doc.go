// Package metrics reports every backup run to the machine's monitoring: a Prometheus
// textfile-collector file (node_exporter's --collector.textfile.directory), rewritten
// atomically after every run, and journal entries with a MESSAGE_ID from the catalog
// service/systemd/plugvault.catalog (journalctl --catalog), so that a fleet is watched from its
// monitoring rather than from a tray.
//
// It needs no hook in the state machine: Collector wraps the drive.Publisher the drive
// manager publishes complete statuses to (a run ends when a drive reaches safe-to-remove or
// failed) and the drive.Engine it runs (bytes, duration, and free space while the target is
// still mounted).
package metrics
