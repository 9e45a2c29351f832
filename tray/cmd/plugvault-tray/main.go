// Command plugvault-tray is the unprivileged tray app of plugvault (placeholder until the tray
// issue lands: it links the GUI libraries so the build cache is warm, and refuses to run).
package main

import (
	"fmt"
	"os"

	_ "fyne.io/fyne/v2/app"
	_ "fyne.io/fyne/v2/widget"
	_ "fyne.io/systray"
)

func main() {
	fmt.Fprintln(os.Stderr, "plugvault-tray: not implemented yet")
	os.Exit(1)
}
