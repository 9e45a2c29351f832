package config_test

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/plugvault/plugvault/service/internal/config"
)

// FuzzParse: any input either fails with messages or yields a configuration that validates.
func FuzzParse(f *testing.F) {
	f.Add(config.Example)
	f.Add([]byte(commented))
	f.Add([]byte("version = 1\n[drive]\nname = 1\n"))
	f.Add([]byte("version = 1\n[[drive]]\nretention = { weekly_weeks = -1 }\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fakeUsers(t)
		c, err := config.Parse("config.toml", data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted a configuration that Validate refuses: %v", err)
		}
	})
}

// FuzzRemoveDrive: removing the first drive of a valid file leaves a valid file with exactly
// the other drives, or refuses and leaves the file as it was.
func FuzzRemoveDrive(f *testing.F) {
	f.Add([]byte(commented))
	f.Add(config.Example)
	f.Add([]byte("version = 1\n# a\n[[drive]]\nname = \"1\"\nluks_uuid = \"" + uuidA + "\"\n# b\n[[drive]]\nname = \"2\"\nluks_uuid = \"" + uuidB + "\"\n[drive.retention]\ndaily_days = 3\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fakeUsers(t)
		before, err := config.Parse("config.toml", data)
		if err != nil || len(before.Drives) == 0 {
			return
		}
		path := filepath.Join(t.TempDir(), "config.toml")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := config.RemoveDrive(path, before.Drives[0].LuksUUID); err != nil {
			if got, _ := os.ReadFile(path); string(got) != string(data) {
				t.Fatalf("RemoveDrive failed (%v) and changed the file", err)
			}
			return
		}
		after, err := config.Load(path)
		if err != nil {
			t.Fatalf("RemoveDrive wrote a file that does not load: %v", err)
		}
		want := before.Drives[1:]
		if len(want) == 0 {
			want = nil
		}
		if !reflect.DeepEqual(after.Drives, want) {
			t.Fatalf("after RemoveDrive the drives are %+v, want %+v", after.Drives, want)
		}
	})
}
