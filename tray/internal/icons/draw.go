// Package icons draws and embeds the tray's icons: a USB stick whose colour and glyph say the
// state (idle, working with progress, needs attention, safe to remove, service not running).
//
// Draw renders an icon at any size with plain Go (supersampled shapes, no fonts or SVG), so
// the PNGs are reproducible: `go generate` runs ./gen, which writes the tray's embedded PNGs
// (png/) and the hicolor theme icons under desktop/icons, and a test fails when the
// committed files drift from Draw.
package icons

import (
	"image"
	"image/color"
	"math"

	"github.com/plugvault/plugvault/tray/internal/model"
)

// Sizes are the hicolor sizes installed under desktop/icons.
var Sizes = []int{16, 22, 24, 32, 48}

// TraySize is the size of the pixmap the tray hands to the StatusNotifierItem host (hosts scale
// it to the panel).
const TraySize = 32

type shape func(x, y float64) bool

func rect(x0, y0, x1, y1 float64) shape {
	return func(x, y float64) bool { return x >= x0 && x <= x1 && y >= y0 && y <= y1 }
}

func roundRect(x0, y0, x1, y1, r float64) shape {
	return func(x, y float64) bool {
		if x < x0 || x > x1 || y < y0 || y > y1 {
			return false
		}
		cx := math.Max(x0+r, math.Min(x, x1-r))
		cy := math.Max(y0+r, math.Min(y, y1-r))
		return math.Hypot(x-cx, y-cy) <= r
	}
}

func circle(cx, cy, r float64) shape {
	return func(x, y float64) bool { return math.Hypot(x-cx, y-cy) <= r }
}

func ring(cx, cy, r, w float64) shape {
	return func(x, y float64) bool { d := math.Hypot(x-cx, y-cy); return d <= r+w/2 && d >= r-w/2 }
}

// seg is a thick line with round caps.
func seg(ax, ay, bx, by, w float64) shape {
	return func(x, y float64) bool {
		dx, dy := bx-ax, by-ay
		t := ((x-ax)*dx + (y-ay)*dy) / (dx*dx + dy*dy)
		t = math.Max(0, math.Min(1, t))
		return math.Hypot(x-(ax+t*dx), y-(ay+t*dy)) <= w/2
	}
}

func triangle(ax, ay, bx, by, cx, cy float64) shape {
	side := func(px, py, qx, qy, x, y float64) float64 { return (qx-px)*(y-py) - (qy-py)*(x-px) }
	return func(x, y float64) bool {
		d1, d2, d3 := side(ax, ay, bx, by, x, y), side(bx, by, cx, cy, x, y), side(cx, cy, ax, ay, x, y)
		neg := d1 < 0 || d2 < 0 || d3 < 0
		pos := d1 > 0 || d2 > 0 || d3 > 0
		return !(neg && pos)
	}
}

func union(ss ...shape) shape {
	return func(x, y float64) bool {
		for _, s := range ss {
			if s(x, y) {
				return true
			}
		}
		return false
	}
}

func and(a, b shape) shape { return func(x, y float64) bool { return a(x, y) && b(x, y) } }

// canvas composites shapes in premultiplied float RGBA.
type canvas struct {
	size int
	px   [][4]float64
}

const samples = 8 // per axis and pixel

func (c *canvas) paint(col color.NRGBA, s shape) {
	a := float64(col.A) / 255
	r, g, b := float64(col.R)/255*a, float64(col.G)/255*a, float64(col.B)/255*a
	n := float64(c.size)
	for py := 0; py < c.size; py++ {
		for px := 0; px < c.size; px++ {
			hit := 0
			for sy := 0; sy < samples; sy++ {
				for sx := 0; sx < samples; sx++ {
					x := (float64(px) + (float64(sx)+0.5)/samples) / n
					y := (float64(py) + (float64(sy)+0.5)/samples) / n
					if s(x, y) {
						hit++
					}
				}
			}
			if hit == 0 {
				continue
			}
			cov := float64(hit) / (samples * samples)
			p := &c.px[py*c.size+px]
			k := 1 - a*cov
			p[0] = r*cov + p[0]*k
			p[1] = g*cov + p[1]*k
			p[2] = b*cov + p[2]*k
			p[3] = a*cov + p[3]*k
		}
	}
}

