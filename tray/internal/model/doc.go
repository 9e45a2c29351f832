// Package model is the tray's logic as a pure reducer: the tray feeds it events (what the
// service announced, what the user clicked, how a call ended, that a timer fired) and it answers
// with actions (set the icon, the tooltip and the menu, show a notification, open or update the
// passphrase dialog, call a method, open a folder, show the log, arm the next timer).
//
// It imports no GUI toolkit and does no I/O: the caller passes the current time with every
// event, so the tests drive it directly and exhaustively (every api.State against every event).
//
// Choices documented here because the issue leaves them open:
//
//   - Show log opens a tray window with the drive's recent events as this tray saw them
//     (state changes with their reasons, notifications, failed calls). It needs no privilege,
//     unlike `journalctl -u plugvaultd` (system unit logs are readable only by the adm and
//     systemd-journal groups) and it needs no terminal emulator. The window names the journalctl
//     command for the full service log.
//   - A reminder ("No backup to DRIVE for N days") is sent once per drive and last-backup time
//     per tray session (so at least once per login) when the drive becomes overdue
//     (api.OverdueAt: never for a drive that has never been backed up), and never while the
//     drive is being backed up.
//   - Menu items that cannot apply in a drive's state are left out, not greyed.
//   - The monthly "check that you can restore" prompt comes when a drive with backups is
//     plugged in and idle, once per 30 days; the first sight of a drive starts its clock. The
//     times are loaded from and saved by the tray (RestoreChecksLoaded, SaveRestoreChecks).
//   - The quarterly "do you still know your passphrase?" prompt comes when a drive is plugged
//     in and idle, once per 90 days; accepting opens the passphrase dialog in check mode, whose
//     passphrase the tray sends to CheckPassphrase (nothing is unlocked). Later, giving up or
//     not answering asks again a week later. The due times are loaded from and saved by the
//     tray (PassChecksLoaded, SavePassChecks).
//   - The next wake-up (a reminder falling due, or a relative time such as "2 hours ago" in a
//     label changing) is one timer, re-armed after every event: the tray never polls.
package model
