// Command bench measures the backup engine against rsync --link-dest, cp -a and a parallel
// stat walk of the source (the lower bound of any incremental), on loop-mounted ext4 and btrfs
// targets, and prints a table with ratios. It needs root (loop devices, mounts, drop_caches)
// and is run by `make bench`. Benchmarks report; they never fail on a number.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/plugvault/plugvault/service/internal/backup"
	"github.com/plugvault/plugvault/service/internal/mount"
	"github.com/plugvault/plugvault/service/internal/sysexec"
)

var (
	workDir   = flag.String("dir", "/var/tmp/plugvault-bench", "work directory for the images (several GB, sparse)")
	nFiles    = flag.Int("files", 100000, "number of small files")
	nLarge    = flag.Int("large", 4, "number of large files")
	largeSize = flag.Int64("large-size", 128<<20, "size of each large file")
	keep      = flag.Bool("keep", false, "keep the images and mounts afterwards")
	copyW     = flag.Int("copy-workers", 0, "plugvault's copy workers (0: its default)")
	onlyPV    = flag.Bool("only-plugvault", false, "skip cp and rsync (for profiling)")
	cpuProf   = flag.String("cpuprofile", "", "write a CPU profile of the plugvault runs to this file")
	appendSz  = flag.Int64("append-size", 256<<20, "size of the file that (d) appends 100 bytes to (0: skip (d))")
	realDirs  = flag.String("real", "", "comma-separated directories copied as a second, real-files data set (e.g. /usr/share,/usr/lib)")
	engine    = flag.String("engine", "", "plugvault-engine binary: one more no-change run in the engine child measures its peak RSS")
)

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(tool string, args ...string) {
	p, err := sysexec.LookPath(tool)
	must(err)
	_, err = sysexec.Exec{}.Run(context.Background(), sysexec.Cmd{Path: p, Args: args})
	must(err)
}

func output(tool string, args ...string) string {
	p, err := sysexec.LookPath(tool)
	must(err)
	res, err := sysexec.Exec{}.Run(context.Background(), sysexec.Cmd{Path: p, Args: args})
	must(err)
	return strings.TrimSpace(string(res.Stdout))
}

type image struct {
	img, loop, mnt, fstype string
	dev                    uint64
}

func mkImage(name, fstype string, size int64) *image {
	im := &image{img: filepath.Join(*workDir, name+".img"), mnt: filepath.Join(*workDir, name), fstype: fstype}
	f, err := os.Create(im.img)
	must(err)
	must(f.Truncate(size))
	f.Close()
	if fstype == "btrfs" {
		run("mkfs.btrfs", "-q", "-f", im.img)
	} else {
		run("mkfs.ext4", "-q", "-F", im.img)
	}
	im.loop = output("losetup", "-f", "--show", im.img)
	must(os.MkdirAll(im.mnt, 0o755))
	must(unix.Mount(im.loop, im.mnt, fstype, unix.MS_NOATIME, ""))
	var st unix.Stat_t
	must(unix.Stat(im.loop, &st))
	im.dev = st.Rdev
	return im
}

func (im *image) close() {
	_ = unix.Unmount(im.mnt, 0)
	run("losetup", "-d", im.loop)
	_ = os.Remove(im.img)
	_ = os.Remove(im.mnt)
}

func dropCaches() {
	unix.Sync()
	must(os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200))
}

func syncfs(p string) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	must(err)
	must(unix.Syncfs(fd))
	unix.Close(fd)
}

// timed drops caches, runs f and syncs the target; the time includes the sync.
func timed(target string, f func()) time.Duration {
	dropCaches()
	start := time.Now()
	f()
	syncfs(target)
	return time.Since(start)
}

