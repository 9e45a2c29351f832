package main

import (
	"context"
	"runtime/debug"
)

const exitCodesHelp = `Exit codes of plugvault (stable; scripts may rely on them):

  0    success
  1    the operation failed (the message says why); verify found problems; a backup
       waited for with --wait failed or was interrupted
  2    usage: bad command line, unknown or ambiguous DRIVE argument, invalid argument
  3    not authorized (polkit said no, authentication was needed but not possible, or the
       authentication dialog was dismissed)
  4    busy: the drive is doing something that this command would disturb
  5    the drive is not plugged in
  6    the passphrase or keyfile does not unlock the drive
  7    not found: no such drive, snapshot or path
  8    plugvaultd is not running or the system bus cannot be reached
  130  cancelled: Ctrl-C, the operation was cancelled, or a confirmation was declined
`

const jsonHelp = `With --json, plugvault prints one JSON document on stdout (status --watch: one per line).
The shapes are stable: fields are only ever added. Times are RFC 3339 in UTC.

status, list:
  {"version": "0.1.0", "reminder_days": 7, "drives": [DRIVE, ...]}
DRIVE:
  {"path": "/org/plugvault/PlugVault1/drives/…", "name": "blue", "luks_uuid": "…",
   "label": "", "vendor": "", "model": "", "serial": "", "present": true,
   "state": "backing-up", "state_reason": "", "running": true, "progress": 0.42,
   "files_done": 1, "files_total": 2, "bytes_done": 3, "bytes_total": 4,
   "rate": 1048576.0, "eta_seconds": 200 (-1 unknown),
   "last_backup": "2026-11-26T08:31:00Z" or null, "last_backup_age_seconds": 3600 or null,
   "last_result": "success"|"failed"|"cancelled"|"interrupted"|"",
   "snapshot_count": 14, "overdue": false}
  overdue: the last complete backup is reminder_days or more days old (never with
  reminder_days 0; a drive that was never backed up is not overdue).
status --watch (JSON lines):
  {"event": "service-up"|"service-down"|"drive-changed"|"drive-added"|"drive-removed",
   "path": "…" (drive events), "drive": DRIVE (drive-changed, drive-added)}
check-passphrase: {"drive": "PATH", "correct": true} (a wrong passphrase is an error, exit 6)
backup, cancel, eject, unlock, forget:
  {"drive": "PATH", "action": "backup"}
backup --wait:
  {"drive": "PATH", "action": "backup", "result": "success", "state": "safe-to-remove"}
snapshots:
  {"drive": "PATH", "snapshots": [{"name": "20261126T083100Z", "created": "2026-11-26T08:31:00Z",
   "created_unix": 1795681860, "files": 10, "bytes": 20, "status": "complete"|"partial",
   "changed": 3|null}]}   (changed: files added, changed or removed since the snapshot before;
                           null when the snapshot did not record it)
browse:   {"drive": "PATH", "path": "/run/plugvault/…"}
restore:  {"drive": "PATH", "snapshot": "…", "path": "home/me" ("" = everything), "destination": "/abs"}
verify:   {"drive": "PATH", "snapshot": "" (newest), "checked": 100, "problems": ["…"]}
enroll, adopt: {"drive": "PATH"}
keys seal: {"sealed": ["/etc/plugvault/keys/….key", ...]}
log:      {"argv": ["journalctl", "--unit=plugvaultd.service", …]}
version:  {"cli": "…", "daemon": "…" ("" if not reachable)}
errors (on stderr, stdout stays empty):
  {"error": {"message": "cannot …", "kind": "busy", "exit_code": 4}}
  kind is one of usage, not-authorized, busy, not-present, bad-passphrase, not-found,
  no-service, cancelled, failed (see 'plugvault help exit-codes').
`

const driveHelp = `DRIVE names an enrolled drive, tried in this order:
  - an object path (starts with "/"): /org/plugvault/PlugVault1/drives/…
  - the drive's name, exactly
  - its LUKS UUID, exactly (case does not matter)
  - a unique prefix of its LUKS UUID
Left out, it means the only enrolled drive; with several drives, name one.
`

// cliVersion is the module version the binary was built from.
func cliVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

func runCompletion(_ context.Context, a *app, args []string) error {
	if len(args) != 1 || args[0] != "bash" {
		return usagef("completion supports: bash")
	}
	a.printf("%s", bashCompletion)
	return nil
}

// bashCompletion completes verbs, flags, drive names (plugvault __drives, which needs no
// authorization), devices and files.
const bashCompletion = `# bash completion for plugvault; load with: source <(plugvault completion bash)
_plugvault() {
    local cur prev verb i
    COMPREPLY=()
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev="${COMP_WORDS[COMP_CWORD-1]}"
    verb=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${COMP_WORDS[i]}" in
            -*) ;;
            *) verb="${COMP_WORDS[i]}"; break ;;
        esac
    done
    local common="--json --non-interactive --help"
    if [[ -z "$verb" ]]; then
        COMPREPLY=($(compgen -W "status list backup cancel eject unlock check-passphrase snapshots browse restore verify log enroll adopt forget keys completion version help $common" -- "$cur"))
        return
    fi
    case "$prev" in
        --drive|-d)
            COMPREPLY=($(compgen -W "$(plugvault __drives 2>/dev/null)" -- "$cur")); return ;;
        --key-file|--header-backup)
            COMPREPLY=($(compgen -f -- "$cur")); return ;;
        --filesystem)
            COMPREPLY=($(compgen -W "btrfs ext4" -- "$cur")); return ;;
        --name|--label|--since|--lines|-n)
            return ;;
    esac
    local flags="$common"
    case "$verb" in
        status) flags+=" --watch --drive" ;;
        backup) flags+=" --wait --drive" ;;
        cancel|snapshots|browse|verify) flags+=" --drive" ;;
        eject) flags+=" --no-power-off --drive" ;;
        unlock|check-passphrase) flags+=" --passphrase-stdin --drive" ;;
        restore) flags+=" --overwrite --drive" ;;
        log) flags+=" --follow --since --lines" ;;
        enroll) flags+=" --name --label --filesystem --header-backup --yes --passphrase-stdin" ;;
        adopt) flags+=" --name --key-file --passphrase --passphrase-stdin --add-keyfile-slot --keep-slot" ;;
        forget) flags+=" --remove-keyslot --yes --drive" ;;
        completion) COMPREPLY=($(compgen -W "bash" -- "$cur")); return ;;
        keys) COMPREPLY=($(compgen -W "seal" -- "$cur")); return ;;
        help) COMPREPLY=($(compgen -W "status list backup cancel eject unlock check-passphrase snapshots browse restore verify log enroll adopt forget keys completion version exit-codes json drive" -- "$cur")); return ;;
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$flags" -- "$cur"))
        return
    fi
    case "$verb" in
        enroll|adopt)
            COMPREPLY=($(compgen -W "$(ls -d /dev/sd? /dev/sd?[0-9]* 2>/dev/null)" -- "$cur")) ;;
        restore)
            COMPREPLY=($(compgen -f -- "$cur")) ;;
        status|backup|cancel|eject|unlock|check-passphrase|snapshots|browse|log|forget)
            COMPREPLY=($(compgen -W "$(plugvault __drives 2>/dev/null)" -- "$cur")) ;;
    esac
}
complete -F _plugvault plugvault
`
