package backup

import (
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/plugvault/plugvault/service/internal/config"
)

// Job is everything the engine needs for one backup. It is JSON-encoded on the engine child's
// stdin.
type Job struct {
	Sources  []string `json:"sources"`
	Excludes []string `json:"excludes,omitempty"`
	// NoDefaultExcludes turns DefaultExcludes off.
	NoDefaultExcludes bool `json:"no_default_excludes,omitempty"`
	// Target is the directory on the drive that holds plugvault/ (the mount point).
	Target string `json:"target"`
	Host   string `json:"host"`
	// FSType of the target: "btrfs", "ext4" or "xfs".
	FSType string `json:"fstype"`
	// Dev is the device number of the mapping; the guard checks that Target is still the root
	// of a mount of it before each batch of writes (0: no check, for tests).
	Dev       uint64           `json:"dev,omitempty"`
	Retention config.Retention `json:"retention"`
	// NoHash skips content hashes (Verify then compares sizes and times only).
	NoHash bool `json:"no_hash,omitempty"`
	// Workers is the number of parallel directory readers of the walk (0: 4).
	Workers int `json:"workers,omitempty"`
	// CopyWorkers is the number of parallel copiers (0: Workers).
	CopyWorkers int `json:"copy_workers,omitempty"`
	// SpaceChecked skips the engine's room check before copying (the daemon sets it once it
	// has thinned snapshots for the run; from then on only a failed write asks for room).
	SpaceChecked bool `json:"space_checked,omitempty"`
}

// Result is what a finished run reports.
type Result struct {
	Snapshot string   `json:"snapshot"` // its name, e.g. 20261126T083100Z
	Files    uint64   `json:"files"`    // entries in the snapshot
	Bytes    uint64   `json:"bytes"`    // bytes of the regular files in it
	Warnings []string `json:"warnings,omitempty"`
	// Dropped counts the complete snapshots deleted for space, oldest first, that the
	// retention policy would have kept: to make room for this run, or to keep the free-space
	// floor after it. The privileged side sets it (the engine child deletes nothing).
	Dropped int `json:"dropped,omitempty"`
}

// Progress is reported a few times a second at most.
type Progress struct {
	Phase      string        `json:"phase"` // "scanning", "copying", "finishing", "pruning"; "restoring", "verifying"
	FilesDone  uint64        `json:"files_done"`
	FilesTotal uint64        `json:"files_total"`
	BytesDone  uint64        `json:"bytes_done"`
	BytesTotal uint64        `json:"bytes_total"`
	Rate       float64       `json:"rate"` // bytes per second
	ETA        time.Duration `json:"eta"`  // < 0: unknown
}

// Stats are stored with each snapshot (.plugvault/stats.json) and used for the next run's ETA.
type Stats struct {
	Started      time.Time `json:"started"`
	Finished     time.Time `json:"finished"`
	ScanSeconds  float64   `json:"scan_seconds"`
	CopySeconds  float64   `json:"copy_seconds"`
	Entries      uint64    `json:"entries"`       // entries in the snapshot
	Bytes        uint64    `json:"bytes"`         // bytes of regular files in the snapshot
	Written      uint64    `json:"written"`       // entries the plan wrote (copied, linked or created; not the previous snapshot's links made beside the walk)
	BytesWritten uint64    `json:"bytes_written"` // bytes copied
	Removed      uint64    `json:"removed"`       // entries removed from the working tree
	Resumed      bool      `json:"resumed"`       // continued an interrupted run
	// Changed counts the entries other than directories added, changed or removed since the
	// previous snapshot (all of them when there is none); nil when the run had no whole base
	// to compare with (it resumed an interrupted run, or the working tree had no manifest).
	Changed *uint64 `json:"changed,omitempty"`
	FSType  string  `json:"fstype"`
	// MaxRSSKiB is the peak resident memory of the process that ran the engine (the engine
	// child, when spawned), in KiB.
	MaxRSSKiB uint64 `json:"max_rss_kib,omitempty"`
}

// Phases of Progress.
const (
	PhaseScanning  = "scanning"
	PhaseCopying   = "copying"
	PhaseFinishing = "finishing"
	// PhasePruning is the daemon deleting old snapshots: to make room for a run that does not
	// fit, or by retention after a run.
	PhasePruning = "pruning"
	// PhaseRestoring and PhaseVerifying report only bytes (engine child to daemon).
	PhaseRestoring = "restoring"
	PhaseVerifying = "verifying"
)

const (
	rootDir    = "plugvault"
	metaDir    = ".plugvault"
	workingDir = ".working"
	latestName = "latest"
	partialExt = ".partial"
	deleteExt  = ".deleting"
)

// validHost rejects host names that could climb out of plugvault/.
func validHost(h string) bool {
	return h != "" && h != "." && h != ".." && !strings.ContainsAny(h, "/\x00") && len(h) <= 255
}

func (j *Job) validate() error {
	if !path.IsAbs(j.Target) {
		return fmt.Errorf("cannot back up: target %q is not an absolute path", j.Target)
	}
	if !validHost(j.Host) {
		return fmt.Errorf("cannot back up: invalid host name %q", j.Host)
	}
	switch j.FSType {
	case "btrfs", "ext4", "xfs":
	default:
		return fmt.Errorf("cannot back up: unsupported target filesystem %q", j.FSType)
	}
	if len(j.Sources) == 0 {
		return fmt.Errorf("cannot back up: no sources")
	}
	return nil
}

func (j *Job) workers() int {
	if j.Workers > 0 {
		return j.Workers
	}
	return 4
}

func (j *Job) copyWorkers() int {
	if j.CopyWorkers > 0 {
		return j.CopyWorkers
	}
	return j.workers()
}

func (j *Job) hostRel() string { return rootDir + "/" + j.Host }
