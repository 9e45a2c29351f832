package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/plugvault/plugvault/service/api"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := newApp(os.Stdin, os.Stdout, os.Stderr).run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

// app is one invocation of the CLI. Tests build it with their own streams, bus connection and
// fake sysfs tree.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	// connect opens the client; the default connects to the system bus
	// (DBUS_SYSTEM_BUS_ADDRESS is honoured).
	connect func(ctx context.Context) (*api.Client, error)
	// sysRoot and udevDataDir are /sys and /run/udev/data (enroll reads what it will destroy).
	sysRoot, udevDataDir string
	// devRoot is where device nodes live ("/dev"); only tests change it.
	devRoot string
	now     func() time.Time

	client      *api.Client
	interactive bool
	o           opts
}

func newApp(stdin io.Reader, stdout, stderr io.Writer) *app {
	return &app{
		stdin: stdin, stdout: stdout, stderr: stderr,
		connect:     api.Connect,
		sysRoot:     "/sys",
		udevDataDir: "/run/udev/data",
		devRoot:     "/dev",
		now:         time.Now,
	}
}

// opts holds every flag of every verb; each verb registers the ones it understands.
type opts struct {
	json            bool
	nonInteractive  bool
	help            bool
	drive           string
	watch           bool
	wait            bool
	passphraseStdin bool
	yes             bool
	name            string
	label           string
	filesystem      string
	headerBackup    string
	keyFile         string
	passphrase      bool
	addKeyfileSlot  bool
	keepSlot        bool
	removeKeyslot   bool
	overwrite       bool
	noPowerOff      bool
	follow          bool
	since           string
	lines           int
}

// verb is one subcommand.
type verb struct {
	name    string
	args    string // usage after the verb name
	summary string // one line for the overview
	help    string // details and examples
	flags   func(fs *flag.FlagSet, o *opts)
	run     func(ctx context.Context, a *app, args []string) error
	// local verbs never talk to plugvaultd.
	local bool
}

// commonFlags are understood by every verb.
func commonFlags(fs *flag.FlagSet, o *opts) {
	fs.BoolVar(&o.json, "json", false, "print machine-readable JSON (see: plugvault help json)")
	fs.BoolVar(&o.nonInteractive, "non-interactive", false, "never ask for a password in a polkit dialog, even on a terminal")
	fs.BoolVar(&o.help, "help", false, "show help for this command")
	fs.BoolVar(&o.help, "h", false, "show help for this command")
}

func driveFlag(fs *flag.FlagSet, o *opts) {
	fs.StringVar(&o.drive, "drive", "", "the `DRIVE`: a name, a LUKS UUID (or a unique prefix) or an object path")
	fs.StringVar(&o.drive, "d", "", "short for --drive")
}

func (a *app) run(ctx context.Context, args []string) (code int) {
	err := a.dispatch(ctx, args)
	code = exitCode(err)
	if err == nil {
		return code
	}
	if ctx.Err() != nil && code == exitFailed {
		code = exitCancelled
	}
	if a.o.json {
		out := map[string]any{"error": map[string]any{"message": err.Error(), "kind": errorKind(code), "exit_code": code}}
		b, _ := json.Marshal(out)
		fmt.Fprintln(a.stderr, string(b))
		return code
	}
	fmt.Fprintf(a.stderr, "plugvault: %v\n", err)
	var uerr *usageError
	if errors.As(err, &uerr) {
		fmt.Fprintln(a.stderr, "Run 'plugvault help' for usage.")
	}
	if code == exitNoService {
		fmt.Fprintln(a.stderr, "Is plugvaultd installed? Check with: systemctl status plugvaultd")
	}
	return code
}

func (a *app) dispatch(ctx context.Context, args []string) error {
	// Leading global flags (plugvault --json status) are accepted too.
	global := flag.NewFlagSet("plugvault", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	commonFlags(global, &a.o)
	var showVersion bool
	global.BoolVar(&showVersion, "version", false, "")
	if err := global.Parse(args); err != nil {
		return usagef("%v", err)
	}
	args = global.Args()
	if showVersion {
		args = []string{"version"}
	}
	if a.o.help || len(args) == 0 {
		if len(args) > 0 {
			return a.printHelp(args[:1])
		}
		return a.printHelp(nil)
	}
	v := findVerb(args[0])
	if v == nil {
		return usagef("unknown command %q", args[0])
	}
	fs := flag.NewFlagSet("plugvault "+v.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	commonFlags(fs, &a.o)
	if v.flags != nil {
		v.flags(fs, &a.o)
	}
	pos, err := parseInterleaved(fs, args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return a.printHelp([]string{v.name})
		}
		return usagef("%s: %v", v.name, err)
	}
	if a.o.help {
		return a.printHelp([]string{v.name})
	}
	if !v.local {
		a.interactive = isTerminal(a.stdin) && !a.o.nonInteractive
		c, err := a.connect(ctx)
		if err != nil {
			return fmt.Errorf("%w: %v", errNoService, err)
		}
		defer c.Close()
		c.SetInteractive(a.interactive)
		a.client = c
	}
	return v.run(ctx, a, pos)
}

// parseInterleaved parses flags that may come before, between or after the positional
// arguments (`plugvault backup blue --json`); everything after "--" is positional.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	pos := []string{}
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	return pos, nil
}

