package drive

import (
	"context"
	"log/slog"
	"sync"

	"github.com/plugvault/plugvault/service/internal/backup"
)

// The slow steps of a run (cryptsetup open and close, mount, unmount, the engine's phases,
// power-off) are logged at debug level when they begin and when they end, with the fields
// STEP, PHASE ("begin" or "end") and, for a failed step, ERR. Nothing else in the daemon says
// where inside a state a run is; the e2e torture suite follows these entries to pull a stick
// in the middle of a step (service/e2e/README.md). They never carry a key or a passphrase.

// Steps, the values of the STEP field.
const (
	StepOpen     = "cryptsetup-open"
	StepClose    = "cryptsetup-close"
	StepMount    = "mount"
	StepUnmount  = "unmount"
	StepEngine   = "engine"    // the whole engine run: Prepare, the child, Promote and Prune
	StepPowerOff = "power-off" // the USB port's power-off after an eject
	// StepPrune is the deleting of old snapshots, inside StepEngine: retention after the run,
	// or making room for a run that does not fit. It begins with the engine's "pruning" phase
	// and ends with the next phase or the engine's end.
	StepPrune = "prune"
	// StepEnginePhase+phase marks the engine child reporting a new phase ("engine-scanning",
	// "engine-copying", "engine-finishing"); PHASE is "begin" only. The "pruning" phase is
	// logged as StepPrune.
	StepEnginePhase = "engine-"
)

// withStepLog wraps the dependencies whose calls are the steps above.
func withStepLog(deps Deps) Deps {
	l := deps.Logger
	deps.LUKS = stepLUKS{LUKS: deps.LUKS, log: l}
	deps.Mounter = stepMounter{Mounter: deps.Mounter, log: l}
	deps.Engine = stepEngine{Engine: deps.Engine, log: l}
	if off := deps.PowerOff; off != nil {
		deps.PowerOff = func(ctx context.Context, devPath string) error {
			return logStep(l, StepPowerOff, []any{"devpath", devPath}, func() error { return off(ctx, devPath) })
		}
	}
	return deps
}

// logStep logs step's begin, runs fn and logs its end (with fn's error).
func logStep(l *slog.Logger, step string, attrs []any, fn func() error) error {
	l.Debug("step begins", append([]any{"step", step, "phase", "begin"}, attrs...)...)
	err := fn()
	end := append([]any{"step", step, "phase", "end"}, attrs...)
	if err != nil {
		end = append(end, "err", err)
	}
	l.Debug("step ends", end...)
	return err
}

type stepLUKS struct {
	LUKS
	log *slog.Logger
}

func (s stepLUKS) Open(ctx context.Context, device, name string, key []byte, slot int, readOnly bool) error {
	with := "keyfile"
	if slot < 0 {
		with = "passphrase"
	}
	return logStep(s.log, StepOpen, []any{"device", device, "mapping", name, "with", with},
		func() error { return s.LUKS.Open(ctx, device, name, key, slot, readOnly) })
}

func (s stepLUKS) Close(ctx context.Context, name string, deferred bool) error {
	return logStep(s.log, StepClose, []any{"mapping", name}, func() error { return s.LUKS.Close(ctx, name, deferred) })
}

type stepMounter struct {
	Mounter
	log *slog.Logger
}

func (s stepMounter) Mount(ctx context.Context, source, target, fstype string, readOnly bool, extra []string, runAs string) error {
	return logStep(s.log, StepMount, []any{"source", source, "target", target},
		func() error { return s.Mounter.Mount(ctx, source, target, fstype, readOnly, extra, runAs) })
}

func (s stepMounter) Unmount(ctx context.Context, target string) error {
	return logStep(s.log, StepUnmount, []any{"target", target}, func() error { return s.Mounter.Unmount(ctx, target) })
}

type stepEngine struct {
	Engine
	log *slog.Logger
}

func (s stepEngine) Run(ctx context.Context, job Job, progress func(Progress)) (res Result, err error) {
	var mu sync.Mutex
	phase := ""
	wrapped := func(p Progress) {
		mu.Lock()
		if p.Phase != phase && p.Phase != "" {
			if phase == backup.PhasePruning {
				s.log.Debug("step ends", "step", StepPrune, "phase", "end", "target", job.Target)
			}
			phase = p.Phase
			if phase == backup.PhasePruning {
				s.log.Debug("step begins", "step", StepPrune, "phase", "begin", "target", job.Target)
			} else {
				s.log.Debug("step begins", "step", StepEnginePhase+p.Phase, "phase", "begin", "target", job.Target)
			}
		}
		mu.Unlock()
		if progress != nil {
			progress(p)
		}
	}
	err = logStep(s.log, StepEngine, []any{"target", job.Target}, func() error {
		var rerr error
		res, rerr = s.Engine.Run(ctx, job, wrapped)
		mu.Lock()
		if phase == backup.PhasePruning {
			end := []any{"step", StepPrune, "phase", "end", "target", job.Target}
			if rerr != nil {
				end = append(end, "err", rerr)
			}
			s.log.Debug("step ends", end...)
		}
		phase = ""
		mu.Unlock()
		return rerr
	})
	return res, err
}
