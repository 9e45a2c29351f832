package ui

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/layout"
	"fyne.io/fyne/v2/widget"
	"github.com/godbus/dbus/v5"
)

// The files of checksFile: when each drive's restore check was last prompted, and when each
// drive's passphrase check falls due next.
const (
	restoreChecksName = "restore-checks.json"
	passChecksName    = "passphrase-checks.json"
)

// checksFile is where the tray keeps one of its lists of check times, name:
// $XDG_STATE_HOME/plugvault/name (default ~/.local/state), the user's own.
func checksFile(name string) (string, error) {
	dir := os.Getenv("XDG_STATE_HOME")
	if dir == "" || !filepath.IsAbs(dir) {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(dir, "plugvault", name), nil
}

// loadChecks reads the saved times; a missing file is an empty list.
func loadChecks(path string) (map[string]time.Time, error) {
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return map[string]time.Time{}, nil
	}
	if err != nil {
		return nil, err
	}
	var m map[string]time.Time
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", path, err)
	}
	return m, nil
}

// saveChecks writes the times atomically (a new file renamed over the old one).
func saveChecks(path string, m map[string]time.Time) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// checkPrompt is a reminder window: the monthly "check that you can restore" and the quarterly
// "do you still know your passphrase?". Its methods run on the fyne thread.
type checkPrompt struct {
	c      *controller
	accept string                      // the label of the button that does the check
	onYes  func(drive dbus.ObjectPath) // after the accept button
	onNo   func(drive dbus.ObjectPath) // after Later or closing the window; nil: nothing
	w      fyne.Window
	text   *widget.Label
	drive  dbus.ObjectPath
}

func (p *checkPrompt) show(drive dbus.ObjectPath, title, text string) {
	if p.w == nil {
		p.w = p.c.app.NewWindow(title)
		p.text = widget.NewLabel("")
		p.text.Wrapping = fyne.TextWrapWord
		later := widget.NewButton("Later", p.later)
		yes := widget.NewButton(p.accept, func() {
			p.w.Hide()
			p.onYes(p.drive)
		})
		yes.Importance = widget.HighImportance
		p.w.SetContent(container.NewVBox(p.text, container.NewHBox(layout.NewSpacer(), later, yes)))
		p.w.SetCloseIntercept(p.later) // hide, never close: fyne quits with its last window
		p.w.Resize(fyne.NewSize(440, 0))
	}
	p.drive = drive
	p.w.SetTitle(title)
	p.text.SetText(text)
	p.w.Show()
	p.w.RequestFocus()
	repaintSoon(p.w)
}

func (p *checkPrompt) later() {
	p.w.Hide()
	if p.onNo != nil {
		p.onNo(p.drive)
	}
}
