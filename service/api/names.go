package api

import (
	_ "embed"
	"strings"

	"github.com/godbus/dbus/v5"
)

// IntrospectXML is the contract, served by the daemon as its introspection data.
//
//go:embed org.plugvault.PlugVault1.xml
var IntrospectXML string

// Bus name, object paths and interfaces.
const (
	BusName          = "org.plugvault.PlugVault1"
	ManagerPath      = dbus.ObjectPath("/org/plugvault/PlugVault1/Manager")
	DrivesPathPrefix = "/org/plugvault/PlugVault1/drives/"
	ManagerInterface = BusName + ".Manager"
	DriveInterface   = BusName + ".Drive"
	JobsPathPrefix   = "/org/plugvault/PlugVault1/jobs/"
	JobInterface     = BusName + ".Job"
	ErrorPrefix      = BusName + ".Error."
)

// Manager members.
const (
	MethodListDrives   = "ListDrives"
	MethodEnroll       = "Enroll"
	MethodAdopt        = "Adopt"
	MethodForget       = "Forget"
	MethodSealKeys     = "SealKeys"
	SignalDriveAdded   = "DriveAdded"
	SignalDriveRemoved = "DriveRemoved"

	PropVersion      = "Version"
	PropDrives       = "Drives"
	PropReminderDays = "ReminderDays"
)

// Drive members.
const (
	MethodUnlock          = "Unlock"
	MethodCheckPassphrase = "CheckPassphrase"
	MethodBackupNow       = "BackupNow"
	MethodCancel          = "Cancel"
	MethodEject           = "Eject"
	MethodListSnapshots   = "ListSnapshots"
	MethodBrowse          = "Browse"
	MethodRestore         = "Restore"
	MethodVerify          = "Verify"

	PropName          = "Name"
	PropLuksUUID      = "LuksUUID"
	PropLabel         = "Label"
	PropVendor        = "Vendor"
	PropModel         = "Model"
	PropSerial        = "Serial"
	PropPresent       = "Present"
	PropState         = "State"
	PropStateReason   = "StateReason"
	PropFailedIn      = "FailedIn"
	PropProgress      = "Progress"
	PropFilesDone     = "FilesDone"
	PropFilesTotal    = "FilesTotal"
	PropBytesDone     = "BytesDone"
	PropBytesTotal    = "BytesTotal"
	PropRate          = "Rate"
	PropEtaSeconds    = "EtaSeconds"
	PropLastBackup    = "LastBackup"
	PropLastResult    = "LastResult"
	PropSnapshotCount = "SnapshotCount"
)

// Job members. Progress, BytesDone, BytesTotal and Rate are named as on the Drive; the Job's
// Cancel is MethodCancel.
const (
	PropOperation       = "Operation"
	PropDrive           = "Drive"
	PropExpectedEndTime = "ExpectedEndTime"
	PropStartedByUID    = "StartedByUID"
	PropCancelable      = "Cancelable"
	SignalCompleted     = "Completed"
)

// Operations of a Job (its Operation property).
const (
	OperationRestore = "restore"
	OperationVerify  = "verify"
)

// Options understood by the methods (the a{sv} argument).
const (
	OptNoUserInteraction  = "auth.no_user_interaction" // b, every method
	OptPowerOff           = "power_off"                // b, Eject
	OptOverwrite          = "overwrite"                // b, Restore
	OptName               = "name"                     // s, Enroll, Adopt
	OptLabel              = "label"                    // s, Enroll
	OptFilesystem         = "filesystem"               // s, Enroll
	OptHeaderBackup       = "header_backup"            // b, Enroll
	OptSecretIsPassphrase = "secret_is_passphrase"     // b, Adopt
	OptAddKeyfileSlot     = "add_keyfile_slot"         // b, Adopt
	OptRemoveKeyslot      = "remove_keyslot"           // b, Forget
)

// Polkit action IDs, one per user-visible verb (polkit/org.plugvault.policy).
const (
	ActionBackup    = "org.plugvault.backup"
	ActionEject     = "org.plugvault.eject"
	ActionUnlock    = "org.plugvault.unlock"
	ActionBrowse    = "org.plugvault.browse"
	ActionRestore   = "org.plugvault.restore"
	ActionEnroll    = "org.plugvault.enroll"
	ActionConfigure = "org.plugvault.configure"
	ActionForget    = "org.plugvault.forget"
	// ActionManageOtherUsersDrive is checked in addition to a method's own action when the
	// caller is not the drive's run_as user (see OtherUserActions).
	ActionManageOtherUsersDrive = "org.plugvault.manage-other-users-drive"
)

// MethodActions maps every authorized method (interface.member) to its polkit action. Methods
// that are absent here (ListDrives, ListSnapshots) need no authorization.
var MethodActions = map[string]string{
	ManagerInterface + "." + MethodEnroll:   ActionEnroll,
	ManagerInterface + "." + MethodAdopt:    ActionConfigure,
	ManagerInterface + "." + MethodForget:   ActionForget,
	ManagerInterface + "." + MethodSealKeys: ActionConfigure,
	DriveInterface + "." + MethodUnlock:     ActionUnlock,
	// Checking a passphrase asks the same of the caller as unlocking with it: a person at
	// the machine who knows (or guesses) the drive's passphrase. Its answer says no more than
	// an Unlock's, and it is rate-limited the same way.
	DriveInterface + "." + MethodCheckPassphrase: ActionUnlock,
	DriveInterface + "." + MethodBackupNow:       ActionBackup,
	DriveInterface + "." + MethodCancel:          ActionBackup,
	DriveInterface + "." + MethodEject:           ActionEject,
	DriveInterface + "." + MethodBrowse:          ActionBrowse,
	DriveInterface + "." + MethodRestore:         ActionRestore,
	DriveInterface + "." + MethodVerify:          ActionBrowse,
}

// OtherUserActions maps the Drive methods that reach a drive's backups or its user's running
// backup to the second action they need when the caller is not the drive's run_as user (root
// passes it: polkit authorizes root): browsing, restoring and verifying read another user's
// files, cancelling or ejecting stops their backup or takes their open drive away, and checking
// a passphrase would let anyone at the machine guess another user's passphrase whenever the
// stick is plugged in (an Unlock can only answer while the drive asks for it).
var OtherUserActions = map[string]string{
	DriveInterface + "." + MethodCheckPassphrase: ActionManageOtherUsersDrive,
	DriveInterface + "." + MethodBrowse:          ActionManageOtherUsersDrive,
	DriveInterface + "." + MethodRestore:         ActionManageOtherUsersDrive,
	DriveInterface + "." + MethodVerify:          ActionManageOtherUsersDrive,
	DriveInterface + "." + MethodCancel:          ActionManageOtherUsersDrive,
	DriveInterface + "." + MethodEject:           ActionManageOtherUsersDrive,
}

// DrivePath returns the object path of the drive with the given LUKS UUID: every byte that is
// not an ASCII letter or digit becomes "_", as D-Bus path elements require.
func DrivePath(luksUUID string) dbus.ObjectPath {
	var b strings.Builder
	b.WriteString(DrivesPathPrefix)
	for i := 0; i < len(luksUUID); i++ {
		c := luksUUID[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			b.WriteByte(c)
		} else {
			b.WriteByte('_')
		}
	}
	return dbus.ObjectPath(b.String())
}
