package icons

import (
	"bytes"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"github.com/plugvault/plugvault/tray/internal/model"
)

// TestCommittedIconsMatchDraw fails when the committed PNGs drift from Draw: run
// `go generate ./tray/internal/icons` and commit the result.
func TestCommittedIconsMatchDraw(t *testing.T) {
	check := func(dir string, files map[string]func() ([]byte, error)) {
		for name, render := range files {
			want, err := render()
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Errorf("%v (run go generate ./tray/internal/icons)", err)
				continue
			}
			// Compare pixels, not bytes: another Go version may compress the same image
			// differently.
			if !samePixels(t, got, want) {
				t.Errorf("%s/%s differs from Draw (run go generate ./tray/internal/icons)", dir, name)
			}
		}
	}
	check("png", TrayFiles())
	check("../../../desktop/icons/hicolor", ThemeFiles())
}

func TestTrayIconsDecode(t *testing.T) {
	seen := map[string]bool{}
	for _, ic := range model.Icons {
		for step := -1; step <= model.ProgressSteps+1; step++ {
			b := Tray(ic, step)
			img, err := png.Decode(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("%s step %d: %v", ic.Name(), step, err)
			}
			if img.Bounds().Dx() != TraySize || img.Bounds().Dy() != TraySize {
				t.Errorf("%s: %v", ic.Name(), img.Bounds())
			}
			seen[string(b)] = true
		}
	}
	// Five states plus the working icon at 0…ProgressSteps: all distinct.
	if want := len(model.Icons) + model.ProgressSteps + 1; len(seen) != want {
		t.Errorf("%d distinct tray icons, want %d", len(seen), want)
	}
}

// TestStatesLookDifferent: at the smallest size every state still differs from every other
// in many pixels, and the stick is opaque in its middle and transparent in its corners.
func TestStatesLookDifferent(t *testing.T) {
	for _, size := range Sizes {
		for i, a := range model.Icons {
			ia := Draw(a, size, -1)
			if ia.NRGBAAt(size/2, size*3/4).A != 255 || ia.NRGBAAt(0, size-1).A != 0 {
				t.Errorf("%s at %d: body not opaque or corner not transparent", a.Name(), size)
			}
			for _, b := range model.Icons[i+1:] {
				ib := Draw(b, size, -1)
				diff := 0
				for k := 0; k < len(ia.Pix); k += 4 {
					if !bytes.Equal(ia.Pix[k:k+4], ib.Pix[k:k+4]) {
						diff++
					}
				}
				if diff < size*size/8 {
					t.Errorf("%s and %s differ in only %d pixels at %d px", a.Name(), b.Name(), diff, size)
				}
			}
		}
	}
}

func samePixels(t *testing.T, a, b []byte) bool {
	t.Helper()
	ia, err := png.Decode(bytes.NewReader(a))
	if err != nil {
		t.Errorf("committed icon: %v", err)
		return false
	}
	ib, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if ia.Bounds() != ib.Bounds() {
		return false
	}
	for y := ia.Bounds().Min.Y; y < ia.Bounds().Max.Y; y++ {
		for x := ia.Bounds().Min.X; x < ia.Bounds().Max.X; x++ {
			if color.NRGBAModel.Convert(ia.At(x, y)) != color.NRGBAModel.Convert(ib.At(x, y)) {
				return false
			}
		}
	}
	return true
}
