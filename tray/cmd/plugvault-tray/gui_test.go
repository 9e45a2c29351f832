package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/service/api/apitest"
	"github.com/plugvault/plugvault/tray/internal/icons"
	"github.com/plugvault/plugvault/tray/internal/model"
	"github.com/plugvault/plugvault/tray/internal/traytest"
)

// waitLimit bounds every wait for the tray; it only turns a hang into a failure.
const waitLimit = 20 * time.Second

const nobody = 65534

// buildTray builds the real binary with exactly `go build -race`, the flags `go test -race`
// uses, so both share the build cache (fyne's cgo build takes minutes when cold).
func buildTray(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pvtraybin")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil { // the tray runs as nobody when tests run as root
		t.Fatal(err)
	}
	// go test puts $GOROOT/bin first in the test's PATH, so this is the go that runs the tests.
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("cannot find the go command: %v", err)
	}
	bin := filepath.Join(dir, "plugvault-tray")
	cmd := exec.Command(goBin, "build", "-race", "-o", bin, "github.com/plugvault/plugvault/tray/cmd/plugvault-tray")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cannot build plugvault-tray: %v\n%s", err, out)
	}
	return bin
}

// syncBuffer collects the tray's stderr.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor re-checks cond until it holds; the limit only turns a hang into a failure.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: still %s", what, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sni reads the tray's StatusNotifierItem and dbusmenu as a panel would.
type sni struct {
	t    *testing.T
	item dbus.BusObject
	menu dbus.BusObject
}

func (s *sni) prop(name string) dbus.Variant {
	s.t.Helper()
	v, err := s.item.GetProperty("org.kde.StatusNotifierItem." + name)
	if err != nil {
		s.t.Fatalf("cannot read %s: %v", name, err)
	}
	return v
}

func (s *sni) tooltip() string {
	var tt struct {
		Name  string
		Icons []struct {
			W, H int32
			Pix  []byte
		}
		Title, Text string
	}
	if err := s.prop("ToolTip").Store(&tt); err != nil {
		s.t.Fatalf("ToolTip: %v", err)
	}
	return tt.Title
}

type pixmap struct {
	W, H int32
	Pix  []byte
}

func (s *sni) icon() pixmap {
	var px []pixmap
	if err := s.prop("IconPixmap").Store(&px); err != nil || len(px) == 0 {
		s.t.Fatalf("IconPixmap: %v %d", err, len(px))
	}
	return px[0]
}

// argb converts a tray PNG the way fyne.io/systray does before it publishes IconPixmap.
func argb(t *testing.T, pngBytes []byte) []byte {
	img, err := png.Decode(bytes.NewReader(pngBytes))
	if err != nil {
		t.Fatal(err)
	}
	b := img.Bounds()
	out := make([]byte, 0, b.Dx()*b.Dy()*4)
	for y := 0; y < b.Dy(); y++ {
		for x := 0; x < b.Dx(); x++ {
			r, g, bl, a := img.At(x, y).RGBA()
			out = append(out, byte(a), byte(r), byte(g), byte(bl))
		}
	}
	return out
}

// iconIs reports whether the published pixmap is the given icon and step.
func (s *sni) iconIs(ic model.Icon, step int) (bool, string) {
	px := s.icon()
	want := argb(s.t, icons.Tray(ic, step))
	if bytes.Equal(px.Pix, want) {
		return true, ""
	}
	for _, c := range model.Icons {
		for st := -1; st <= model.ProgressSteps; st++ {
			if bytes.Equal(px.Pix, argb(s.t, icons.Tray(c, st))) {
				return false, fmt.Sprintf("icon %s step %d", c.Name(), st)
			}
		}
	}
	return false, "an unknown icon"
}

// saveIcon writes the published pixmap (ARGB32, big endian) as a PNG artifact.
func (s *sni) saveIcon(path string) {
	px := s.icon()
	img := image.NewNRGBA(image.Rect(0, 0, int(px.W), int(px.H)))
	for i := 0; i+3 < len(px.Pix); i += 4 {
		img.Set((i/4)%int(px.W), (i/4)/int(px.W), color.NRGBA{A: px.Pix[i], R: px.Pix[i+1], G: px.Pix[i+2], B: px.Pix[i+3]})
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		s.t.Fatal(err)
	}
}

type entry struct {
	ID        int32
	Label     string
	Enabled   bool
	Visible   bool
	Separator bool
}

func (s *sni) layout() []entry {
	s.t.Helper()
	var rev uint32
	var root struct {
		ID       int32
		Props    map[string]dbus.Variant
		Children []dbus.Variant
	}
	if err := s.menu.Call("com.canonical.dbusmenu.GetLayout", 0, int32(0), int32(-1), []string{}).Store(&rev, &root); err != nil {
		s.t.Fatalf("GetLayout: %v", err)
	}
	var out []entry
	for _, c := range root.Children {
		f, ok := c.Value().([]any)
		if !ok || len(f) != 3 {
			s.t.Fatalf("menu item of unexpected shape %v", c)
		}
		props, _ := f[1].(map[string]dbus.Variant)
		e := entry{ID: f[0].(int32), Enabled: true, Visible: true}
		if v, ok := props["label"]; ok {
			e.Label, _ = v.Value().(string)
		}
		if v, ok := props["enabled"]; ok {
			e.Enabled, _ = v.Value().(bool)
		}
		if v, ok := props["visible"]; ok {
			e.Visible, _ = v.Value().(bool)
		}
		if v, ok := props["type"]; ok {
			e.Separator = v.Value() == "separator"
		}
		out = append(out, e)
	}
	return out
}

