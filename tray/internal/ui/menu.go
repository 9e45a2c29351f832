package ui

import (
	"slices"

	"fyne.io/systray"

	"github.com/plugvault/plugvault/tray/internal/model"
)

// menu mirrors the model's menu into fyne.io/systray. Items keep their dbusmenu ids while the
// set of keys stays the same (only labels and enabled flags change); when drives come or go
// the menu is rebuilt, because systray can only append.
type menu struct {
	post  func(model.Event)
	keys  []model.MenuKey
	items map[model.MenuKey]*systray.MenuItem
	shown map[model.MenuKey]model.MenuItem
}

func newMenu(post func(model.Event)) *menu {
	return &menu{post: post}
}

// set is called from the controller goroutine only.
func (m *menu) set(items []model.MenuItem) {
	keys := make([]model.MenuKey, len(items))
	for i, it := range items {
		keys[i] = it.Key
	}
	if !slices.Equal(keys, m.keys) {
		m.rebuild(items)
		m.keys = keys
		return
	}
	for _, it := range items {
		mi, old := m.items[it.Key], m.shown[it.Key]
		if mi == nil {
			continue // separator
		}
		if it.Label != old.Label {
			mi.SetTitle(it.Label)
		}
		if it.Enabled != old.Enabled {
			if it.Enabled {
				mi.Enable()
			} else {
				mi.Disable()
			}
		}
		m.shown[it.Key] = it
	}
}

func (m *menu) rebuild(items []model.MenuItem) {
	systray.ResetMenu() // closes the old items' click channels, ending their listeners
	m.items = map[model.MenuKey]*systray.MenuItem{}
	m.shown = map[model.MenuKey]model.MenuItem{}
	for _, it := range items {
		m.shown[it.Key] = it
		if it.Separator() {
			systray.AddSeparator()
			continue
		}
		mi := systray.AddMenuItem(it.Label, "")
		if !it.Enabled {
			mi.Disable()
		}
		m.items[it.Key] = mi
		// systray drops a click when nobody is receiving: listen all the time.
		go func(key model.MenuKey, ch <-chan struct{}) {
			for range ch {
				m.post(model.MenuClicked{Key: key})
			}
		}(it.Key, mi.ClickedCh)
	}
}