// options returns the a{sv} options every authorized call carries.
func (a *app) options(extra api.Options) api.Options {
	o := api.Options{}
	for k, v := range extra {
		o[k] = v
	}
	if !a.interactive {
		o[api.OptNoUserInteraction] = true
	}
	return o
}

// Timeouts. Calls that may show a polkit dialog wait as long as a person may take; long
// operations are bounded only by Ctrl-C.
const (
	readTimeout        = 30 * time.Second
	actionTimeout      = 2 * time.Minute
	interactiveTimeout = 15 * time.Minute
	longTimeout        = 24 * time.Hour
)

func (a *app) readCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, readTimeout)
}

func (a *app) actionCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if a.interactive {
		return context.WithTimeout(ctx, interactiveTimeout)
	}
	return context.WithTimeout(ctx, actionTimeout)
}

func (a *app) longCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, longTimeout)
}

// printJSON writes v as one line of JSON (stable shapes, see doc.go).
func (a *app) printJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("internal error: cannot encode JSON: %w", err)
	}
	_, err = fmt.Fprintln(a.stdout, string(b))
	return err
}

func (a *app) printf(format string, args ...any) {
	fmt.Fprintf(a.stdout, format, args...)
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }

func findVerb(name string) *verb {
	for i := range verbs {
		if verbs[i].name == name {
			return &verbs[i]
		}
	}
	return nil
}

func (a *app) printHelp(args []string) error {
	if len(args) == 0 {
		fmt.Fprint(a.stdout, overview())
		return nil
	}
	switch args[0] {
	case "exit-codes":
		fmt.Fprint(a.stdout, exitCodesHelp)
		return nil
	case "json":
		fmt.Fprint(a.stdout, jsonHelp)
		return nil
	case "drive", "drives":
		fmt.Fprint(a.stdout, driveHelp)
		return nil
	}
	v := findVerb(args[0])
	if v == nil {
		return usagef("no help for %q", args[0])
	}
	fmt.Fprintf(a.stdout, "Usage: plugvault %s %s\n\n%s\n", v.name, v.args, v.summary)
	if v.help != "" {
		fmt.Fprintf(a.stdout, "\n%s\n", strings.TrimSpace(v.help))
	}
	fs := flag.NewFlagSet(v.name, flag.ContinueOnError)
	var o opts
	commonFlags(fs, &o)
	if v.flags != nil {
		v.flags(fs, &o)
	}
	fmt.Fprintln(a.stdout, "\nFlags:")
	var names []string
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != "h" && f.Name != "d" {
			names = append(names, f.Name)
		}
	})
	sort.Strings(names)
	for _, n := range names {
		f := fs.Lookup(n)
		arg, usage := flag.UnquoteUsage(f)
		if _, isBool := f.Value.(interface{ IsBoolFlag() bool }); !isBool {
			n += " " + arg
		}
		fmt.Fprintf(a.stdout, "  --%-22s %s\n", n, usage)
	}
	return nil
}

func overview() string {
	var b strings.Builder
	b.WriteString(`plugvault controls plugvaultd, the service that backs up to your encrypted USB drives.

Usage: plugvault COMMAND [ARGS] [FLAGS]

Commands:
`)
	for _, v := range verbs {
		if v.summary == "" {
			continue
		}
		fmt.Fprintf(&b, "  %-11s %s\n", v.name, v.summary)
	}
	b.WriteString(`
DRIVE is a drive's name, its LUKS UUID (or a unique prefix of it) or its D-Bus object path; it
may be left out when exactly one drive is enrolled.

Every command takes --json (machine-readable output) and --non-interactive. Run
'plugvault help COMMAND' for details and examples, 'plugvault help exit-codes' for the exit
codes and 'plugvault help json' for the JSON shapes.
`)
	return b.String()
}