// section returns the menu items of the drive whose status line contains name, by label. A
// section is the status line, a separator, the drive's items and a separator; a status line
// that is not followed by a separator is reported as an item under the key "" so that the
// caller sees the defect.
func (s *sni) section(name string) (status entry, items map[string]entry) {
	items = map[string]entry{}
	layout := s.layout()
	for i, e := range layout {
		if e.Separator || !strings.Contains(e.Label, name) {
			continue
		}
		status = e
		if i+1 >= len(layout) || !layout[i+1].Separator {
			items[""] = e
			return status, items
		}
		for _, e := range layout[i+2:] {
			if e.Separator {
				break
			}
			items[e.Label] = e
		}
		return status, items
	}
	return status, items
}

func (s *sni) click(id int32) {
	s.t.Helper()
	if err := s.menu.Call("com.canonical.dbusmenu.Event", 0, id, "clicked", dbus.MakeVariant(""), uint32(0)).Err; err != nil {
		s.t.Fatalf("Event clicked %d: %v", id, err)
	}
}

// clickItem waits until the drive's item is enabled, then clicks it.
func (s *sni) clickItem(drive, label string) {
	s.t.Helper()
	var e entry
	waitFor(s.t, label+" enabled for "+drive, func() (bool, string) {
		_, items := s.section(drive)
		e = items[label]
		return e.ID != 0 && e.Enabled, fmt.Sprintf("%+v", e)
	})
	s.click(e.ID)
}

func waitCall(t *testing.T, svc *apitest.FakeService, path dbus.ObjectPath, method string) apitest.Call {
	t.Helper()
	timeout := time.After(waitLimit)
	for {
		select {
		case c := <-svc.CallCh():
			if c.Path == path && c.Method == method {
				return c
			}
		case <-timeout:
			t.Fatalf("the service did not receive %s on %s; calls: %v", method, path, svc.Calls())
		}
	}
}

func waitNotification(t *testing.T, n *traytest.Notifications, summary string) traytest.Notification {
	t.Helper()
	var found traytest.Notification
	waitFor(t, "notification "+summary, func() (bool, string) {
		var got []string
		for _, x := range n.All() {
			if strings.HasPrefix(x.Summary, summary) {
				found = x
				return true, ""
			}
			got = append(got, x.Summary)
		}
		return false, fmt.Sprintf("%q", got)
	})
	return found
}

func xdotool(t *testing.T, display string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "xdotool", args...)
	cmd.Env = append(os.Environ(), "DISPLAY="+display)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// windowShot waits until the visible window titled title shows content (not one flat colour,
// as a window whose first frame is not drawn yet), saves that screenshot of the window to path
// and returns how many colours it has. The content, not the file, is what the test checks.
func windowShot(t *testing.T, display, title, path string) int {
	t.Helper()
	var colours int
	waitFor(t, "content in the window "+title, func() (bool, string) {
		out, err := xdotool(t, display, "search", "--onlyvisible", "--name", title)
		if err != nil {
			return false, "no such window: " + out
		}
		id := strings.Fields(out)[0]
		// Without a window manager windows overlap as they were mapped, and a screenshot of a
		// window shows whatever covers it: raise it first.
		if out, err := xdotool(t, display, "windowraise", id); err != nil {
			return false, fmt.Sprintf("xdotool windowraise: %v %s", err, out)
		}
		cmd := exec.Command("import", "-display", display, "-window", id, path)
		if out, err := cmd.CombinedOutput(); err != nil {
			return false, fmt.Sprintf("import: %v %s", err, out)
		}
		colours = countColours(t, path)
		black, all := blackPixels(t, path)
		return colours >= minColours && black*50 < all, fmt.Sprintf("%d colours, %d of %d pixels black in %s", colours, black, all, path)
	})
	return colours
}

// typeAndSubmit focuses the visible window titled title, types text into it (its focused
// entry) and presses Return, as a person would.
func typeAndSubmit(t *testing.T, display, title, text string) {
	t.Helper()
	for _, args := range [][]string{
		{"search", "--sync", "--onlyvisible", "--name", title, "windowfocus", "--sync"},
		{"type", "--delay", "15", text},
		{"key", "Return"},
	} {
		if out, err := xdotool(t, display, args...); err != nil {
			t.Fatalf("xdotool %v: %v %s", args[0], err, out)
		}
	}
}

// waitColour waits until a screenshot of the window titled title, saved at path, shows at
// least 20 pixels that count finds (text drawn in a theme colour).
func waitColour(t *testing.T, display, title, path, colour string, count func(*testing.T, string) int) {
	t.Helper()
	waitFor(t, colour+" text in "+title, func() (bool, string) {
		windowShot(t, display, title, path)
		n := count(t, path)
		return n >= 20, fmt.Sprintf("%d %s pixels", n, colour)
	})
}

