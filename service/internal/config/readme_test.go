package config_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/plugvault/plugvault/service/internal/config"
)

// TestReadmeDocumentsEveryKey keeps the README's configuration reference complete: every key
// the decoder accepts (and so every key of example.toml, see TestExampleDocumentsEveryKey) has
// a row, written as `drive.retention.daily_days`, `[[drive]]` or `[drive.retention]`.
func TestReadmeDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	for key := range config.KeyTypes() {
		want := "| `" + key + "` |"
		switch key {
		case "drive":
			want = "| `[[drive]]` |"
		case "drive.retention":
			want = "| `[drive.retention]` |"
		}
		if !strings.Contains(readme, want) {
			t.Errorf("README.md has no configuration row for %s (looked for %q)", key, want)
		}
	}
}

// TestKeyTypesMatchStruct ties the documented key list to the struct the decoder fills, so a
// new field cannot go undocumented in the example and the README.
func TestKeyTypesMatchStruct(t *testing.T) {
	got := map[string]bool{}
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			key := prefix + name
			got[key] = true
			ft := f.Type
			if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				walk(key+".", ft)
			}
		}
	}
	walk("", reflect.TypeOf(config.Config{}))
	for key := range config.KeyTypes() {
		if !got[key] {
			t.Errorf("documented key %s is not in the Config struct", key)
		}
		delete(got, key)
	}
	for key := range got {
		t.Errorf("Config has key %s that keyTypes (and so the example and README) does not document", key)
	}
}
