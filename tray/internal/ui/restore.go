package ui

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"time"

	"fyne.io/fyne/v2"
	"fyne.io/fyne/v2/container"
	"fyne.io/fyne/v2/dialog"
	"fyne.io/fyne/v2/driver/desktop"
	"fyne.io/fyne/v2/layout"
	"fyne.io/fyne/v2/widget"
	"github.com/godbus/dbus/v5"

	"github.com/plugvault/plugvault/service/api"
	"github.com/plugvault/plugvault/tray/internal/model"
)

// restoreWindow is one drive's Restore window: the snapshots as a timeline, the chosen
// snapshot's files (read from the drive opened read-only by Browse, with the user's own
// permissions), search by name, the versions of a file across snapshots, and Restore to the
// original place or another folder through the daemon's Restore, which runs with the
// user's credentials. Its fields are used on the fyne thread only.
type restoreWindow struct {
	c     *controller
	drive dbus.ObjectPath
	name  string
	w     fyne.Window

	snaps []api.Snapshot // complete ones, newest first
	base  string         // MOUNT/plugvault/HOST
	snap  int            // index into snaps
	sel   string         // the chosen path, relative to the snapshot root
	dirs  map[string]bool
	found []string // search results; nil shows the tree
	vers  []version
	job   context.CancelFunc // the running restore

	timeline, results, versionList *widget.List
	tree                           *widget.Tree
	searchEntry                    *shortcutEntry
	status                         *widget.Label
	progress                       *widget.ProgressBarInfinite
	restoreBtn, restoreToBtn       *widget.Button
	versionsBtn, cancelBtn         *widget.Button
	files                          *fyne.Container // tree or results
}

// openRestore shows drive's Restore window, making it on first use (fyne thread).
func (c *controller) openRestore(a model.OpenRestore) {
	if r := c.restores[a.Drive]; r != nil {
		r.w.Show()
		r.w.RequestFocus()
		return
	}
	r := &restoreWindow{c: c, drive: a.Drive, name: a.Name, dirs: map[string]bool{}}
	c.restores[a.Drive] = r
	r.build(a.Title)
	r.w.Show()
	repaintSoon(r.w)
	r.load()
}

