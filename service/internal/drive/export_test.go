package drive

import "github.com/plugvault/plugvault/service/api"

// SetOnEvent installs a hook called after each live udev event was handled (tests only).
func (m *Manager) SetOnEvent(f func(Event)) { m.onEvent = f }

// SetOnQueue installs a hook called, with the Manager's lock held, as each status is queued for
// the Publisher (tests only).
func (m *Manager) SetOnQueue(f func(uuid string, st api.DriveStatus)) { m.onQueue = f }

// UnlockDelay exposes unlockDelay to the tests.
var UnlockDelay = unlockDelay

// GroupDigits exposes groupDigits to the tests.
var GroupDigits = groupDigits

// ListMappings exposes listMappings to the tests.
var ListMappings = listMappings