// clickLastButton clicks the button in the bottom right corner of the visible window titled
// title, where the tray's windows have their main button.
func clickLastButton(t *testing.T, display, title string) {
	t.Helper()
	out, err := xdotool(t, display, "search", "--onlyvisible", "--name", title)
	if err != nil {
		t.Fatalf("no window %s: %v %s", title, err, out)
	}
	id := strings.Fields(out)[0]
	geo, err := xdotool(t, display, "getwindowgeometry", "--shell", id)
	if err != nil {
		t.Fatalf("xdotool getwindowgeometry: %v %s", err, geo)
	}
	var w, h int
	for _, l := range strings.Fields(geo) {
		fmt.Sscanf(l, "WIDTH=%d", &w)
		fmt.Sscanf(l, "HEIGHT=%d", &h)
	}
	if w < 40 || h < 40 {
		t.Fatalf("window %s is %dx%d", title, w, h)
	}
	if out, err := xdotool(t, display, "windowraise", id, "mousemove", "--window", id, "--sync", strconv.Itoa(w-24), strconv.Itoa(h-22), "click", "1"); err != nil {
		t.Fatalf("xdotool click: %v %s", err, out)
	}
}

// unmapWindow takes the visible window titled title off the screen, so that it cannot show
// through in a later window's screenshot (without a window manager nothing clears the pixels
// a window leaves behind, and a window that draws nothing would show them).
func unmapWindow(t *testing.T, display, title string) {
	t.Helper()
	out, err := xdotool(t, display, "search", "--onlyvisible", "--name", title)
	if err != nil {
		return
	}
	for _, id := range strings.Fields(out) {
		if out, err := xdotool(t, display, "windowunmap", "--sync", id); err != nil {
			t.Errorf("xdotool windowunmap %s: %v %s", id, err, out)
		}
	}
}

// minColours: a window with anti-aliased text has dozens of colours; an undrawn one has one.
// Undrawn parts of a window are pure black, which no theme colour is: at most 2% may be.
const minColours = 16

// blackPixels counts the pure black pixels of the PNG at path, and all of them.
func blackPixels(t *testing.T, path string) (black, all int) {
	t.Helper()
	eachPixel(t, path, func(r, g, b, _ uint8) {
		all++
		if r == 0 && g == 0 && b == 0 {
			black++
		}
	})
	return black, all
}

// redPixels counts clearly red pixels (the theme's error colour) in the PNG at path.
func redPixels(t *testing.T, path string) int {
	t.Helper()
	n := 0
	eachPixel(t, path, func(r, g, b, _ uint8) {
		if r > 180 && g < 110 && b < 110 {
			n++
		}
	})
	return n
}

// greenPixels counts clearly green pixels (the theme's success colour) in the PNG at path.
func greenPixels(t *testing.T, path string) int {
	t.Helper()
	n := 0
	eachPixel(t, path, func(r, g, b, _ uint8) {
		if g > 180 && r < 110 && b < 110 {
			n++
		}
	})
	return n
}

func countColours(t *testing.T, path string) int {
	t.Helper()
	seen := map[[4]uint8]bool{}
	eachPixel(t, path, func(r, g, b, a uint8) { seen[[4]uint8{r, g, b, a}] = true })
	return len(seen)
}

func eachPixel(t *testing.T, path string, visit func(r, g, b, a uint8)) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	r := img.Bounds()
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			cr, cg, cb, ca := img.At(x, y).RGBA()
			visit(uint8(cr>>8), uint8(cg>>8), uint8(cb>>8), uint8(ca>>8))
		}
	}
}

func blueStatus(st api.State) api.DriveStatus {
	return api.DriveStatus{Name: "Blue stick", LuksUUID: "b1e5a7c0-1111-4222-8333-444455556666", Label: "bluebackup",
		Vendor: "SanDisk", Model: "Ultra Fit", Serial: "4C530001230817", Present: st != api.StateAbsent, State: st,
		LastBackup: uint64(time.Now().Add(-2*time.Hour - time.Minute).Unix()), LastResult: api.ResultSuccess,
		EtaSeconds: -1, SnapshotCount: 12}
}

