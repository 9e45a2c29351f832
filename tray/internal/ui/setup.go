package ui

import (
	"context"
	"fmt"
	"io"
	"strings"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/dialog"
	"fyne.io/fyne/v2/layout"
	"fyne.io/fyne/v2/widget"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/tray/internal/model"
)

// Where the setup window looks for USB disks (readable by every user).
const (
	sysBlock = "/sys/class/block"
	udevData = "/run/udev/data"
)

// maxKeyfile is cryptsetup's own keyfile limit, which plugvaultd accepts too.
const maxKeyfile = 8 << 20

// setupWindow sets up a new drive: it lists the USB disks, says what will be erased, asks for
// a passphrase twice and calls the daemon's Enroll (polkit asks for the administrator); or
// adopts a drive the user prepared with a keyfile or a passphrase (Adopt). The daemon checks
// the device again and explains a refusal (system disk, mounted, in use), which the window
// shows. Its fields are used on the fyne thread only.
type setupWindow struct {
	c     *controller
	w     fyne.Window
	disks []usbDisk
	disk  int // index into disks, -1 = none

	list                *widget.List
	erase, hint, status *widget.Label
	name                *widget.Entry
	pass, again         *widget.Entry
	setup, adopt        *widget.Button
	progress            *widget.ProgressBarInfinite
	busy                bool
}

func (c *controller) openSetup(a model.OpenSetup) {
	if c.setup == nil {
		c.setup = &setupWindow{c: c, disk: -1}
		c.setup.build(a.Title)
	}
	c.setup.refreshDisks()
	c.setup.w.Show()
	c.setup.w.RequestFocus()
	repaintSoon(c.setup.w)
}

func (s *setupWindow) build(title string) {
	s.w = s.c.app.NewWindow(title)
	s.list = widget.NewList(func() int { return len(s.disks) },
		func() fyne.CanvasObject {
			return widget.NewLabel("/dev/sdz · SanDisk Ultra Fit · 64.0 GB · serial 0123456789")
		},
		func(i widget.ListItemID, o fyne.CanvasObject) { o.(*widget.Label).SetText(diskLine(s.disks[i])) })
	s.list.OnSelected = func(i widget.ListItemID) { s.disk = i; s.update() }
	s.erase = widget.NewLabel("")
	s.erase.Wrapping = fyne.TextWrapWord
	s.name = widget.NewEntry()
	s.name.SetPlaceHolder("Name of the drive, for example Blue stick")
	s.pass = widget.NewPasswordEntry()
	s.pass.SetPlaceHolder("Passphrase")
	s.again = widget.NewPasswordEntry()
	s.again.SetPlaceHolder("The passphrase again")
	s.pass.OnChanged = func(string) { s.update() }
	s.again.OnChanged = func(string) { s.update() }
	s.hint = widget.NewLabel("")
	reminder := widget.NewLabel("Write the passphrase down and keep it apart from the drive. It opens the drive on any\n" +
		"computer; without it, and without this computer's key, nobody can read the backups, not even you.")
	s.status = widget.NewLabel("")
	s.status.Wrapping = fyne.TextWrapWord
	s.progress = widget.NewProgressBarInfinite()
	s.progress.Hide()
	s.setup = widget.NewButton("Erase and set up", s.confirmEnroll)
	s.setup.Importance = widget.DangerImportance
	s.adopt = widget.NewButton("Use a drive I prepared myself…", s.chooseAdopt)
	refresh := widget.NewButton("Look again", s.refreshDisks)
	s.w.SetContent(container.NewVBox(
		widget.NewLabelWithStyle("Choose the USB drive", fyne.TextAlignLeading, fyne.TextStyle{Bold: true}),
		container.NewGridWrap(fyne.NewSize(640, 120), s.list),
		s.erase, s.name, s.pass, s.again, s.hint, reminder, s.progress, s.status,
		container.NewHBox(refresh, s.adopt, layout.NewSpacer(), s.setup)))
	s.w.SetCloseIntercept(func() { s.w.Hide() }) // hide, never close: fyne quits with its last window
	s.w.Resize(fyne.NewSize(680, 0))
	s.update()
}

func diskLine(d usbDisk) string {
	parts := []string{d.Dev}
	if vm := strings.TrimSpace(d.Vendor + " " + d.Model); vm != "" {
		parts = append(parts, vm)
	}
	parts = append(parts, api.FormatBytes(d.Size))
	if d.Serial != "" {
		parts = append(parts, "serial "+d.Serial)
	}
	return strings.Join(parts, " · ")
}

// eraseText says in plain words what formatting d destroys.
func eraseText(d usbDisk) string {
	var what []string
	describe := func(dev, fstype, label string, size uint64) string {
		s := dev + " (" + api.FormatBytes(size)
		if fstype != "" {
			s += ", " + fstype
		}
		if label != "" {
			s += ", “" + label + "”"
		}
		return s + ")"
	}
	if d.FSType != "" {
		what = append(what, describe(d.Dev, d.FSType, d.Label, d.Size))
	}
	for _, p := range d.Parts {
		what = append(what, describe(p.Dev, p.FSType, p.Label, p.Size))
	}
	if len(what) == 0 {
		return "Everything on " + d.Dev + " will be erased (it looks empty)."
	}
	return "Everything on " + d.Dev + " will be erased, including " + strings.Join(what, ", ") + "."
}