func (r *restoreWindow) build(title string) {
	r.w = r.c.app.NewWindow(title)
	r.timeline = widget.NewList(func() int { return len(r.snaps) },
		func() fyne.CanvasObject {
			return widget.NewLabel("Mon 2 Jan 2006, 15:04 · 12,345 files · 100.0 GB · 1,234 files changed")
		},
		func(i widget.ListItemID, o fyne.CanvasObject) {
			o.(*widget.Label).SetText(model.TimelineLabel(r.snaps[i], time.Local))
		})
	r.timeline.OnSelected = func(i widget.ListItemID) { r.chooseSnapshot(i) }

	r.tree = widget.NewTree(
		func(id widget.TreeNodeID) []widget.TreeNodeID {
			if r.base == "" || len(r.snaps) == 0 {
				return nil
			}
			ids, dirs := children(r.snapDir(), id)
			for k, v := range dirs {
				r.dirs[k] = v
			}
			return ids
		},
		func(id widget.TreeNodeID) bool { return id == "" || r.dirs[id] },
		func(bool) fyne.CanvasObject { return widget.NewLabel("file name") },
		func(id widget.TreeNodeID, _ bool, o fyne.CanvasObject) { o.(*widget.Label).SetText(path.Base(id)) })
	r.tree.OnSelected = func(id widget.TreeNodeID) { r.choosePath(id) }
	r.results = widget.NewList(func() int { return len(r.found) },
		func() fyne.CanvasObject { return widget.NewLabel("home/someone/some/file") },
		func(i widget.ListItemID, o fyne.CanvasObject) { o.(*widget.Label).SetText(r.found[i]) })
	r.results.OnSelected = func(i widget.ListItemID) { r.choosePath(r.found[i]) }

	r.searchEntry = newShortcutEntry(r.shortcut)
	r.searchEntry.SetPlaceHolder("Search by name")
	// A search walks the whole snapshot: it runs on Return, not at every key; clearing the
	// field brings the tree back.
	r.searchEntry.OnChanged = func(text string) {
		if text == "" {
			r.runSearch(false)
		}
	}
	r.searchEntry.OnSubmitted = func(string) { r.runSearch(true) }

	r.versionList = widget.NewList(func() int { return len(r.vers) },
		func() fyne.CanvasObject {
			return widget.NewLabel("Mon 2 Jan 2006, 15:04 · 100.0 GB · changed 2 Jan 2006 15:04")
		},
		func(i widget.ListItemID, o fyne.CanvasObject) {
			v := r.vers[i]
			o.(*widget.Label).SetText(fmt.Sprintf("%s · %s · changed %s", time.Unix(v.snap.Created, 0).Local().Format("Mon 2 Jan 2006, 15:04"),
				api.FormatBytes(uint64(max(v.size, 0))), v.modTime.Local().Format("2 Jan 2006 15:04")))
		})
	r.versionList.OnSelected = func(i widget.ListItemID) {
		for j, s := range r.snaps {
			if s.Name == r.vers[i].snap.Name && j != r.snap {
				sel := r.sel
				r.timeline.Select(j)
				r.choosePath(sel)
			}
		}
	}

	r.status = widget.NewLabel("Opening the drive…")
	r.status.Wrapping = fyne.TextWrapWord
	r.progress = widget.NewProgressBarInfinite()
	r.progress.Hide()
	r.restoreBtn = widget.NewButton("Restore", func() { r.restoreOriginal() })
	r.restoreBtn.Importance = widget.HighImportance
	r.restoreToBtn = widget.NewButton("Restore to…", r.restoreElsewhere)
	r.versionsBtn = widget.NewButton("Versions of this file", r.showVersions)
	r.cancelBtn = widget.NewButton("Cancel", r.cancelRestore)
	r.cancelBtn.Hide()
	r.enableActions()

	r.files = container.NewStack(r.tree)
	left := container.NewBorder(widget.NewLabelWithStyle("Backups", fyne.TextAlignLeading, fyne.TextStyle{Bold: true}), nil, nil, nil, r.timeline)
	right := container.NewBorder(r.searchEntry, container.NewBorder(widget.NewLabel("Versions"), nil, nil, nil, container.NewGridWrap(fyne.NewSize(460, 120), r.versionList)), nil, nil, r.files)
	split := container.NewHSplit(left, right)
	split.Offset = 0.38
	buttons := container.NewHBox(r.versionsBtn, layout.NewSpacer(), r.cancelBtn, r.restoreToBtn, r.restoreBtn)
	r.w.SetContent(container.NewBorder(nil, container.NewVBox(r.progress, r.status, buttons), nil, nil, split))
	// Ctrl+R restores the chosen file to where it came from, as the Restore button does.
	r.w.Canvas().AddShortcut(restoreShortcut, func(s fyne.Shortcut) { r.shortcut(s) })
	r.w.SetCloseIntercept(func() { r.w.Hide() }) // hide, never close: fyne quits with its last window
	r.w.Resize(fyne.NewSize(900, 560))
}

var restoreShortcut = &desktop.CustomShortcut{KeyName: fyne.KeyR, Modifier: fyne.KeyModifierControl}

// shortcut handles the window's shortcuts, also while the search field has the focus (a
// focused entry gets every shortcut first); it reports whether s was one of them.
func (r *restoreWindow) shortcut(s fyne.Shortcut) bool {
	if s.ShortcutName() != restoreShortcut.ShortcutName() {
		return false
	}
	r.restoreOriginal()
	return true
}

// shortcutEntry is an entry that offers shortcuts to its window before handling them.
type shortcutEntry struct {
	widget.Entry
	first func(fyne.Shortcut) bool
}

func newShortcutEntry(first func(fyne.Shortcut) bool) *shortcutEntry {
	e := &shortcutEntry{first: first}
	e.ExtendBaseWidget(e)
	return e
}

// TypedShortcut implements fyne.Shortcutable.
func (e *shortcutEntry) TypedShortcut(s fyne.Shortcut) {
	if !e.first(s) {
		e.Entry.TypedShortcut(s)
	}
}