func (c *canvas) image() *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, c.size, c.size))
	for i, p := range c.px {
		if p[3] == 0 {
			continue
		}
		to8 := func(v float64) uint8 { return uint8(math.Round(math.Max(0, math.Min(1, v)) * 255)) }
		img.Pix[i*4+0] = to8(p[0] / p[3])
		img.Pix[i*4+1] = to8(p[1] / p[3])
		img.Pix[i*4+2] = to8(p[2] / p[3])
		img.Pix[i*4+3] = to8(p[3])
	}
	return img
}

func hex(v uint32) color.NRGBA {
	return color.NRGBA{R: uint8(v >> 16), G: uint8(v >> 8), B: uint8(v), A: 255}
}

var (
	white    = hex(0xffffff)
	bodyIdle = hex(0x546e7a)
	bodyWork = hex(0x1e88e5)
	workDark = hex(0x0d47a1)
	workPale = hex(0xbbdefb)
	bodyAttn = hex(0xef6c00)
	bodySafe = hex(0x2e7d32)
	bodyOff  = hex(0x9e9e9e)
	slashRed = hex(0xd32f2f)
)

// Geometry of the stick, in units of the icon's size.
const (
	bodyX0, bodyY0, bodyX1, bodyY1 = 0.17, 0.22, 0.83, 0.97
	glyphX, glyphY                 = 0.5, 0.6
)

// Draw renders icon at size×size pixels. step is the progress shown by the working icon
// (0…model.ProgressSteps), or -1 for none; other icons ignore it.
func Draw(icon model.Icon, size, step int) *image.NRGBA {
	c := &canvas{size: size, px: make([][4]float64, size*size)}
	body := roundRect(bodyX0, bodyY0, bodyX1, bodyY1, 0.13)
	col := map[model.Icon]color.NRGBA{model.IconIdle: bodyIdle, model.IconWorking: bodyWork,
		model.IconAttention: bodyAttn, model.IconSafe: bodySafe, model.IconOffline: bodyOff}[icon]
	progress := icon == model.IconWorking && step >= 0
	// Connector with its two contact windows.
	c.paint(darker(col), rect(0.33, 0.03, 0.67, 0.25))
	c.paint(white, union(rect(0.40, 0.09, 0.47, 0.16), rect(0.53, 0.09, 0.60, 0.16)))
	if progress {
		if step > model.ProgressSteps {
			step = model.ProgressSteps
		}
		c.paint(workPale, body)
		top := bodyY1 - (bodyY1-bodyY0)*float64(step)/model.ProgressSteps
		c.paint(bodyWork, and(body, rect(0, top, 1, 1)))
	} else {
		c.paint(col, body)
	}
	switch icon {
	case model.IconIdle, model.IconOffline:
		// A vault dial.
		c.paint(white, union(ring(glyphX, glyphY, 0.16, 0.075), seg(glyphX, glyphY, glyphX, glyphY-0.12, 0.075)))
	case model.IconWorking:
		arrow := union(triangle(glyphX, 0.34, glyphX-0.2, 0.58, glyphX+0.2, 0.58), rect(glyphX-0.06, 0.56, glyphX+0.06, 0.84))
		if progress {
			c.paint(workDark, arrow)
		} else {
			c.paint(white, arrow)
		}
	case model.IconAttention:
		c.paint(white, union(seg(glyphX, 0.38, glyphX, 0.68, 0.11), circle(glyphX, 0.83, 0.065)))
	case model.IconSafe:
		c.paint(white, union(seg(0.32, 0.62, 0.45, 0.75, 0.1), seg(0.45, 0.75, 0.70, 0.45, 0.1)))
	}
	if icon == model.IconOffline {
		c.paint(white, seg(0.12, 0.12, 0.88, 0.88, 0.2))
		c.paint(slashRed, seg(0.12, 0.12, 0.88, 0.88, 0.11))
	}
	return c.image()
}

func darker(c color.NRGBA) color.NRGBA {
	return color.NRGBA{R: uint8(float64(c.R) * 0.7), G: uint8(float64(c.G) * 0.7), B: uint8(float64(c.B) * 0.7), A: 255}
}
