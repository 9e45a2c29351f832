package model

import (
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
)

// Event is something that happened: a bus event (already enriched with the state the tray read),
// a user action, the end of a call, or the timer. The tray feeds every event to Model.Update.
type Event interface{ isEvent() }

// ServiceUp says the service runs and carries its whole state, read afresh.
type ServiceUp struct {
	Drives       []api.DriveEntry
	ReminderDays uint32
	Version      string // plugvaultd's version, for About
}

// ServiceDown says the service stopped (or the bus connection dropped).
type ServiceDown struct{}

// DriveChanged carries a drive's whole status after a change.
type DriveChanged struct {
	Path   dbus.ObjectPath
	Status api.DriveStatus
}

// DriveAdded says a drive was enrolled; Status is what the tray read.
type DriveAdded struct {
	Path   dbus.ObjectPath
	Status api.DriveStatus
}

// DriveRemoved says a drive was forgotten.
type DriveRemoved struct{ Path dbus.ObjectPath }

// ManagerChanged carries the Manager's ReminderDays after a change.
type ManagerChanged struct{ ReminderDays uint32 }

// TimerFired says the time asked for by the last SetTimer has come.
type TimerFired struct{}

// MenuClicked says the user clicked a menu item.
type MenuClicked struct{ Key MenuKey }

// DialogSubmitted says the user pressed Unlock in the passphrase dialog of Drive; the tray
// calls Unlock itself (the passphrase never enters the model) and reports UnlockDone.
type DialogSubmitted struct{ Drive dbus.ObjectPath }

// DialogCancelled says the user cancelled (or closed) the passphrase dialog of Drive.
type DialogCancelled struct{ Drive dbus.ObjectPath }

// UnlockDone is the outcome of an Unlock call.
type UnlockDone struct {
	Drive dbus.ObjectPath
	Err   error
}

// CallDone is the outcome of a Call action. Dir is Browse's result.
type CallDone struct {
	Drive  dbus.ObjectPath
	Method string
	Dir    string
	Err    error
}

// RestoreChecksLoaded carries when the user was last asked to check a restore from each drive
// (by LUKS UUID), as the tray saved it; until it arrives no such prompt is made.
type RestoreChecksLoaded struct{ Checked map[string]time.Time }

// LogClosed says the user closed the log window.
type LogClosed struct{}

func (ServiceUp) isEvent()           {}
func (ServiceDown) isEvent()         {}
func (DriveChanged) isEvent()        {}
func (DriveAdded) isEvent()          {}
func (DriveRemoved) isEvent()        {}
func (ManagerChanged) isEvent()      {}
func (TimerFired) isEvent()          {}
func (MenuClicked) isEvent()         {}
func (DialogSubmitted) isEvent()     {}
func (DialogCancelled) isEvent()     {}
func (UnlockDone) isEvent()          {}
func (CallDone) isEvent()            {}
func (LogClosed) isEvent()           {}
func (RestoreChecksLoaded) isEvent() {}

// Action is something the tray must do.
type Action interface{ isAction() }

// Icon is one of the tray's icon states.
type Icon int

// The icon states, each drawn in tray/internal/icons.
const (
	IconIdle      Icon = iota // nothing going on
	IconWorking               // a run is going on (Step shows the progress)
	IconAttention             // a passphrase is needed or a backup failed
	IconSafe                  // a drive is safe to remove
	IconOffline               // the service is not running
)

// Icons lists every icon state.
var Icons = []Icon{IconIdle, IconWorking, IconAttention, IconSafe, IconOffline}

// Name is the icon's file name without extension, as installed in the hicolor theme.
func (i Icon) Name() string {
	switch i {
	case IconWorking:
		return "plugvault-working"
	case IconAttention:
		return "plugvault-attention"
	case IconSafe:
		return "plugvault-safe"
	case IconOffline:
		return "plugvault-offline"
	}
	return "plugvault-idle"
}

// ProgressSteps is how many progress steps the working icon shows (Step 0…ProgressSteps).
const ProgressSteps = 8

// SetIcon sets the tray icon. Step is the progress shown by IconWorking, 0…ProgressSteps, or
// -1 when there is no progress to show.
type SetIcon struct {
	Icon Icon
	Step int
}

// SetTooltip sets the tray's tooltip.
type SetTooltip struct{ Text string }

// ItemKind says what a menu item does.
type ItemKind int

