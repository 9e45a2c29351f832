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

	"github.com/plugvault/plugvault/tray/internal/model"
)

// checksFile is where the tray keeps when each drive's restore check was last prompted:
// $XDG_STATE_HOME/plugvault/restore-checks.json (default ~/.local/state), the user's own.
func checksFile() (string, error) {
	dir := os.Getenv("XDG_STATE_HOME")
	if dir == "" || !filepath.IsAbs(dir) {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(dir, "plugvault", "restore-checks.json"), nil
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
	tmp, err := os.CreateTemp(filepath.Dir(path), ".restore-checks-*")
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

// checkPrompt is the monthly "check that you can restore" window. Its methods run on the fyne
// thread.
type checkPrompt struct {
	c     *controller
	w     fyne.Window
	text  *widget.Label
	drive model.PromptRestoreCheck
}

func (p *checkPrompt) show(a model.PromptRestoreCheck) {
	if p.w == nil {
		p.w = p.c.app.NewWindow(a.Title)
		p.text = widget.NewLabel("")
		p.text.Wrapping = fyne.TextWrapWord
		later := widget.NewButton("Later", func() { p.w.Hide() })
		open := widget.NewButton("Open Restore…", func() {
			p.w.Hide()
			p.c.post(model.MenuClicked{Key: model.MenuKey{Drive: p.drive.Drive, Kind: model.ItemRestore}})
		})
		open.Importance = widget.HighImportance
		p.w.SetContent(container.NewVBox(p.text, container.NewHBox(layout.NewSpacer(), later, open)))
		p.w.SetCloseIntercept(func() { p.w.Hide() }) // hide, never close: fyne quits with its last window
		p.w.Resize(fyne.NewSize(440, 0))
	}
	p.drive = a
	p.w.SetTitle(a.Title)
	p.text.SetText(a.Text)
	p.w.Show()
	p.w.RequestFocus()
	repaintSoon(p.w)
}