// TestTrayAsAPersonWouldUseIt runs the real plugvault-tray under Xvfb with a private session
// bus (a fake panel watcher and notification daemon) and a private system bus carrying the fake
// plugvaultd, and uses it through the StatusNotifierItem, the dbusmenu and the dialog window.
func TestTrayAsAPersonWouldUseIt(t *testing.T) {
	apitest.RequireTool(t, "dbus-daemon")
	apitest.RequireTool(t, "xdotool")
	apitest.RequireTool(t, "import")
	display := traytest.StartXvfb(t)
	artifacts := traytest.ArtifactDir(t)

	session := apitest.StartBus(t, apitest.BusOptions{Type: "session", Policy: traytest.OpenPolicy})
	system := apitest.StartBus(t, apitest.BusOptions{Policy: traytest.OpenPolicy})
	for _, d := range []string{session.Dir, system.Dir} {
		if err := os.Chmod(d, 0o755); err != nil { // reachable by nobody
			t.Fatal(err)
		}
	}
	panel := session.Conn(t)
	watcher := traytest.StartWatcher(t, panel)
	notes := traytest.StartNotifications(t, session.Conn(t))

	svc := apitest.StartFakeService(t, system)
	blue := svc.AddDrive(t, blueStatus(api.StateAbsent))
	red := blueStatus(api.StateAbsent)
	red.Name, red.LuksUUID, red.Serial = "Red stick", "2ed00000-aaaa-4bbb-8ccc-dddddddddddd", "RED0001"
	red.LastBackup = uint64(time.Now().Add(-10*24*time.Hour - time.Hour).Unix())
	svc.AddDrive(t, red)
	green := blueStatus(api.StateAbsent)
	green.Name, green.LuksUUID, green.Serial = "Green stick", "9ee00000-1111-4222-8333-999999999999", "GREEN01"
	greenPath := svc.AddDrive(t, green)

	// xdg-open stand-in: records the directory the tray opens.
	home, err := os.MkdirTemp("", "pvtrayhome")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	binDir := filepath.Join(home, "bin")
	opened := filepath.Join(home, "opened")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(binDir, "xdg-open"), []byte("#!/bin/sh\nprintf '%s\\n' \"$*\" >> "+opened+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(home, 0o777); err != nil {
		t.Fatal(err)
	}
	// The Green stick's passphrase check fell due a day ago: it is asked when the stick is
	// plugged in. The state directories belong to the tray's user (nobody, when run as root).
	stateDir := filepath.Join(home, ".local", "state", "plugvault")
	passChecks := filepath.Join(stateDir, "passphrase-checks.json")
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	due, err := json.Marshal(map[string]time.Time{green.LuksUUID: time.Now().Add(-24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(passChecks, due, 0o600); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		for _, p := range []string{filepath.Join(home, ".local"), filepath.Dir(stateDir), stateDir, passChecks} {
			if err := os.Chown(p, nobody, nobody); err != nil {
				t.Fatal(err)
			}
		}
	}

	bin := buildTray(t)
	var stderr syncBuffer
	cmd := exec.Command(bin)
	cmd.Env = []string{"PATH=" + binDir + ":/usr/local/bin:/usr/bin:/bin", "HOME=" + home, "DISPLAY=" + display,
		"DBUS_SESSION_BUS_ADDRESS=" + session.Address, "DBUS_SYSTEM_BUS_ADDRESS=" + system.Address, "LANG=C.UTF-8",
		// Race reports still print; checkRaces fails the test on every one that is not a known
		// bug of a library (the exit status would not tell which).
		"GORACE=exitcode=0"}
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		checkRaces(t, stderr.String())
		if t.Failed() {
			t.Logf("tray output:\n%s", stderr.String())
		}
	})

	var name string
	select {
	case name = <-watcher.Registered():
	case err := <-exited:
		t.Fatalf("the tray exited: %v\n%s", err, stderr.String())
	case <-time.After(waitLimit):
		t.Fatalf("the tray never registered with the StatusNotifierWatcher\n%s", stderr.String())
	}
	item := panel.Object(name, "/StatusNotifierItem")
	s := &sni{t: t, item: item}
	var menuPath dbus.ObjectPath
	if err := s.prop("Menu").Store(&menuPath); err != nil {
		t.Fatal(err)
	}
	s.menu = panel.Object(name, menuPath)
	// The panel shows Title as the item's name: the application entry's Name, capitalised.
	appName := readEntry(t, filepath.Join(desktopDir, "plugvault.desktop"))["Name"]
	if title := s.prop("Title").Value(); title != appName || appName != model.AppName {
		t.Errorf("Title %v; the application entry's Name %q; model.AppName %q", title, appName, model.AppName)
	}

	t.Run("idle and reminders", func(t *testing.T) {
		s.t = t
		waitFor(t, "the idle state", func() (bool, string) {
			tip := s.tooltip()
			return strings.Contains(tip, "Blue stick: Last backup 2 hours ago") && strings.Contains(tip, "Red stick: Last backup 10 days ago"), tip
		})
		waitFor(t, "the idle icon", func() (bool, string) { return s.iconIs(model.IconIdle, -1) })
		s.saveIcon(filepath.Join(artifacts, "icon-idle.png"))
		status, items := s.section("Blue stick")
		if status.Label != "Blue stick: Last backup 2 hours ago" {
			t.Errorf("first menu line %q", status.Label)
		}
		// What cannot apply to an absent drive is left out, not greyed.
		if len(items) != 1 || !items["Show log"].Enabled || status.Enabled {
			t.Errorf("absent drive: status %+v, items %+v; want only Show log", status, items)
		}

		n := waitNotification(t, notes, "No backup to Red stick for 10 days")
		if n.AppName != "plugvault" {
			t.Errorf("notification %+v", n)
		}
	})

	t.Run("back up now, progress, cancel", func(t *testing.T) {
		s.t = t
		svc.SetDrive(t, blue, blueStatus(api.StatePresent))
		s.clickItem("Blue stick", "Back up now")
		if c := waitCall(t, svc, blue, api.MethodBackupNow); !c.Interactive {
			t.Errorf("BackupNow without interactive authorization: %v", c)
		}
		st := blueStatus(api.StateBackingUp)
		st.Progress, st.BytesDone, st.BytesTotal, st.EtaSeconds = 0.42, 1_230_000_000, 2_900_000_000, 185
		svc.SetDrive(t, blue, st)
		waitFor(t, "the progress line", func() (bool, string) {
			tip := s.tooltip()
			return strings.Contains(tip, "Backing up to Blue stick: 42% · 1.2 of 2.9 GB · 3 min left"), tip
		})
		waitFor(t, "the working icon at 3/8", func() (bool, string) { return s.iconIs(model.IconWorking, 3) })
		s.saveIcon(filepath.Join(artifacts, "icon-working.png"))
		waitNotification(t, notes, "Backing up to Blue stick")
		_, items := s.section("Backing up to Blue stick")
		if len(items) != 3 || !items["Cancel backup"].Enabled || !items["Eject"].Enabled || !items["Show log"].Enabled {
			t.Errorf("menu while backing up: %+v; want Cancel backup, Eject, Show log", items)
		}
		s.clickItem("Backing up to Blue stick", "Cancel backup")
		if c := waitCall(t, svc, blue, api.MethodCancel); !c.Interactive {
			t.Errorf("Cancel without interactive authorization: %v", c)
		}
	})

	t.Run("safe to remove, browse, eject", func(t *testing.T) {
		s.t = t
		st := blueStatus(api.StateSafeToRemove)
		st.LastBackup = uint64(time.Now().Unix())
		svc.SetDrive(t, blue, st)
		waitNotification(t, notes, "Backup complete: safe to remove Blue stick")
		waitFor(t, "the safe icon", func() (bool, string) { return s.iconIs(model.IconSafe, -1) })
		s.saveIcon(filepath.Join(artifacts, "icon-safe.png"))
		if tip := s.tooltip(); !strings.Contains(tip, "Blue stick: Safe to remove") {
			t.Errorf("tooltip %q", tip)
		}
		svc.SetResult(api.MethodBrowse, "/run/plugvault/browse/b1e5a7c0")
		s.clickItem("Blue stick: Safe to remove", "Browse backups")
		waitCall(t, svc, blue, api.MethodBrowse)
		waitFor(t, "xdg-open on the read-only mount", func() (bool, string) {
			b, _ := os.ReadFile(opened)
			return string(b) == "/run/plugvault/browse/b1e5a7c0\n", fmt.Sprintf("%q", b)
		})
		s.clickItem("Blue stick: Safe to remove", "Eject")
		if c := waitCall(t, svc, blue, api.MethodEject); !c.Interactive {
			t.Errorf("Eject without interactive authorization: %v", c)
		}
		// A failed call is told, with what to do.
		svc.FailNext(api.MethodBackupNow, fmt.Errorf("a run is going on: %w", api.ErrBusy))
		s.clickItem("Blue stick: Safe to remove", "Back up now")
		waitCall(t, svc, blue, api.MethodBackupNow)
		n := waitNotification(t, notes, "Cannot back up to Blue stick")
		if !strings.Contains(n.Body, "A run is going on") {
			t.Errorf("failure notification %+v", n)
		}
		svc.FailNext(api.MethodBackupNow, nil)
	})

	t.Run("passphrase dialog", func(t *testing.T) {
		s.t = t
		st := blueStatus(api.StateAwaitingPassphrase)
		st.StateReason = "the keyfile was rejected"
		svc.SetDrive(t, blue, st)
		waitNotification(t, notes, "Passphrase needed for Blue stick")
		waitFor(t, "the attention icon", func() (bool, string) { return s.iconIs(model.IconAttention, -1) })
		s.saveIcon(filepath.Join(artifacts, "icon-attention.png"))
		const title = "Unlock Blue stick - plugvault"
		if out, err := xdotool(t, display, "search", "--sync", "--onlyvisible", "--name", title, "windowfocus", "--sync"); err != nil {
			t.Fatalf("no dialog window: %v %s", err, out)
		}
		windowShot(t, display, title, filepath.Join(artifacts, "dialog.png"))

		svc.FailNext(api.MethodUnlock, fmt.Errorf("the passphrase does not unlock the drive: %w", api.ErrBadPassphrase))
		const wrong = "not my passphrase"
		typeAndSubmit(t, display, title, wrong)
		c := waitCall(t, svc, blue, api.MethodUnlock)
		if got := c.Args[0].([]byte); string(got) != wrong || !c.Interactive {
			t.Errorf("Unlock received %q (interactive %v), typed %q", got, c.Interactive, wrong)
		}
		waitFor(t, "the inline wrong-passphrase message", func() (bool, string) {
			return strings.Contains(stderr.String(), `message="Wrong passphrase, try again"`), "not shown"
		})
		if out, err := xdotool(t, display, "search", "--onlyvisible", "--name", title); err != nil {
			t.Errorf("the dialog closed after a wrong passphrase: %v %s", err, out)
		}
		// The inline message is drawn in the theme's error colour (red).
		waitColour(t, display, title, filepath.Join(artifacts, "dialog-wrong-passphrase.png"), "red", redPixels)

		svc.FailNext(api.MethodUnlock, nil)
		const right = "correct horse: battery staple!"
		typeAndSubmit(t, display, title, right)
		c = waitCall(t, svc, blue, api.MethodUnlock)
		if got := c.Args[0].([]byte); string(got) != right {
			t.Errorf("Unlock received %q, typed %q", got, right)
		}
		svc.SetDrive(t, blue, blueStatus(api.StateMounting))
		waitFor(t, "the dialog to go away", func() (bool, string) {
			_, err := xdotool(t, display, "search", "--onlyvisible", "--name", title)
			return err != nil, "still visible"
		})
	})

	t.Run("failure and pulled too early", func(t *testing.T) {
		s.t = t
		st := blueStatus(api.StateFailed)
		st.StateReason = "the drive is full"
		svc.SetDrive(t, blue, st)
		n := waitNotification(t, notes, "Backup to Blue stick failed")
		if !strings.Contains(n.Body, "the drive is full") {
			t.Errorf("failure notification does not say why: %+v", n)
		}
		svc.SetDrive(t, blue, blueStatus(api.StateBackingUp))
		svc.SetDrive(t, blue, blueStatus(api.StateAbsent))
		waitNotification(t, notes, "Blue stick was removed too early")
	})

	t.Run("passphrase check", func(t *testing.T) {
		s.t = t
		svc.SetDrive(t, greenPath, func() api.DriveStatus { st := green; st.Present, st.State = true, api.StatePresent; return st }())
		const prompt = "Check your passphrase for Green stick - " + model.AppName
		if out, err := xdotool(t, display, "search", "--sync", "--onlyvisible", "--name", prompt); err != nil {
			t.Fatalf("no passphrase check prompt: %v %s", err, out)
		}
		windowShot(t, display, prompt, filepath.Join(artifacts, "passcheck-prompt.png"))
		clickLastButton(t, display, prompt) // Check now…

		const title = "Check the passphrase of Green stick - " + model.AppName
		if out, err := xdotool(t, display, "search", "--sync", "--onlyvisible", "--name", title, "windowfocus", "--sync"); err != nil {
			t.Fatalf("no check dialog: %v %s", err, out)
		}
		windowShot(t, display, title, filepath.Join(artifacts, "passcheck-dialog.png"))

		svc.FailNext(api.MethodCheckPassphrase, fmt.Errorf("the passphrase does not open the drive: %w", api.ErrBadPassphrase))
		const wrong = "forgotten, maybe"
		typeAndSubmit(t, display, title, wrong)
		c := waitCall(t, svc, greenPath, api.MethodCheckPassphrase)
		if got := c.Args[0].([]byte); string(got) != wrong || !c.Interactive {
			t.Errorf("CheckPassphrase received %q (interactive %v), typed %q", got, c.Interactive, wrong)
		}
		waitFor(t, "the wrong-passphrase advice", func() (bool, string) {
			return strings.Contains(stderr.String(), "set a new one while the keyfile still works"), "not shown"
		})
		waitColour(t, display, title, filepath.Join(artifacts, "passcheck-wrong.png"), "red", redPixels)

		svc.FailNext(api.MethodCheckPassphrase, nil)
		const right = "green: still remembered"
		typeAndSubmit(t, display, title, right)
		c = waitCall(t, svc, greenPath, api.MethodCheckPassphrase)
		if got := c.Args[0].([]byte); string(got) != right {
			t.Errorf("CheckPassphrase received %q, typed %q", got, right)
		}
		waitFor(t, "the right-passphrase message", func() (bool, string) {
			return strings.Contains(stderr.String(), "That is the right passphrase of Green stick"), "not shown"
		})
		path := filepath.Join(artifacts, "passcheck-right.png")
		waitColour(t, display, title, path, "green", greenPixels)
		if n := redPixels(t, path); n != 0 {
			t.Errorf("the right passphrase is shown with %d red pixels in %s", n, path)
		}
		// The check is recorded: the next one is due in about 90 days.
		waitFor(t, "the check recorded", func() (bool, string) {
			b, _ := os.ReadFile(passChecks)
			var saved map[string]time.Time
			if json.Unmarshal(b, &saved) != nil {
				return false, string(b)
			}
			next := time.Until(saved[green.LuksUUID])
			return next > model.PassCheckEvery-time.Hour && next <= model.PassCheckEvery, string(b)
		})
		for _, c := range svc.Calls() {
			if c.Path == greenPath && c.Method == api.MethodUnlock {
				t.Errorf("the check unlocked the drive: %v", c)
			}
		}
		clickLastButton(t, display, title) // Close
		waitFor(t, "the dialog to go away", func() (bool, string) {
			_, err := xdotool(t, display, "search", "--onlyvisible", "--name", title)
			return err != nil, "still visible"
		})
		svc.SetDrive(t, greenPath, green)
	})

	outer := t // the restarted service must outlive this subtest
	t.Run("service restart", func(t *testing.T) {
		s.t = t
		svc.Conn.Close() // plugvaultd stops: its name goes away
		waitFor(t, "service not running", func() (bool, string) {
			tip := s.tooltip()
			return strings.Contains(tip, "not running"), tip
		})
		waitFor(t, "the offline icon", func() (bool, string) { return s.iconIs(model.IconOffline, -1) })
		s.saveIcon(filepath.Join(artifacts, "icon-offline.png"))
		svc = apitest.StartFakeService(outer, system)
		blue = svc.AddDrive(outer, blueStatus(api.StatePresent))
		waitFor(t, "the state read after the restart", func() (bool, string) {
			tip := s.tooltip()
			return strings.Contains(tip, "Blue stick: Plugged in"), tip
		})
		s.clickItem("Blue stick: Plugged in", "Back up now")
		waitCall(t, svc, blue, api.MethodBackupNow)
	})

	t.Run("restore a file", func(t *testing.T) {
		s.t = t
		// The file's original folder, writable by the tray's user; the drive's read-only
		// mount holds two snapshots of it under its absolute path.
		orig, err := os.MkdirTemp("", "pvrestore")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(orig) })
		mount := filepath.Join(orig, "mount")
		rel := strings.TrimPrefix(orig, "/") + "/Quarterly report.txt"
		snaps := []api.Snapshot{
			{Name: "20261125T080000Z", Created: time.Now().Add(-48 * time.Hour).Unix(), Files: 3, Bytes: 2048, Status: api.SnapshotComplete, Changed: api.ChangedUnknown},
			{Name: "20261126T083100Z", Created: time.Now().Add(-24 * time.Hour).Unix(), Files: 3, Bytes: 4096, Status: api.SnapshotComplete, Changed: 1},
		}
		for i, sn := range snaps {
			p := filepath.Join(mount, "plugvault", "testhost", sn.Name, rel)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(strings.Repeat("v", i+1)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chmod(orig, 0o777); err != nil {
			t.Fatal(err)
		}
		svc.SetResult(api.MethodListSnapshots, snaps)
		svc.SetResult(api.MethodBrowse, mount)
		// The keyfile cannot open the drive: opening it asks for the passphrase first.
		const pass = "blue: restore with this"
		svc.NeedPassphrase(blue, []byte(pass))
		s.clickItem("Blue stick: Plugged in", "Restore files…")
		const title = "Restore from Blue stick - " + model.AppName
		if out, err := xdotool(t, display, "search", "--sync", "--onlyvisible", "--name", title); err != nil {
			t.Fatalf("no Restore window: %v %s", err, out)
		}
		const dialog = "Unlock Blue stick - plugvault"
		if out, err := xdotool(t, display, "search", "--sync", "--onlyvisible", "--name", dialog); err != nil {
			t.Fatalf("no passphrase dialog for the Restore window: %v %s", err, out)
		}
		windowShot(t, display, dialog, filepath.Join(artifacts, "restore-passphrase.png"))
		if strings.Contains(stderr.String(), "restore window: backups listed") {
			t.Error("the backups were listed before the passphrase was given")
		}
		typeAndSubmit(t, display, dialog, pass)
		if c := waitCall(t, svc, blue, api.MethodUnlock); string(c.Args[0].([]byte)) != pass {
			t.Errorf("Unlock received %q, typed %q", c.Args[0], pass)
		}
		waitFor(t, "the dialog to go away", func() (bool, string) {
			_, err := xdotool(t, display, "search", "--onlyvisible", "--name", dialog)
			return err != nil, "still visible"
		})
		if out, err := xdotool(t, display, "search", "--sync", "--onlyvisible", "--name", title, "windowfocus", "--sync"); err != nil {
			t.Fatalf("no Restore window: %v %s", err, out)
		}
		waitFor(t, "the backups listed", func() (bool, string) {
			return strings.Contains(stderr.String(), "restore window: backups listed"), "not yet"
		})
		// The newest backup's line in the timeline tells the files it changed.
		if out := stderr.String(); !strings.Contains(out, "· 1 file changed") {
			t.Errorf("the timeline does not show the files changed:\n%s", out)
		}
		windowShot(t, display, title, filepath.Join(artifacts, "restore.png"))
		// As a person would: type a part of the name in the search field, Return picks the
		// first match, Ctrl+R restores it to where it came from.
		for _, args := range [][]string{{"type", "--delay", "15", "quarterly"}, {"key", "Return"}, {"key", "ctrl+r"}} {
			if out, err := xdotool(t, display, args...); err != nil {
				t.Fatalf("xdotool %v: %v %s", args, err, out)
			}
		}
		c := waitCall(t, svc, blue, api.MethodRestore)
		if len(c.Args) != 4 || c.Args[0] != snaps[1].Name || c.Args[1] != rel || c.Args[2] != orig || !c.Interactive {
			t.Errorf("Restore got %v (interactive %v); want the newest snapshot, %q into %q", c.Args, c.Interactive, rel, orig)
		}
		if o, _ := c.Args[3].(map[string]dbus.Variant); o[api.OptOverwrite].Value() != false {
			t.Errorf("Restore options %v: nothing was in the way, so nothing may be overwritten", c.Args[3])
		}
		windowShot(t, display, title, filepath.Join(artifacts, "restore-done.png"))
		unmapWindow(t, display, title)
		// The drive opened with the passphrase carries a reason in its status line; the next
		// subtests find it plugged in as before.
		svc.SetDrive(t, blue, blueStatus(api.StatePresent))
		waitFor(t, "the menu of a plugged-in drive", func() (bool, string) {
			_, items := s.section("Blue stick: Plugged in")
			return items["Show log"].Enabled, fmt.Sprintf("%+v", items)
		})
	})

	t.Run("show log", func(t *testing.T) {
		s.t = t
		s.clickItem("Blue stick: Plugged in", "Show log")
		if out, err := xdotool(t, display, "search", "--sync", "--onlyvisible", "--name", "plugvault log: Blue stick", "windowfocus", "--sync"); err != nil {
			t.Fatalf("no log window: %v %s", err, out)
		}
		windowShot(t, display, "plugvault log: Blue stick", filepath.Join(artifacts, "log.png"))
		unmapWindow(t, display, "plugvault log: Blue stick")
	})

	t.Run("about", func(t *testing.T) {
		s.t = t
		var about entry
		for _, e := range s.layout() {
			if e.Label == "About "+model.AppName {
				about = e
			}
		}
		if about.ID == 0 || !about.Enabled {
			t.Fatalf("no About item: %+v", s.layout())
		}
		s.click(about.ID)
		if out, err := xdotool(t, display, "search", "--sync", "--onlyvisible", "--name", "About "+model.AppName); err != nil {
			t.Fatalf("no About window: %v %s", err, out)
		}
		windowShot(t, display, "About "+model.AppName, filepath.Join(artifacts, "about.png"))
		unmapWindow(t, display, "About "+model.AppName)
	})

	t.Run("set up a new drive", func(t *testing.T) {
		s.t = t
		var setup entry
		for _, e := range s.layout() {
			if e.Label == "Set up a new drive…" {
				setup = e
			}
		}
		if setup.ID == 0 || !setup.Enabled {
			t.Fatalf("no Set up item: %+v", s.layout())
		}
		s.click(setup.ID)
		const title = "Set up a new backup drive - " + model.AppName
		if out, err := xdotool(t, display, "search", "--sync", "--onlyvisible", "--name", title); err != nil {
			t.Fatalf("no setup window: %v %s", err, out)
		}
		windowShot(t, display, title, filepath.Join(artifacts, "setup.png"))
	})

	t.Run("one tray per session", func(t *testing.T) {
		second := exec.Command(bin)
		second.Env, second.SysProcAttr = cmd.Env, cmd.SysProcAttr
		out, err := second.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "already runs in this session") {
			t.Errorf("second tray: %v\n%s", err, out)
		}
	})

	t.Run("session bus restart", func(t *testing.T) {
		s.t = t
		// The desktop's bus goes away under the tray and comes back on the same address: the
		// tray starts afresh in the same process (exec) and shows its item on the new bus,
		// with the drives read again from the system bus.
		svc.SetDrive(t, blue, blueStatus(api.StatePresent))
		session.Restart(outer)
		panel = session.Conn(outer)
		watcher = traytest.StartWatcher(outer, panel)
		notes = traytest.StartNotifications(outer, session.Conn(outer))
		select {
		case name = <-watcher.Registered():
		case err := <-exited:
			t.Fatalf("the tray exited: %v", err)
		case <-time.After(waitLimit):
			t.Fatal("the tray never registered on the restarted session bus")
		}
		s.item = panel.Object(name, "/StatusNotifierItem")
		if err := s.prop("Menu").Store(&menuPath); err != nil {
			t.Fatal(err)
		}
		s.menu = panel.Object(name, menuPath)
		if title := s.prop("Title").Value(); title != appName {
			t.Errorf("Title %v after the restart, want %q", title, appName)
		}
		waitFor(t, "the drives on the restarted bus", func() (bool, string) {
			tip := s.tooltip()
			return strings.Contains(tip, "Blue stick: Plugged in"), tip
		})
		// Notifications go to the new bus too.
		svc.SetDrive(t, blue, blueStatus(api.StateBackingUp))
		waitNotification(t, notes, "Backing up to Blue stick")
		waitFor(t, "the menu of a drive backing up", func() (bool, string) {
			_, items := s.section("Backing up to Blue stick")
			return items["Cancel backup"].Enabled, fmt.Sprintf("%+v", items)
		})
		svc.SetDrive(t, blue, blueStatus(api.StatePresent))
		// The menu settles (the items of a plugged-in drive) before the next subtest reads it.
		waitFor(t, "the menu of a plugged-in drive", func() (bool, string) {
			_, items := s.section("Blue stick: Plugged in")
			return items["Back up now"].Enabled, fmt.Sprintf("%+v", items)
		})
		if !strings.Contains(stderr.String(), "lost the session bus") {
			t.Errorf("the tray did not say why it started again:\n%s", stderr.String())
		}
	})

	t.Run("quit", func(t *testing.T) {
		s.t = t
		for _, e := range s.layout() {
			if e.Label == "Quit" {
				s.click(e.ID)
			}
		}
		select {
		case err := <-exited:
			exited <- err // for the cleanup
			if err != nil {
				t.Errorf("the tray exited with %v", err)
			}
		case <-time.After(waitLimit):
			t.Fatal("Quit did not end the tray")
		}
	})
}

