package icons

import (
	"bytes"
	"embed"
	"fmt"
	"image/png"

	"github.com/plugvault/plugvault/tray/internal/model"
)

//go:generate go run ./gen -tray png -hicolor ../../../desktop/icons/hicolor

//go:embed png
var files embed.FS

// TrayFile is the name of the embedded tray PNG for icon and progress step (see Draw).
func TrayFile(icon model.Icon, step int) string {
	if icon == model.IconWorking && step >= 0 {
		if step > model.ProgressSteps {
			step = model.ProgressSteps
		}
		return fmt.Sprintf("%s-%d.png", icon.Name(), step)
	}
	return icon.Name() + ".png"
}

// Tray returns the PNG the tray shows for icon and progress step.
func Tray(icon model.Icon, step int) []byte {
	b, err := files.ReadFile("png/" + TrayFile(icon, step))
	if err != nil {
		panic("internal error: icon not embedded: " + err.Error()) // the drift test covers every file
	}
	return b
}

// EncodePNG renders an icon as PNG bytes (what gen writes).
func EncodePNG(icon model.Icon, size, step int) ([]byte, error) {
	var buf bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.BestCompression}
	if err := enc.Encode(&buf, Draw(icon, size, step)); err != nil {
		return nil, fmt.Errorf("cannot encode %s: %w", icon.Name(), err)
	}
	return buf.Bytes(), nil
}

// TrayFiles lists every embedded tray icon: each state, and the working icon at each step.
func TrayFiles() map[string]func() ([]byte, error) {
	m := map[string]func() ([]byte, error){}
	for _, ic := range model.Icons {
		ic := ic
		m[TrayFile(ic, -1)] = func() ([]byte, error) { return EncodePNG(ic, TraySize, -1) }
	}
	for s := 0; s <= model.ProgressSteps; s++ {
		s := s
		m[TrayFile(model.IconWorking, s)] = func() ([]byte, error) { return EncodePNG(model.IconWorking, TraySize, s) }
	}
	return m
}

// ThemeFiles lists every hicolor theme icon by its path under the hicolor directory
// ("32x32/apps/plugvault-safe.png"); "plugvault" is the application icon (the idle stick).
func ThemeFiles() map[string]func() ([]byte, error) {
	m := map[string]func() ([]byte, error){}
	for _, size := range Sizes {
		size := size
		dir := fmt.Sprintf("%dx%d/apps/", size, size)
		for _, ic := range model.Icons {
			ic := ic
			m[dir+ic.Name()+".png"] = func() ([]byte, error) { return EncodePNG(ic, size, -1) }
		}
		m[dir+"plugvault.png"] = func() ([]byte, error) { return EncodePNG(model.IconIdle, size, -1) }
	}
	return m
}
