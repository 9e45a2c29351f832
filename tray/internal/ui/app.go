package ui

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/app"
	"fyne.io/systray"
	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/tray/internal/icons"
	"github.com/plugvault/plugvault/tray/internal/model"
	"github.com/plugvault/plugvault/tray/internal/notify"
	"github.com/plugvault/plugvault/tray/internal/opener"
)

// callTimeout bounds a method call. It is long because polkit may ask the user to
// authenticate first, and Eject returns only when the drive is safe to remove.
const callTimeout = 10 * time.Minute

// SessionName is the tray's well-known name on the session bus; owning it makes the tray a
// single instance per session.
const SessionName = "org.plugvault.Tray"

// ErrAlreadyRunning is returned by Run when another tray runs in this session.
var ErrAlreadyRunning = errors.New("plugvault-tray already runs in this session")

// Options configures Run.
type Options struct {
	// Connect opens a client of plugvaultd on the system bus; default api.Connect.
	Connect func(ctx context.Context) (*api.Client, error)
	// Opener opens the read-only backups in the file manager; default xdg-open.
	Opener opener.Opener
	// Logger receives diagnostics; default slog.Default().
	Logger *slog.Logger
}

// Run shows the tray until the user chooses Quit or ctx ends.
func Run(ctx context.Context, opts Options) error {
	if opts.Connect == nil {
		opts.Connect = api.Connect
	}
	if opts.Opener == nil {
		opts.Opener = opener.XDG{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// One tray per session: the autostart entry and the application menu both start it.
	session, err := dbus.SessionBus()
	if err != nil {
		return fmt.Errorf("cannot connect to the session bus: %w", err)
	}
	if reply, err := session.RequestName(SessionName, dbus.NameFlagDoNotQueue); err != nil {
		return fmt.Errorf("cannot own %s on the session bus: %w", SessionName, err)
	} else if reply != dbus.RequestNameReplyPrimaryOwner {
		return ErrAlreadyRunning
	}

	a := app.NewWithID(SessionName)
	c := &controller{opts: opts, log: opts.Logger, app: a, events: make(chan model.Event, 256),
		model: model.New(), timer: time.NewTimer(time.Hour)}
	c.timer.Stop()
	c.menu = newMenu(c.post)
	c.dialog = newPassDialog(a, c)
	c.logWin = newLogWindow(a, func() { c.post(model.LogClosed{}) })
	c.about = &aboutWindow{app: a}
	c.restores = map[dbus.ObjectPath]*restoreWindow{}
	c.check = &checkPrompt{c: c, accept: "Open Restore…", onYes: func(drive dbus.ObjectPath) {
		c.post(model.MenuClicked{Key: model.MenuKey{Drive: drive, Kind: model.ItemRestore}})
	}}
	c.passCheck = &checkPrompt{c: c, accept: "Check now…",
		onYes: func(drive dbus.ObjectPath) { c.post(model.PassCheckAccepted{Drive: drive}) },
		onNo:  func(drive dbus.ObjectPath) { c.post(model.PassCheckLater{Drive: drive}) }}

	systray.SetTitle(model.AppName)
	start, end := systray.RunWithExternalLoop(nil, nil)
	start()
	defer end()
	c.notifier = notify.New(session, "plugvault")

	c.ctx = ctx
	go c.watchService(ctx)
	go c.loop(ctx)
	go c.loadChecks()
	runDone := make(chan struct{})
	lost := make(chan struct{})
	go func() {
		select {
		case <-parent.Done(): // SIGTERM, SIGINT
			fyne.Do(a.Quit)
		case <-session.Context().Done(): // systray shares this connection
			c.log.Warn("lost the session bus; the tray starts again when it is back")
			close(lost)
			fyne.Do(a.Quit)
		case <-runDone:
		}
	}()
	a.Run()
	close(runDone)
	select {
	case <-lost:
		return ErrSessionLost
	default:
		return nil
	}
}

// controller owns the model; see the package comment.
type controller struct {
	ctx      context.Context // ends when the tray stops
	opts     Options
	log      *slog.Logger
	app      fyne.App
	events   chan model.Event
	model    *model.Model
	timer    *time.Timer
	menu     *menu
	dialog   *passDialog
	logWin   *logWindow
	about    *aboutWindow
	restores map[dbus.ObjectPath]*restoreWindow // used on the fyne thread only
	check    *checkPrompt
	// passCheck asks whether the user still knows a drive's passphrase.
	passCheck *checkPrompt
	setup     *setupWindow // used on the fyne thread only
	checks    string       // the file of restore-check times, "" if it cannot be known
	// passChecks is the file of passphrase-check times, "" if it cannot be known.
	passChecks string
	notifier   *notify.Notifier
	client     clientRef
}

// post hands an event to the controller; it never blocks the caller for long (the channel is
// buffered far beyond what a person can click).
func (c *controller) post(ev model.Event) {
	c.events <- ev
}

func (c *controller) loop(ctx context.Context) {
	c.apply(ctx, c.model.Update(time.Now(), model.ServiceDown{}))
	for {
		var ev model.Event
		select {
		case <-ctx.Done():
			return
		case ev = <-c.events:
		case <-c.timer.C:
			ev = model.TimerFired{}
		}
		c.apply(ctx, c.model.Update(time.Now(), ev))
	}
}

func (c *controller) apply(ctx context.Context, acts []model.Action) {
	for _, act := range acts {
		switch a := act.(type) {
		case model.SetIcon:
			systray.SetIcon(icons.Tray(a.Icon, a.Step))
		case model.SetTooltip:
			systray.SetTooltip(a.Text)
		case model.SetMenu:
			c.menu.set(a.Items)
		case model.Notify:
			go func() {
				nctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				if err := c.notifier.Notify(nctx, a.Tag, a.IconName, a.Summary, a.Body, a.Urgent); err != nil {
					c.log.Warn("notification not shown", "summary", a.Summary, "err", err)
				}
			}()
		case model.ShowDialog:
			c.log.Info("passphrase dialog", "drive", a.Drive, "message", a.Message, "busy", a.Busy)
			fyne.Do(func() { c.dialog.show(a) })
		case model.HideDialog:
			c.log.Info("passphrase dialog hidden")
			fyne.Do(c.dialog.hide)
		case model.ShowLog:
			c.log.Info("log window", "drive", a.Drive, "title", a.Title, "lines", len(a.Lines))
			fyne.Do(func() { c.logWin.show(a) })
		case model.ShowAbout:
			c.log.Info("about window", "title", a.Title)
			fyne.Do(func() { c.about.show(a) })
		case model.PromptRestoreCheck:
			c.log.Info("restore check prompt", "drive", a.Drive)
			fyne.Do(func() { c.check.show(a.Drive, a.Title, a.Text) })
		case model.SaveRestoreChecks:
			if c.checks != "" {
				if err := saveChecks(c.checks, a.Checked); err != nil {
					c.log.Warn("cannot save the restore-check times", "err", err)
				}
			}
		case model.PromptPassCheck:
			c.log.Info("passphrase check prompt", "drive", a.Drive)
			fyne.Do(func() { c.passCheck.show(a.Drive, a.Title, a.Text) })
		case model.SavePassChecks:
			if c.passChecks != "" {
				if err := saveChecks(c.passChecks, a.Due); err != nil {
					c.log.Warn("cannot save the passphrase-check times", "err", err)
				}
			}
		case model.OpenSetup:
			c.log.Info("setup window")
			fyne.Do(func() { c.openSetup(a) })
		case model.OpenRestore:
			c.log.Info("restore window", "drive", a.Drive, "title", a.Title)
			fyne.Do(func() { c.openRestore(a) })
		case model.Call:
			go c.call(ctx, a)
		case model.OpenFolder:
			go func() {
				if err := c.opts.Opener.Open(ctx, a.Path); err != nil {
					c.log.Warn("cannot open the backups", "path", a.Path, "err", err)
				}
			}()
		case model.SetTimer:
			c.timer.Stop()
			if !a.At.IsZero() {
				c.timer.Reset(max(time.Until(a.At), 0))
			}
		case model.Quit:
			fyne.Do(c.app.Quit)
		}
	}
}

var errNotRunning = fmt.Errorf("the backup service is not running: %w", api.ErrFailed)

func (c *controller) call(ctx context.Context, a model.Call) {
	done := model.CallDone{Drive: a.Drive, Method: a.Method}
	cl := c.client.get()
	if cl == nil {
		done.Err = errNotRunning
		c.post(done)
		return
	}
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	switch a.Method {
	case api.MethodBackupNow:
		done.Err = cl.BackupNow(cctx, a.Drive, nil)
	case api.MethodCancel:
		done.Err = cl.Cancel(cctx, a.Drive, nil)
	case api.MethodEject:
		done.Err = cl.Eject(cctx, a.Drive, nil)
	case api.MethodBrowse:
		done.Dir, done.Err = cl.Browse(cctx, a.Drive, nil)
	default:
		done.Err = errors.New("internal error: unknown method " + a.Method)
	}
	if done.Err != nil {
		c.log.Info("call failed", "method", a.Method, "drive", a.Drive, "err", done.Err)
	}
	c.post(done)
}

// unlock sends the passphrase and zeroes it; the dialog calls it on its own goroutine after
// posting DialogSubmitted. With check set it calls CheckPassphrase (which unlocks nothing) and
// reports PassCheckDone instead of UnlockDone.
func (c *controller) unlock(ctx context.Context, drive dbus.ObjectPath, pass []byte, check bool) {
	defer clear(pass)
	var err error
	if cl := c.client.get(); cl == nil {
		err = errNotRunning
	} else {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		if check {
			err = cl.CheckPassphrase(cctx, drive, pass, nil)
		} else {
			err = cl.Unlock(cctx, drive, pass, nil)
		}
		cancel()
	}
	if check {
		c.post(model.PassCheckDone{Drive: drive, Err: err})
		return
	}
	c.post(model.UnlockDone{Drive: drive, Err: err})
}

// loadChecks reads when the restore checks were last prompted and when the passphrase checks
// fall due, and hands them to the model. Without a file's place (no home) that check is never
// prompted, rather than every start.
func (c *controller) loadChecks() {
	if path, checked, ok := c.readChecks(restoreChecksName, "restore-check"); ok {
		c.checks = path
		c.post(model.RestoreChecksLoaded{Checked: checked})
	}
	if path, due, ok := c.readChecks(passChecksName, "passphrase-check"); ok {
		c.passChecks = path
		c.post(model.PassChecksLoaded{Due: due})
	}
}

// readChecks reads the check times in the file name; what names them in the log.
func (c *controller) readChecks(name, what string) (string, map[string]time.Time, bool) {
	path, err := checksFile(name)
	if err != nil {
		c.log.Warn("cannot keep "+what+" times; no "+what+" reminders", "err", err)
		return "", nil, false
	}
	times, err := loadChecks(path)
	if err != nil {
		c.log.Warn("cannot read the "+what+" times; starting afresh", "err", err)
		times = map[string]time.Time{}
	}
	return path, times, true
}