func (r *restoreWindow) snapDir() string { return filepath.Join(r.base, r.snaps[r.snap].Name) }

// load lists the snapshots and opens the drive read-only, off the fyne thread.
func (r *restoreWindow) load() {
	go func() {
		cl := r.c.client.get()
		if cl == nil {
			fyne.Do(func() { r.status.SetText("The backup service is not running.") })
			return
		}
		ctx, cancel := context.WithTimeout(r.c.ctx, callTimeout)
		defer cancel()
		all, err := cl.ListSnapshots(ctx, r.drive)
		snaps := model.Timeline(all)
		var mount, base string
		if err == nil && len(snaps) == 0 {
			err = errors.New("there are no complete backups on " + r.name + " yet")
		}
		if err == nil {
			mount, err = cl.Browse(ctx, r.drive, nil)
		}
		if err == nil {
			base, err = hostDir(mount, snaps[0].Name)
		}
		fyne.Do(func() {
			if err != nil {
				r.c.log.Info("restore window: cannot open the backups", "drive", r.drive, "err", err)
				r.status.SetText("Cannot open the backups: " + err.Error())
				return
			}
			r.snaps, r.base = snaps, base
			r.c.log.Info("restore window: backups listed", "drive", r.drive, "snapshots", len(snaps),
				"newest", model.TimelineLabel(snaps[0], time.Local))
			r.timeline.Refresh()
			r.timeline.Select(0)
			r.status.SetText(fmt.Sprintf("%d backups on %s. Choose a backup, then a file or folder.", len(snaps), r.name))
			r.w.Canvas().Focus(r.searchEntry)
		})
	}()
}

func (r *restoreWindow) chooseSnapshot(i int) {
	if i < 0 || i >= len(r.snaps) {
		return
	}
	r.snap = i
	r.dirs = map[string]bool{}
	r.tree.Refresh()
	if r.found != nil {
		r.runSearch(false)
	}
	if r.sel != "" {
		r.choosePath(r.sel)
	}
}

func (r *restoreWindow) choosePath(rel string) {
	r.sel = rel
	r.vers = nil
	r.versionList.Refresh()
	if _, err := os.Lstat(filepath.Join(r.snapDir(), filepath.FromSlash(rel))); err != nil {
		r.status.SetText(rel + " is not in the backup of " + model.TimelineLabel(r.snaps[r.snap], time.Local))
	} else {
		r.status.SetText("Chosen: /" + rel)
	}
	r.enableActions()
}

// runSearch shows the paths whose name contains the search text; with choose, the first
// result is chosen (Return in the search field).
func (r *restoreWindow) runSearch(choose bool) {
	text := r.searchEntry.Text
	if text == "" || r.base == "" {
		r.found = nil
		r.files.Objects = []fyne.CanvasObject{r.tree}
		r.files.Refresh()
		return
	}
	r.found = search(r.snapDir(), text)
	if r.found == nil {
		r.found = []string{}
	}
	r.results.UnselectAll()
	r.results.Refresh()
	r.files.Objects = []fyne.CanvasObject{r.results}
	r.files.Refresh()
	if choose && len(r.found) > 0 {
		r.results.Select(0)
	}
	if len(r.found) == 0 {
		r.status.SetText("Nothing called “" + text + "” in this backup")
	}
}

func (r *restoreWindow) showVersions() {
	if r.sel == "" {
		return
	}
	r.vers = versions(r.base, r.snaps, r.sel)
	r.versionList.Refresh()
	r.status.SetText(fmt.Sprintf("/%s: %d different versions in %d backups", r.sel, len(r.vers), len(r.snaps)))
}

func (r *restoreWindow) enableActions() {
	ok := r.sel != "" && r.job == nil
	for _, b := range []*widget.Button{r.restoreBtn, r.restoreToBtn, r.versionsBtn} {
		if ok {
			b.Enable()
		} else {
			b.Disable()
		}
	}
}

