package ui

import (
	"strings"
	"sync"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/layout"
	"fyne.io/fyne/v2/widget"

	"github.com/plugvault/plugvault/tray/internal/model"
)

// aboutWindow shows the product, what it does and the service's version. Its methods run on
// the fyne thread.
type aboutWindow struct {
	app   fyne.App
	w     fyne.Window
	lines *widget.Label
}

func (a *aboutWindow) show(s model.ShowAbout) {
	if a.w == nil {
		a.w = a.app.NewWindow(s.Title)
		heading := widget.NewLabelWithStyle(model.AppName, fyne.TextAlignLeading, fyne.TextStyle{Bold: true})
		a.lines = widget.NewLabel("")
		a.lines.Wrapping = fyne.TextWrapWord
		closeBtn := widget.NewButton("Close", a.w.Hide)
		a.w.SetContent(container.NewVBox(heading, a.lines, container.NewHBox(layout.NewSpacer(), closeBtn)))
		a.w.SetCloseIntercept(a.w.Hide) // hide, never close: fyne quits with its last window
		a.w.Resize(fyne.NewSize(440, 0))
	}
	a.w.SetTitle(s.Title)
	a.lines.SetText(strings.Join(s.Lines, "\n"))
	a.w.Show()
	a.w.RequestFocus()
	repaintSoon(a.w)
}

// repaintSoon redraws w's content a few times shortly after it is shown. Without a window
// manager (Xvfb) the frame fyne draws while the window is being mapped can be lost, and a
// window with nothing animated in it (no blinking cursor) then stays black.
// The redraws take repaintMu: once the app shuts down, fyne.Do runs its function on the
// calling goroutine, and two windows' redraws would then lay out at the same time.
func repaintSoon(w fyne.Window) {
	go func() {
		for _, d := range []time.Duration{100 * time.Millisecond, 400 * time.Millisecond, time.Second} {
			time.Sleep(d)
			repaintMu.Lock()
			fyne.Do(func() { w.Content().Refresh() })
			repaintMu.Unlock()
		}
	}()
}

var repaintMu sync.Mutex