func (s *setupWindow) refreshDisks() {
	s.disks = listUSBDisks(sysBlock, udevData)
	s.disk = -1
	s.list.UnselectAll()
	s.list.Refresh()
	if len(s.disks) == 0 {
		s.status.SetText("No USB drive found. Plug one in, then choose Look again.")
	} else {
		s.status.SetText("")
	}
	s.update()
}

func (s *setupWindow) update() {
	if s.disk >= 0 && s.disk < len(s.disks) {
		s.erase.SetText(eraseText(s.disks[s.disk]))
	} else {
		s.erase.SetText("")
	}
	hint, ok := model.PassphraseHint(s.pass.Text)
	if ok && s.again.Text != "" && s.again.Text != s.pass.Text {
		hint, ok = "The two passphrases differ", false
	} else if ok && s.again.Text == "" {
		ok = false
	}
	s.hint.SetText(hint)
	if ok && s.disk >= 0 && !s.busy {
		s.setup.Enable()
	} else {
		s.setup.Disable()
	}
	if s.disk >= 0 && !s.busy {
		s.adopt.Enable()
	} else {
		s.adopt.Disable()
	}
}

func (s *setupWindow) confirmEnroll() {
	d := s.disks[s.disk]
	dialog.ShowConfirm("Erase "+d.Dev+"?", eraseText(d)+"\nThis cannot be undone.", func(yes bool) {
		if !yes {
			return
		}
		pass := []byte(s.pass.Text)
		s.pass.SetText("")
		s.again.SetText("")
		opts := api.Options{}
		if n := strings.TrimSpace(s.name.Text); n != "" {
			opts[api.OptName] = n
		}
		s.run("Formatting "+d.Dev+" (LUKS2 with your passphrase and a key slot for this computer), then making the filesystem… this takes a minute or two.",
			func(ctx context.Context, cl *api.Client) (string, error) {
				defer clear(pass)
				p, _, err := cl.Enroll(ctx, d.Dev, pass, opts) // no header backup asked for
				return string(p), err
			})
	}, s.w)
}

// chooseAdopt adopts the chosen drive with a keyfile (a file chooser) or, without one, with the
// passphrase typed in the first field.
func (s *setupWindow) chooseAdopt() {
	d := s.disks[s.disk]
	dev := d.adoptTarget()
	withPass := func() {
		pass := []byte(s.pass.Text)
		s.pass.SetText("")
		s.again.SetText("")
		if len(pass) == 0 {
			s.status.SetText("Type the drive's passphrase in the passphrase field first, or choose its keyfile.")
			return
		}
		s.run("Checking the passphrase of "+dev+"…", func(ctx context.Context, cl *api.Client) (string, error) {
			defer clear(pass)
			p, err := cl.Adopt(ctx, dev, pass, api.Options{api.OptSecretIsPassphrase: true, api.OptAddKeyfileSlot: true})
			return string(p), err
		})
	}
	withKey := func() {
		dialog.ShowFileOpen(func(r fyne.URIReadCloser, err error) {
			if err != nil || r == nil {
				return
			}
			defer r.Close()
			key, err := io.ReadAll(io.LimitReader(r, maxKeyfile+1))
			if err != nil || len(key) == 0 || len(key) > maxKeyfile {
				s.status.SetText(fmt.Sprintf("Cannot use %s as a keyfile: it must be 1 byte to 8 MiB (%v).", r.URI().Path(), err))
				return
			}
			s.run("Checking the keyfile on "+dev+"; if its slot is slow, a fast one is added…", func(ctx context.Context, cl *api.Client) (string, error) {
				defer clear(key)
				p, err := cl.Adopt(ctx, dev, key, nil)
				return string(p), err
			})
		}, s.w)
	}
	dialog.NewCustomConfirm("Use "+dev+" as it is", "Keyfile…", "Passphrase",
		widget.NewLabel("Nothing is erased. Open it with its keyfile, or with the passphrase typed above."),
		func(key bool) {
			if key {
				withKey()
			} else {
				withPass()
			}
		}, s.w).Show()
}

// run calls the daemon off the fyne thread with progress, and ends with the outcome.
func (s *setupWindow) run(doing string, call func(context.Context, *api.Client) (string, error)) {
	cl := s.c.client.get()
	if cl == nil {
		s.status.SetText(errNotRunning.Error())
		return
	}
	s.busy = true
	s.update()
	s.progress.Show()
	s.progress.Start()
	s.status.SetText(doing)
	go func() {
		ctx, cancel := context.WithTimeout(s.c.ctx, callTimeout)
		defer cancel()
		path, err := call(ctx, cl)
		fyne.Do(func() {
			s.busy = false
			s.progress.Stop()
			s.progress.Hide()
			s.update()
			if err != nil {
				s.c.log.Info("setup failed", "err", err)
				s.status.SetText("Not set up: " + capitalizeFirst(err.Error()) + ".")
				return
			}
			s.c.log.Info("drive set up", "drive", path)
			s.status.SetText("Done. The first backup is running; the tray shows its progress.")
		})
	}()
}

func capitalizeFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