// restoreOriginal restores the chosen path to where it came from; when something of that name
// is there, the user chooses between keeping both and replacing it.
func (r *restoreWindow) restoreOriginal() {
	dir, name, ok := model.OriginalPlace(r.sel)
	if !ok || r.job != nil {
		return
	}
	r.restoreInto(dir, name)
}

func (r *restoreWindow) restoreElsewhere() {
	if r.sel == "" || r.job != nil {
		return
	}
	dialog.ShowFolderOpen(func(u fyne.ListableURI, err error) {
		if err != nil || u == nil {
			return
		}
		r.restoreInto(u.Path(), path.Base(r.sel))
	}, r.w)
}

func (r *restoreWindow) restoreInto(dir, name string) {
	if _, err := os.Lstat(filepath.Join(dir, name)); err != nil {
		r.start(dir, false, "")
		return
	}
	snap := r.snaps[r.snap]
	keep := model.KeepBothName(name, time.Unix(snap.Created, 0).Local())
	msg := widget.NewLabel(fmt.Sprintf("%s already exists in %s.\nKeep both (the restored copy is named “%s”) or replace it with the version from %s?",
		name, dir, keep, model.TimelineLabel(snap, time.Local)))
	msg.Wrapping = fyne.TextWrapWord
	d := dialog.NewCustomWithoutButtons("Restore "+name, msg, r.w)
	d.SetButtons([]fyne.CanvasObject{
		widget.NewButton("Cancel", d.Hide),
		widget.NewButton("Replace", func() { d.Hide(); r.start(dir, true, "") }),
		&widget.Button{Text: "Keep both", Importance: widget.HighImportance, OnTapped: func() { d.Hide(); r.start(dir, false, keep) }},
	})
	d.Resize(fyne.NewSize(520, 0))
	d.Show()
}

// start runs the daemon's Restore of the chosen path into dir. With rename, the path is
// restored into a new private folder in dir and then moved to dir/rename, never replacing
// anything (keep both).
func (r *restoreWindow) start(dir string, overwrite bool, rename string) {
	snap, rel := r.snaps[r.snap], r.sel
	// No time limit: a restore takes as long as the data it copies. Cancelling ctx
	// cancels the daemon's restore job.
	ctx, cancel := context.WithCancel(r.c.ctx)
	r.job = cancel
	r.enableActions()
	r.progress.Show()
	r.progress.Start()
	r.cancelBtn.Show()
	r.status.SetText("Restoring /" + rel + " to " + dir + "…")
	go func() {
		defer cancel()
		err := r.restore(ctx, snap.Name, rel, dir, overwrite, rename)
		fyne.Do(func() {
			r.job = nil
			r.progress.Stop()
			r.progress.Hide()
			r.cancelBtn.Hide()
			r.enableActions()
			switch {
			case errors.Is(err, context.Canceled) || errors.Is(err, api.ErrCancelled):
				r.status.SetText("Restore cancelled.")
			case err != nil:
				r.status.SetText("Cannot restore /" + rel + ": " + err.Error())
			default:
				r.status.SetText("Restored /" + rel + " to " + dir + ".")
			}
			r.c.log.Info("restore", "drive", r.drive, "snapshot", snap.Name, "path", rel, "destination", dir, "overwrite", overwrite, "rename", rename, "err", err)
		})
	}()
}

func (r *restoreWindow) restore(ctx context.Context, snap, rel, dir string, overwrite bool, rename string) error {
	cl := r.c.client.get()
	if cl == nil {
		return errNotRunning
	}
	if rename == "" {
		return cl.Restore(ctx, r.drive, snap, rel, dir, api.Options{api.OptOverwrite: overwrite})
	}
	tmp, err := os.MkdirTemp(dir, ".plugvault-restore-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp) // the user's own new folder: empty after the move, partial after a failure
	if err := cl.Restore(ctx, r.drive, snap, rel, tmp, nil); err != nil {
		return err
	}
	return moveNoReplace(filepath.Join(tmp, path.Base(rel)), filepath.Join(dir, rename))
}

// cancelRestore stops the running restore: ending the restore's context makes the client
// cancel the daemon's restore job.
func (r *restoreWindow) cancelRestore() {
	if r.job != nil {
		r.job()
	}
}
