package ui

import (
	"strings"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/layout"
	"fyne.io/fyne/v2/widget"
	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/tray/internal/model"
)

// passDialog is the passphrase window. Its methods run on the fyne thread (fyne.Do).
type passDialog struct {
	c       *controller
	app     fyne.App
	w       fyne.Window
	heading *widget.Label
	details *widget.Label
	entry   *widget.Entry
	message *widget.Label
	unlock  *widget.Button
	cancel  *widget.Button
	drive   dbus.ObjectPath
	busy    bool
	check   bool // the passphrase goes to CheckPassphrase
}

func newPassDialog(a fyne.App, c *controller) *passDialog {
	return &passDialog{c: c, app: a}
}

// build creates the window on first use (on the fyne thread, after the app runs).
func (d *passDialog) build() {
	if d.w != nil {
		return
	}
	d.w = d.app.NewWindow("Unlock backup drive - plugvault")
	d.heading = widget.NewLabelWithStyle("", fyne.TextAlignLeading, fyne.TextStyle{Bold: true})
	d.heading.Wrapping = fyne.TextWrapWord
	d.details = widget.NewLabel("")
	d.entry = widget.NewPasswordEntry() // its action icon reveals the text
	d.entry.SetPlaceHolder("Passphrase")
	d.entry.OnSubmitted = func(string) { d.submit() }
	d.message = widget.NewLabel("")
	d.message.Importance = widget.DangerImportance
	d.message.Wrapping = fyne.TextWrapWord
	d.message.Hide()
	d.unlock = widget.NewButton("Unlock", d.submit)
	d.unlock.Importance = widget.HighImportance
	d.cancel = widget.NewButton("Cancel", d.dismiss)
	d.w.SetContent(container.NewVBox(d.heading, d.details, d.entry, d.message,
		container.NewHBox(layout.NewSpacer(), d.cancel, d.unlock)))
	d.w.SetCloseIntercept(d.dismiss) // hide, never close: fyne quits with its last window
	d.w.Resize(fyne.NewSize(440, 0))
}

func (d *passDialog) show(a model.ShowDialog) {
	d.build()
	if a.Drive != d.drive || a.Check != d.check {
		d.entry.SetText("")
	}
	d.drive, d.busy, d.check = a.Drive, a.Busy, a.Check
	d.w.SetTitle(a.Title)
	d.unlock.SetText(a.Submit)
	d.cancel.SetText(a.Dismiss)
	d.heading.SetText(a.Heading)
	d.details.SetText(strings.Join(a.Details, "\n"))
	d.message.Importance = widget.DangerImportance
	if a.Done {
		d.message.Importance = widget.SuccessImportance
	}
	if a.Message != "" {
		d.message.SetText(a.Message)
		d.message.Show()
	} else {
		d.message.Hide()
	}
	if a.Busy {
		d.entry.Disable()
		d.unlock.Disable()
	} else {
		d.entry.Enable()
		d.unlock.Enable()
	}
	if a.Done {
		d.entry.Hide()
		d.unlock.Hide()
	} else {
		d.entry.Show()
		d.unlock.Show()
	}
	// Size the window for its content before it is shown: a window that grows after it was
	// first drawn shows a black area until something redraws it (seen under Xvfb).
	d.w.Resize(d.w.Content().MinSize().Max(fyne.NewSize(440, 0)))
	d.w.Show()
	d.w.RequestFocus()
	if !a.Busy && !a.Done {
		d.w.Canvas().Focus(d.entry)
	}
}

func (d *passDialog) hide() {
	if d.w == nil {
		return
	}
	d.entry.SetText("")
	d.drive = ""
	d.w.Hide()
}

// submit takes the passphrase out of the entry as bytes and clears the entry at once; the
// bytes are zeroed after the Unlock (or CheckPassphrase) call. (The entry widget keeps its text as a Go string,
// which cannot be zeroed; clearing it drops the widget's reference right away.)
func (d *passDialog) submit() {
	if d.busy || d.drive == "" || d.entry.Text == "" {
		return
	}
	pass := []byte(d.entry.Text)
	d.entry.SetText("")
	d.busy = true
	drive := d.drive
	d.c.post(model.DialogSubmitted{Drive: drive})
	go d.c.unlock(d.c.ctx, drive, pass, d.check)
}

func (d *passDialog) dismiss() {
	drive := d.drive
	d.hide()
	if drive != "" {
		d.c.post(model.DialogCancelled{Drive: drive})
	}
}
