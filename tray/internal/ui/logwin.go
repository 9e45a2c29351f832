package ui

import (
	"strings"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/widget"

	"github.com/plugvault/plugvault/tray/internal/model"
)

// logWindow shows a drive's recent events as the tray saw them (see model's package comment
// for why this and not journalctl). Its methods run on the fyne thread.
type logWindow struct {
	app     fyne.App
	onClose func()
	w       fyne.Window
	text    *widget.Label
	scroll  *container.Scroll
}

func newLogWindow(a fyne.App, onClose func()) *logWindow {
	return &logWindow{app: a, onClose: onClose}
}

func (l *logWindow) show(a model.ShowLog) {
	if l.w == nil {
		l.w = l.app.NewWindow("plugvault log")
		l.text = widget.NewLabel("")
		l.text.TextStyle = fyne.TextStyle{Monospace: true}
		l.scroll = container.NewVScroll(l.text)
		hint := widget.NewLabel("The service's own log: journalctl -u plugvaultd")
		l.w.SetContent(container.NewBorder(nil, hint, nil, nil, l.scroll))
		l.w.SetCloseIntercept(func() {
			l.w.Hide()
			l.onClose()
		})
		l.w.Resize(fyne.NewSize(720, 420))
	}
	l.w.SetTitle(a.Title)
	text := strings.Join(a.Lines, "\n")
	if text == "" {
		text = "Nothing happened to this drive since the tray started."
	}
	l.text.SetText(text)
	l.scroll.ScrollToBottom()
	l.w.Show()
	repaintSoon(l.w)
}