// generate writes the data set: small files with a realistic size mix in ~n/12 directories
// below small/, symlinks (5%), hard links (1%), and a few large files in large/.
func generate(root string) (files int, bytes int64) {
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 8<<20)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	must(os.Mkdir(filepath.Join(root, "small"), 0o755))
	nDirs := *nFiles / 12
	var dirs []string
	for i := 0; i < nDirs; i++ {
		var d string
		if i < 20 || rng.IntN(4) == 0 {
			d = filepath.Join("small", fmt.Sprintf("top%02d", i%20))
		} else {
			d = dirs[rng.IntN(len(dirs))]
		}
		d = filepath.Join(d, fmt.Sprintf("dir%05d", i))
		must(os.MkdirAll(filepath.Join(root, d), 0o755))
		dirs = append(dirs, d)
	}
	size := func() int {
		// Mean ~14 KiB: mostly small files, as in /usr or a home directory.
		switch r := rng.IntN(100); {
		case r < 55:
			return rng.IntN(4 << 10)
		case r < 88:
			return 4<<10 + rng.IntN(12<<10)
		case r < 98:
			return 16<<10 + rng.IntN(48<<10)
		default:
			return 64<<10 + rng.IntN(448<<10)
		}
	}
	var paths []string
	for i := 0; i < *nFiles; i++ {
		p := filepath.Join(root, dirs[rng.IntN(len(dirs))], fmt.Sprintf("file%06d.dat", i))
		switch r := rng.IntN(100); {
		case r < 5 && len(paths) > 0:
			must(os.Symlink(filepath.Base(paths[rng.IntN(len(paths))]), p))
		case r < 6 && len(paths) > 0:
			must(os.Link(paths[rng.IntN(len(paths))], p))
		default:
			n := size()
			off := rng.IntN(len(buf) - n)
			must(os.WriteFile(p, buf[off:off+n], 0o644))
			paths = append(paths, p)
			bytes += int64(n)
		}
		files++
	}
	must(os.Mkdir(filepath.Join(root, "large"), 0o755))
	for i := 0; i < *nLarge; i++ {
		f, err := os.Create(filepath.Join(root, "large", fmt.Sprintf("large%d.bin", i)))
		must(err)
		for w := int64(0); w < *largeSize; w += int64(len(buf)) {
			buf[rng.IntN(len(buf))]++
			_, err := f.Write(buf[:min(int64(len(buf)), *largeSize-w)])
			must(err)
		}
		f.Close()
		bytes += *largeSize
		files++
	}
	return files, bytes
}

// touch appends 100 bytes to every 100th regular file and adds 1000 new 2 KiB files;
// it returns the bytes a backup has to copy.
func touch(root string) (changed int64) {
	var regular []string
	must(filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && !strings.HasPrefix(fi.Name(), "large") && fi.Name() != "append.bin" {
			regular = append(regular, p)
		}
		return nil
	}))
	extra := []byte(strings.Repeat("x", 100))
	for i := 0; i < len(regular); i += 100 {
		f, err := os.OpenFile(regular[i], os.O_WRONLY|os.O_APPEND, 0)
		must(err)
		f.Write(extra)
		fi, _ := f.Stat()
		f.Close()
		changed += fi.Size()
	}
	must(os.MkdirAll(filepath.Join(root, "new"), 0o755))
	data := make([]byte, 2048)
	for i := 0; i < 1000; i++ {
		must(os.WriteFile(filepath.Join(root, "new", fmt.Sprintf("n%04d", i)), data, 0o644))
		changed += 2048
	}
	return changed
}

// statWalk is the lower bound of an incremental: a parallel readdir + lstat of the source.
func statWalk(root string, workers int) int {
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, workers)
	n := 0
	var visit func(d string)
	visit = func(d string) {
		defer wg.Done()
		sem <- struct{}{}
		ents, _ := os.ReadDir(d)
		var sub []string
		for _, e := range ents {
			p := filepath.Join(d, e.Name())
			if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
				sub = append(sub, p)
			}
		}
		<-sem
		mu.Lock()
		n += len(ents)
		mu.Unlock()
		for _, s := range sub {
			wg.Add(1)
			go visit(s)
		}
	}
	wg.Add(1)
	visit(root)
	wg.Wait()
	return n
}

