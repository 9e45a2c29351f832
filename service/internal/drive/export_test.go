package drive

// SetOnEvent installs a hook called after each live udev event was handled (tests only).
func (m *Manager) SetOnEvent(f func(Event)) { m.onEvent = f }

// UnlockDelay exposes unlockDelay to the tests.
var UnlockDelay = unlockDelay

// GroupDigits exposes groupDigits to the tests.
var GroupDigits = groupDigits

// ListMappings exposes listMappings to the tests.
var ListMappings = listMappings
