package config

import (
	"os/user"
	"testing"
)

// SetLookupUser replaces the run_as lookup for the duration of the test.
func SetLookupUser(t *testing.T, f func(string) (*user.User, error)) {
	old := lookupUser
	lookupUser = f
	t.Cleanup(func() { lookupUser = old })
}

// SetKeyOwner makes CheckKeyfile expect uid as the owner for the duration of the test.
func SetKeyOwner(t *testing.T, uid uint32) {
	old := keyOwnerUID
	keyOwnerUID = uid
	t.Cleanup(func() { keyOwnerUID = old })
}

// KeyTypes lists every key of the file, for the documentation tests.
func KeyTypes() map[string]string { return keyTypes }

// Parse exposes parse for table tests on in-memory files.
var Parse = parse