// writeRate measures the target's sequential write rate (bytes/s) with 512 MiB and a sync.
func writeRate(dir string) float64 {
	p := filepath.Join(dir, "rate.tmp")
	buf := make([]byte, 8<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	dropCaches()
	start := time.Now()
	f, err := os.Create(p)
	must(err)
	for i := 0; i < 64; i++ {
		f.Write(buf)
	}
	f.Sync()
	f.Close()
	el := time.Since(start)
	os.Remove(p)
	return float64(64*len(buf)) / el.Seconds()
}

func pvJob(src string, im *image) backup.Job {
	return backup.Job{Sources: []string{src}, Target: im.mnt, Host: "bench", FSType: im.fstype, Dev: im.dev,
		NoDefaultExcludes: true, CopyWorkers: *copyW}
}

func pvRun(src string, im *image) { pvRunHost(src, im, "bench") }

// pvRunHost backs up src as host: a host of its own starts with a full backup.
func pvRunHost(src string, im *image, host string) {
	job := pvJob(src, im)
	job.Host = host
	_, err := backup.Run(context.Background(), job, func() error { return mount.Guard(im.mnt, im.dev) }, nil)
	must(err)
}

// used is the space used on the filesystem mounted at dir, after a sync.
func used(dir string) int64 {
	syncfs(dir)
	var st unix.Statfs_t
	must(unix.Statfs(dir, &st))
	return int64(st.Blocks-st.Bfree) * st.Bsize
}

// measured is one timed run and the space it added to its target.
type measured struct {
	t     time.Duration
	space int64
	ran   bool
}

// measure times f on the target mounted at dir and records the space it added.
func measure(dir string, f func()) measured {
	before := used(dir)
	t := timed(dir, f)
	return measured{t: t, space: used(dir) - before, ran: true}
}

// latestStats reads the stats of the newest snapshot of the bench host on im.
func latestStats(im *image) backup.Stats {
	var st backup.Stats
	data, err := os.ReadFile(filepath.Join(im.mnt, "plugvault", "bench", "latest", ".plugvault", "stats.json"))
	must(err)
	must(json.Unmarshal(data, &st))
	return st
}

func main() {
	flag.Parse()
	if *cpuProf != "" {
		f, err := os.Create(*cpuProf)
		must(err)
		must(pprof.StartCPUProfile(f))
		defer pprof.StopCPUProfile()
	}
	if os.Geteuid() != 0 {
		must(fmt.Errorf("needs root (loop devices, mounts, drop_caches)"))
	}
	must(os.MkdirAll(*workDir, 0o755))
	defer os.Remove(*workDir)
	benchSet("synthetic", []part{{"large", "≥ 1.0×"}, {"small", "≥ 1.5×"}}, func(src string) (int, int64) {
		files, bytes := generate(src)
		if *appendSz > 0 {
			bytes += writeAppendFile(src)
			files++
		}
		return files, bytes
	})
	if *realDirs != "" {
		benchSet("real files ("+*realDirs+")", nil, func(src string) (int, int64) {
			for _, d := range strings.Split(*realDirs, ",") {
				run("cp", "-a", "--parents", d, src)
			}
			entries, _, bytes := count(src)
			return entries, bytes
		})
	}
}

// count returns the entries below dir, its regular files among them and their bytes.
func count(dir string) (entries, files int, bytes int64) {
	must(filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && p != dir {
			entries++
			if fi.Mode().IsRegular() {
				files++
				bytes += fi.Size()
			}
		}
		return nil
	}))
	return entries, files, bytes
}

// writeAppendFile writes the file (d) appends to.
func writeAppendFile(src string) int64 {
	f, err := os.Create(filepath.Join(src, "append.bin"))
	must(err)
	buf := make([]byte, 8<<20)
	for w := int64(0); w < *appendSz; w += int64(len(buf)) {
		for i := range buf {
			buf[i] = byte(int64(i)*13 + w>>20)
		}
		_, err := f.Write(buf[:min(int64(len(buf)), *appendSz-w)])
		must(err)
	}
	must(f.Close())
	return *appendSz
}