// knownRaces are data races inside the libraries, reported by the race detector in the tray
// binary; the tray cannot avoid them because they happen between a library's own goroutines
// and the bus peer's calls:
//   - fyne.io/systray v1.12.2: refresh() writes menuVersion under instance.lock while
//     GetLayout reads it under menuLock (any menu change while a host reads the layout).
//   - godbus/dbus v5.2.4 prop: Properties.set stores the new value into the old one in place
//     (dbus.Store), while a Get reply that still holds the old value is being encoded
//     (systray.SetIcon while a host reads IconPixmap).
var knownRaces = []struct{ name, a, b string }{
	{"systray menuVersion", "fyne.io/systray.refresh()", "fyne.io/systray.(*tray).GetLayout()"},
	{"godbus prop in-place set", "godbus/dbus/v5/prop.(*Properties).set()", "godbus/dbus/v5.(*encoder).encode()"},
}

// checkRaces fails t on every race report in out that is not a known library race.
func checkRaces(t *testing.T, out string) {
	t.Helper()
	blocks := strings.Split(out, "WARNING: DATA RACE")
	for _, b := range blocks[1:] {
		if end := strings.Index(b, "=================="); end >= 0 {
			b = b[:end]
		}
		known := ""
		for _, k := range knownRaces {
			if strings.Contains(b, k.a) && strings.Contains(b, k.b) {
				known = k.name
			}
		}
		if known == "" {
			t.Errorf("data race in the tray:%s", b)
		} else {
			t.Logf("known library data race (%s) reported", known)
		}
	}
}
