package daemon_test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/apitest"
	"github.com/plugvault/plugvault/service/internal/enroll"
	"github.com/plugvault/plugvault/service/internal/testbus"
)

// Enroll takes no path for the header backup: a caller naming a file (in a directory only
// root may write, or through a symlinked directory, over a file that exists) is refused before
// the enroller runs, and nothing is created or removed there.
func TestEnrollHeaderBackupTakesNoPath(t *testing.T) {
	env := startEnv(t, testbus.EnvOptions{})
	ctx := ctxT(t)
	dev := blockDevice(t)
	rootDir := filepath.Join(t.TempDir(), "profile.d")
	if err := os.Mkdir(rootDir, 0o755); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(rootDir, "victim")
	if err := os.WriteFile(victim, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(rootDir, link); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{
		filepath.Join(rootDir, "plugvault.sh"), // a new file in a root-only directory
		filepath.Join(link, "plugvault.sh"),    // the same through a symlinked directory
		filepath.Join(link, "victim"),          // an existing file through the symlink
	} {
		env.Backend.Reset()
		_, header, err := env.Client.Enroll(ctx, dev, []byte("pw"), api.Options{api.OptHeaderBackup: path})
		wantErr(t, path, err, api.ErrInvalidArgument)
		if len(header) != 0 {
			t.Errorf("%s: got a header backup of %d bytes", path, len(header))
		}
		if calls := env.Backend.Calls(); len(calls) != 0 {
			t.Errorf("%s: the enroller ran: %v", path, calls)
		}
	}
	entries, err := os.ReadDir(rootDir)
	if err != nil || len(entries) != 1 || entries[0].Name() != "victim" {
		t.Errorf("the directory holds %v (%v), want only the victim", entries, err)
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != "keep" {
		t.Errorf("the victim is %q, %v", b, err)
	}
}

// With header_backup true, the header backup the enroller made comes back in the reply.
func TestEnrollReturnsTheHeaderBackup(t *testing.T) {
	env := startEnv(t, testbus.EnvOptions{})
	ctx := ctxT(t)
	dev := blockDevice(t)
	for i, want := range []bool{true, false} {
		env.Backend.Reset()
		env.Backend.SetEnrollUUID(fmt.Sprintf("0b8c6f2e-2222-4a4a-9f9f-12345678900%d", i))
		_, header, err := env.Client.Enroll(ctx, dev, []byte("pw"), api.Options{api.OptHeaderBackup: want})
		if err != nil {
			t.Fatal(err)
		}
		calls := env.Backend.Calls()
		if len(calls) != 1 || calls[0].Args[0].(enroll.Request).HeaderBackup != want {
			t.Fatalf("header_backup %v: backend calls %+v", want, calls)
		}
		if wantHeader := map[bool][]byte{true: apitest.FakeHeaderBackup}[want]; !bytes.Equal(header, wantHeader) {
			t.Errorf("header_backup %v: reply carries %q, want %q", want, header, wantHeader)
		}
	}
}

// A header backup of the size luksFormat makes (16 MiB for LUKS2) fits in the reply: the
// bus's 32 MiB message limit holds it in base64.
func TestEnrollReturnsAFullSizeHeaderBackup(t *testing.T) {
	env := startEnv(t, testbus.EnvOptions{})
	ctx := ctxT(t)
	header := make([]byte, 16<<20)
	if _, err := rand.Read(header); err != nil {
		t.Fatal(err)
	}
	env.Backend.SetHeaderBackup(header)
	_, got, err := env.Client.Enroll(ctx, blockDevice(t), []byte("pw"), api.Options{api.OptHeaderBackup: true})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, header) {
		t.Errorf("the header backup came back with %d bytes, not the %d the enroller made", len(got), len(header))
	}
}
