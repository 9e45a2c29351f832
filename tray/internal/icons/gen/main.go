// Command gen writes the tray's icons: the embedded tray PNGs and the hicolor theme icons.
// Run it through `go generate ./tray/internal/icons`.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/plugvault/plugvault/tray/internal/icons"
)

func main() {
	trayDir := flag.String("tray", "", "directory for the embedded tray PNGs")
	hicolor := flag.String("hicolor", "", "hicolor theme directory")
	flag.Parse()
	if *trayDir == "" || *hicolor == "" {
		fmt.Fprintln(os.Stderr, "usage: gen -tray DIR -hicolor DIR")
		os.Exit(2)
	}
	if err := write(*trayDir, icons.TrayFiles()); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
	if err := write(*hicolor, icons.ThemeFiles()); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func write(dir string, files map[string]func() ([]byte, error)) error {
	for name, render := range files {
		b, err := render()
		if err != nil {
			return err
		}
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("cannot create %s: %w", filepath.Dir(p), err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return fmt.Errorf("cannot write %s: %w", p, err)
		}
	}
	return nil
}