// The menu items. Per-drive items carry the drive's path in their MenuKey.
const (
	ItemStatus        ItemKind = iota + 1 // the drive's status line (informational)
	ItemUnlock                            // Enter passphrase…
	ItemBackupNow                         // Back up now
	ItemCancel                            // Cancel backup
	ItemEject                             // Eject
	ItemBrowse                            // Browse backups
	ItemShowLog                           // Show log
	ItemSeparator                         // a separator after a drive's section
	ItemService                           // the line shown when the service is down or there are no drives
	ItemQuit                              // Quit
	ItemHeadSeparator                     // the separator under a drive's status line
	ItemAbout                             // About Plugvault
	ItemRestore                           // Restore files…
	ItemSetup                             // Set up a new drive…
)

// MenuKey identifies a menu item across updates.
type MenuKey struct {
	Drive dbus.ObjectPath
	Kind  ItemKind
}

// MenuItem is one line of the menu.
type MenuItem struct {
	Key     MenuKey
	Label   string
	Enabled bool
}

// Separator reports whether the item is a separator.
func (m MenuItem) Separator() bool {
	return m.Key.Kind == ItemSeparator || m.Key.Kind == ItemHeadSeparator
}

// SetMenu replaces the menu (the tray keeps items with the same keys and updates them).
type SetMenu struct{ Items []MenuItem }

// Notify shows a desktop notification. Tag groups notifications that replace each other (one
// per drive).
type Notify struct {
	Tag      string
	Summary  string
	Body     string
	Urgent   bool
	IconName string
}

// ShowDialog opens (or updates) the passphrase dialog for Drive.
type ShowDialog struct {
	Drive   dbus.ObjectPath
	Title   string   // window title
	Heading string   // "Blue stick needs its passphrase"
	Details []string // label, model, serial, UUID start
	Message string   // inline message, e.g. "Wrong passphrase, try again"
	Busy    bool     // an Unlock call is going on: the buttons are disabled
	Check   bool     // check mode: the passphrase goes to CheckPassphrase, nothing is unlocked
	Done    bool     // check mode: the right passphrase was typed; the entry and Submit are hidden
	Submit  string   // the label of the button that sends the passphrase ("Unlock", "Check")
	Dismiss string   // the label of the button that closes the dialog ("Cancel", "Give up", "Close")
}

// HideDialog hides the passphrase dialog.
type HideDialog struct{}

// Call calls Method (api.MethodBackupNow, MethodCancel, MethodEject, MethodBrowse) on Drive;
// the tray reports CallDone.
type Call struct {
	Drive  dbus.ObjectPath
	Method string
}

// OpenFolder opens Path in the file manager.
type OpenFolder struct{ Path string }

// ShowLog opens (or updates) the log window with a drive's recent events.
type ShowLog struct {
	Drive dbus.ObjectPath
	Title string
	Lines []string
}

// OpenRestore opens (or raises) the Restore window of Drive. The window works on its own
// through the client: it lists the snapshots, opens the drive read-only (Browse) to show their
// files, and restores with the caller's credentials (Restore).
type OpenRestore struct {
	Drive dbus.ObjectPath
	Title string // window title
	Name  string // the drive's name
}

// PromptRestoreCheck asks the user to check that they can get a file back from Drive; its
// button opens the Restore window (MenuClicked of the drive's ItemRestore).
type PromptRestoreCheck struct {
	Drive dbus.ObjectPath
	Title string
	Text  string
}

// SaveRestoreChecks asks the tray to keep when each drive's restore check was last prompted.
type SaveRestoreChecks struct{ Checked map[string]time.Time }

// OpenSetup opens the "Set up a new drive" window.
type OpenSetup struct{ Title string }

// ShowAbout opens the About window.
type ShowAbout struct {
	Title string
	Lines []string
}

// SetTimer asks for a TimerFired at At; a zero At cancels the timer.
type SetTimer struct{ At time.Time }

// Quit ends the tray.
type Quit struct{}

func (SetIcon) isAction()            {}
func (SetTooltip) isAction()         {}
func (SetMenu) isAction()            {}
func (Notify) isAction()             {}
func (ShowDialog) isAction()         {}
func (HideDialog) isAction()         {}
func (Call) isAction()               {}
func (OpenFolder) isAction()         {}
func (ShowLog) isAction()            {}
func (ShowAbout) isAction()          {}
func (OpenSetup) isAction()          {}
func (OpenRestore) isAction()        {}
func (PromptRestoreCheck) isAction() {}
func (SaveRestoreChecks) isAction()  {}
func (SetTimer) isAction()           {}
func (Quit) isAction()               {}