// part is a subdirectory of a data set whose first full backup is measured on its own too,
// and the speed relative to cp -a the issue asks of it.
type part struct{ dir, target string }

// benchSet runs every engine on one data set, written into a fresh source by fill, and
// prints the tables.
func benchSet(label string, parts []part, fill func(src string) (int, int64)) {
	srcIm := mkImage("src", "ext4", 16<<30)
	btr := mkImage("t-btrfs", "btrfs", 20<<30)
	ext := mkImage("t-ext4", "ext4", 20<<30)
	rsy := mkImage("t-rsync", "ext4", 20<<30)
	rsb := mkImage("t-rsync-btrfs", "btrfs", 20<<30)
	cpi := mkImage("t-cp", "ext4", 20<<30)
	if !*keep {
		defer func() {
			for _, im := range []*image{cpi, rsb, rsy, ext, btr, srcIm} {
				im.close()
			}
		}()
	}
	src := filepath.Join(srcIm.mnt, "data")
	must(os.Mkdir(src, 0o755))
	t0 := time.Now()
	files, bytes := fill(src)
	syncfs(srcIm.mnt)
	fmt.Printf("\n## %s\n\ndata set: %d files + dirs/links, %.2f GB, made in %.1fs\n", label, files, float64(bytes)/1e9, time.Since(t0).Seconds())
	rsyncDest := func(i int) string { return filepath.Join(rsy.mnt, fmt.Sprintf("r%d", i)) }
	rsyncRun := func(i int) {
		args := []string{"-aHAX", "--delete"}
		if i > 0 {
			args = append(args, "--link-dest="+rsyncDest(i-1))
		}
		run("rsync", append(args, src+"/", rsyncDest(i)+"/")...)
	}
	// rsync --inplace into a btrfs subvolume, then a read-only snapshot of it.
	run("btrfs", "-q", "subvolume", "create", filepath.Join(rsb.mnt, "cur"))
	rsbRun := func(i int) {
		run("rsync", "-aHAX", "--delete", "--inplace", "--no-whole-file", src+"/", filepath.Join(rsb.mnt, "cur")+"/")
		run("btrfs", "-q", "subvolume", "snapshot", "-r", filepath.Join(rsb.mnt, "cur"), filepath.Join(rsb.mnt, fmt.Sprintf("s%d", i)))
	}
	type row struct{ a, b, c, d measured }
	var pvB, pvE, rs, rb, cp, walk row
	var entries int
	// (a) full
	walk.a = measure(srcIm.mnt, func() { entries = statWalk(src, 4) })
	if !*onlyPV {
		cp.a = measure(cpi.mnt, func() { run("cp", "-a", src, filepath.Join(cpi.mnt, "copy")) })
	}
	pvB.a = measure(btr.mnt, func() { pvRun(src, btr) })
	pvE.a = measure(ext.mnt, func() { pvRun(src, ext) })
	if !*onlyPV {
		rs.a = measure(rsy.mnt, func() { rsyncRun(0) })
		rb.a = measure(rsb.mnt, func() { rsbRun(0) })
	}
	// (b) no change
	walk.b = measure(srcIm.mnt, func() { statWalk(src, 4) })
	pvB.b = measure(btr.mnt, func() { pvRun(src, btr) })
	pvE.b = measure(ext.mnt, func() { pvRun(src, ext) })
	if !*onlyPV {
		rs.b = measure(rsy.mnt, func() { rsyncRun(1) })
		rb.b = measure(rsb.mnt, func() { rsbRun(1) })
	}
	rss := "not measured (no -engine)"
	if *engine != "" {
		// One more no-change run, in the engine child (idle I/O priority: not timed).
		_, err := backup.Spawn(context.Background(), *engine, pvJob(src, ext), nil, nil)
		must(err)
		st := latestStats(ext)
		rss = fmt.Sprintf("%.0f MB, %.0f bytes per entry", float64(st.MaxRSSKiB)*1024/1e6, float64(st.MaxRSSKiB)*1024/float64(max(st.Entries, 1)))
	}
	// Verify of the newest ext4 snapshot (re-reads and hashes every file).
	var checked uint64
	var problems []string
	verifyT := measure(ext.mnt, func() {
		var err error
		checked, problems, err = backup.Verify(context.Background(), ext.mnt, "bench", "", nil)
		must(err)
	})
	// (c) 1% change
	changed := touch(src)
	syncfs(srcIm.mnt)
	walk.c = measure(srcIm.mnt, func() { statWalk(src, 4) })
	pvB.c = measure(btr.mnt, func() { pvRun(src, btr) })
	pvE.c = measure(ext.mnt, func() { pvRun(src, ext) })
	if !*onlyPV {
		rs.c = measure(rsy.mnt, func() { rsyncRun(2) })
		rb.c = measure(rsb.mnt, func() { rsbRun(2) })
	}
	// (d) 100 bytes appended to the big file
	if _, err := os.Stat(filepath.Join(src, "append.bin")); err == nil {
		f, err := os.OpenFile(filepath.Join(src, "append.bin"), os.O_WRONLY|os.O_APPEND, 0)
		must(err)
		_, err = f.Write([]byte(strings.Repeat("z", 100)))
		must(err)
		must(f.Close())
		syncfs(srcIm.mnt)
		walk.d = measure(srcIm.mnt, func() { statWalk(src, 4) })
		pvB.d = measure(btr.mnt, func() { pvRun(src, btr) })
		pvE.d = measure(ext.mnt, func() { pvRun(src, ext) })
		if !*onlyPV {
			rs.d = measure(rsy.mnt, func() { rsyncRun(3) })
			rb.d = measure(rsb.mnt, func() { rsbRun(3) })
		}
	}
	// (a) again, for each part alone (as (c) and (d) left it), into hosts and a copy of its own.
	type partRow struct {
		part
		files        int
		bytes        int64
		cp, pvB, pvE measured
	}
	var partRows []partRow
	for _, pt := range parts {
		dir := filepath.Join(src, pt.dir)
		pr := partRow{part: pt}
		_, pr.files, pr.bytes = count(dir)
		if !*onlyPV {
			pr.cp = measure(cpi.mnt, func() { run("cp", "-a", dir, filepath.Join(cpi.mnt, "copy-"+pt.dir)) })
		}
		pr.pvB = measure(btr.mnt, func() { pvRunHost(dir, btr, "bench-"+pt.dir) })
		pr.pvE = measure(ext.mnt, func() { pvRunHost(dir, ext, "bench-"+pt.dir) })
		partRows = append(partRows, pr)
	}
	rateB, rateE := writeRate(btr.mnt), writeRate(ext.mnt)

	s := func(m measured) string {
		if !m.ran {
			return "–"
		}
		return fmt.Sprintf("%.2f s", m.t.Seconds())
	}
	sp := func(m measured) string {
		if !m.ran {
			return "–"
		}
		return fmt.Sprintf("%.1f MiB", float64(m.space)/(1<<20))
	}
	fmt.Printf("\nentries walked: %d; changed bytes in (c): %.1f MB; write rate btrfs %.0f MB/s, ext4 %.0f MB/s\n",
		entries, float64(changed)/1e6, rateB/1e6, rateE/1e6)
	fmt.Printf("engine child's peak RSS on a no-change run: %s\n", rss)
	fmt.Printf("verify of the ext4 snapshot: %d entries, %d problems, %.2f s (%.0f entries/s, %.0f MB/s of file data)\n\n",
		checked, len(problems), verifyT.t.Seconds(), float64(checked)/verifyT.t.Seconds(), float64(bytes)/1e6/verifyT.t.Seconds())
	fmt.Println("| engine | (a) full | (b) no change | (c) 1% change | (d) 100 B appended to a big file |")
	fmt.Println("|---|---|---|---|---|")
	fmt.Printf("| parallel stat walk (bound) | %s | %s | %s | %s |\n", s(walk.a), s(walk.b), s(walk.c), s(walk.d))
	for _, r := range []struct {
		name string
		r    row
	}{{"cp -a (ext4)", cp}, {"rsync -aHAX --delete --link-dest (ext4)", rs}, {"rsync --inplace + btrfs snapshot", rb},
		{"plugvault (btrfs)", pvB}, {"plugvault (ext4)", pvE}} {
		fmt.Printf("| %s | %s | %s | %s | %s |\n", r.name, s(r.r.a), s(r.r.b), s(r.r.c), s(r.r.d))
	}
	fmt.Println("\nspace each run added to its target:")
	fmt.Println("\n| engine | (a) full | (b) no change | (c) 1% change | (d) append |")
	fmt.Println("|---|---|---|---|---|")
	for _, r := range []struct {
		name string
		r    row
	}{{"cp -a (ext4)", cp}, {"rsync --link-dest (ext4)", rs}, {"rsync --inplace + btrfs snapshot", rb},
		{"plugvault (btrfs)", pvB}, {"plugvault (ext4)", pvE}} {
		fmt.Printf("| %s | %s | %s | %s | %s |\n", r.name, sp(r.r.a), sp(r.r.b), sp(r.r.c), sp(r.r.d))
	}
	r := func(x, y measured) string {
		if !x.ran || !y.ran {
			return "–"
		}
		return fmt.Sprintf("%.2f×", x.t.Seconds()/y.t.Seconds())
	}
	boundC := func(rate float64) measured {
		return measured{t: walk.c.t + time.Duration(float64(changed)/rate*float64(time.Second)), ran: true}
	}
	fmt.Println("\n| ratio | btrfs | ext4 | target |")
	fmt.Println("|---|---|---|---|")
	fmt.Printf("| (b) no change / stat walk | %s | %s | ≤ 1.2× (btrfs), ≤ 2.0× (ext4) |\n", r(pvB.b, walk.b), r(pvE.b, walk.b))
	fmt.Printf("| (b) rsync --link-dest / plugvault | %s | %s | ≥ 5× (ext4) |\n", r(rs.b, pvB.b), r(rs.b, pvE.b))
	fmt.Printf("| (c) 1%% change / (no-change time + changed bytes at write rate) | %s | %s | ≤ 1.3× |\n",
		r(pvB.c, measured{t: pvB.b.t + boundC(rateB).t - walk.c.t, ran: pvB.b.ran}),
		r(pvE.c, measured{t: pvE.b.t + boundC(rateE).t - walk.c.t, ran: pvE.b.ran}))
	fmt.Printf("| (c) 1%% change / (walk + changed bytes at write rate) | %s | %s | – |\n", r(pvB.c, boundC(rateB)), r(pvE.c, boundC(rateE)))
	fmt.Printf("| (c) rsync --link-dest / plugvault | %s | %s | – |\n", r(rs.c, pvB.c), r(rs.c, pvE.c))
	fmt.Printf("| (a) cp -a / plugvault (speed relative to cp -a), whole set | %s | %s | – |\n", r(cp.a, pvB.a), r(cp.a, pvE.a))
	for _, pr := range partRows {
		fmt.Printf("| (a) cp -a / plugvault, %s/ alone | %s | %s | %s |\n", pr.dir, r(pr.cp, pr.pvB), r(pr.cp, pr.pvE), pr.target)
	}
	fmt.Printf("| (d) space added by the append (btrfs) | %s | – | about the changed blocks |\n", sp(pvB.d))
	if len(partRows) > 0 {
		fmt.Println("\nfirst full backup of each part of the set alone:")
		fmt.Println("\n| part | files | GB | cp -a (ext4) | plugvault (btrfs) | plugvault (ext4) |")
		fmt.Println("|---|---|---|---|---|---|")
		for _, pr := range partRows {
			fmt.Printf("| %s/ | %d | %.2f | %s | %s | %s |\n", pr.dir, pr.files, float64(pr.bytes)/1e9, s(pr.cp), s(pr.pvB), s(pr.pvE))
		}
	}
}
