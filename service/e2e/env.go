package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// StickPlan is a stick to make before the boot, and whether the guest's config knows it.
type StickPlan struct {
	Spec StickSpec
	// Enrolled lists the stick in config.toml.
	Enrolled bool
	// Key installs its keyfile (only for enrolled sticks); without it the daemon must ask for
	// the passphrase.
	Key bool
	// MinFreePercent is its retention's space floor in config.toml (0: the default).
	MinFreePercent int
}

// Env is a booted guest with its sticks.
type Env struct {
	Repo    string
	Out     string // e2e-out: the report, logs, and _run/ (sticks, sockets, the 9p share)
	Image   *Image
	Install *Install
	Sticks  map[string]*Stick
	VM      *VM
	Log     io.Writer
	Setup   []string // what setup did, with timings, for the report header
}

// SetupConfig says what to set up.
type SetupConfig struct {
	Repo, Out, Cache string
	Sticks           []StickPlan
	Log              io.Writer
	// RequireDaemon fails before the boot when plugvaultd cannot be built from this tree.
	RequireDaemon bool
}

// Setup builds (or takes from the cache) the guest image, makes the sticks, prepares the
// install overlay and boots the guest.
func Setup(ctx context.Context, cfg SetupConfig) (*Env, error) {
	env := &Env{Repo: cfg.Repo, Out: cfg.Out, Sticks: map[string]*Stick{}, Log: cfg.Log}
	// "_run": the go command skips directories starting with "_", so the guest's test files
	// (Go sources among them) under the repository never join ./... builds.
	run := filepath.Join(cfg.Out, "_run")
	if err := os.RemoveAll(run); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(run, "sticks"), 0o700); err != nil {
		return nil, err
	}
	step := func(what string, start time.Time) {
		line := fmt.Sprintf("%-34s %6.1fs", what, time.Since(start).Seconds())
		env.Setup = append(env.Setup, line)
		fmt.Fprintln(cfg.Log, line)
	}

	start := time.Now()
	img, err := EnsureImage(cfg.Cache, cfg.Log)
	if err != nil {
		return nil, err
	}
	env.Image = img
	if img.Built {
		step("guest image built ("+img.Key+")", start)
	} else {
		step("guest image from cache ("+img.Key+")", start)
	}

	start = time.Now()
	var drives []ConfDrive
	for _, p := range cfg.Sticks {
		s, err := MakeStick(filepath.Join(run, "sticks"), p.Spec)
		if err != nil {
			return nil, fmt.Errorf("cannot make stick %s: %w", p.Spec.Name, err)
		}
		env.Sticks[s.Name] = s
		if p.Enrolled {
			drives = append(drives, ConfDrive{Stick: s, InstallKey: p.Key, MinFreePercent: p.MinFreePercent})
		}
	}
	step(fmt.Sprintf("%d test stick(s) made", len(cfg.Sticks)), start)

	start = time.Now()
	env.Install, err = PrepareShare(cfg.Repo, filepath.Join(run, "share"), drives, cfg.Log)
	if err != nil {
		return nil, err
	}
	if env.Install.Daemon {
		step("plugvault built and installed", start)
	} else {
		step("guest agent built (no plugvaultd: "+env.Install.Why+")", start)
	}

	if cfg.RequireDaemon && !env.Install.Daemon {
		return nil, fmt.Errorf("cannot install plugvaultd: %s", env.Install.Why)
	}
	start = time.Now()
	// The agent says hello after installing plugvault (a 9p copy) and the boot settling: on
	// loaded shared cores that took more than the default 5 minutes.
	env.VM, err = StartVM(ctx, VMConfig{Image: img, Share: env.Install.Share, Dir: run, Log: cfg.Log, BootTimeout: 12 * time.Minute})
	if err != nil {
		return nil, err
	}
	step(fmt.Sprintf("guest booted (%s, %s)", env.VM.Boot.Kernel, env.VM.Boot.SystemState), start)
	return env, nil
}

// Close stops the guest.
func (env *Env) Close() error {
	if env.VM == nil {
		return nil
	}
	return env.VM.Stop()
}
