// Package ui is plugvault-tray's front end: a fyne.io/systray StatusNotifierItem (icon,
// tooltip, menu) and fyne windows (the passphrase dialog, the log, About, the monthly restore
// check and the quarterly passphrase check, Set up a new drive, and one Restore window per drive), driven by the pure reducer in
// tray/internal/model. The Restore and setup windows keep their own state and call the client
// themselves: they read the drive's snapshots through the read-only Browse mount and the USB
// disks through sysfs and the udev database, with the user's own permissions.
//
// One controller goroutine owns the model. Everything that happens becomes a model.Event on
// one channel: the service's state and its changes from api.Client.WatchDrives (the CLI's
// status --watch follows the same helper), menu clicks, dialog buttons, the end of method
// calls and the one timer the model asks for. The controller carries out the actions the model returns: systray calls
// directly (they are goroutine-safe), window work through fyne.Do, method calls and
// notifications on their own goroutines so the UI never waits for the bus.
//
// The tray follows the service across restarts (EventServiceUp/Down) and reconnects to the
// system bus with backoff when the connection itself drops. It never polls. When the session
// bus goes away (where its item, menu and notifications live) Run returns ErrSessionLost and
// the tray's main waits with AwaitSessionBus and starts the tray afresh. Calls allow
// interactive authorization so that polkit's agent can ask the user. Windows are hidden,
// never closed (fyne quits when its last window is destroyed).
package ui
