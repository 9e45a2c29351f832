package e2e

import (
	"bufio"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

//go:embed image/build-image.sh
var buildScript []byte

//go:embed image/packages.txt
var packageList []byte

// Image is a built guest: a kernel, its initrd and an ext4 root filesystem image.
type Image struct {
	Dir     string
	Kernel  string
	Initrd  string
	Root    string
	Key     string        // the cache key (hash of the package list and the build script)
	Built   bool          // built by this call (false: taken from the cache)
	Elapsed time.Duration // how long the build took
}

// Packages returns the guest image's Debian packages.
func Packages() []string {
	var pkgs []string
	sc := bufio.NewScanner(strings.NewReader(string(packageList)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line != "" && !strings.HasPrefix(line, "#") {
			pkgs = append(pkgs, line)
		}
	}
	return pkgs
}

// ImageKey is the cache key: any change to the package list or the build script rebuilds.
func ImageKey() string {
	h := sha256.New()
	h.Write(packageList)
	h.Write([]byte{0})
	h.Write(buildScript)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// DefaultCacheDir is where built images are kept between runs: $PLUGVAULT_E2E_CACHE, else
// $XDG_CACHE_HOME/plugvault-e2e, else /var/cache/plugvault-e2e for root, else
// ~/.cache/plugvault-e2e. Never inside the repository.
func DefaultCacheDir() string {
	if d := os.Getenv("PLUGVAULT_E2E_CACHE"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "plugvault-e2e")
	}
	if os.Geteuid() == 0 {
		return "/var/cache/plugvault-e2e"
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "plugvault-e2e")
}

// EnsureImage returns the cached image for the current key, building it first when it is
// missing. Concurrent callers serialise on a lock file; a half-built image is never used
// (the build happens in a temporary directory that is renamed into place when complete).
// Older images in cacheDir are removed.
func EnsureImage(cacheDir string, logw io.Writer) (*Image, error) {
	key := ImageKey()
	img := &Image{Dir: filepath.Join(cacheDir, "image-"+key), Key: key}
	img.Kernel = filepath.Join(img.Dir, "vmlinuz")
	img.Initrd = filepath.Join(img.Dir, "initrd.img")
	img.Root = filepath.Join(img.Dir, "root.img")
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create the image cache: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(cacheDir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cannot open the image cache lock: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return nil, fmt.Errorf("cannot lock the image cache: %w", err)
	}
	if _, err := os.Stat(filepath.Join(img.Dir, "complete")); err == nil {
		return img, nil
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("cannot build the guest image: mmdebstrap needs root")
	}
	fmt.Fprintf(logw, "building the guest image %s in %s (mmdebstrap, once per package list)\n", key, cacheDir)
	start := time.Now()
	tmp, err := os.MkdirTemp(cacheDir, "build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	script := filepath.Join(tmp, "build-image.sh")
	if err := os.WriteFile(script, buildScript, 0o755); err != nil {
		return nil, err
	}
	out := filepath.Join(tmp, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		return nil, err
	}
	cmd := exec.Command(script, out, strings.Join(Packages(), ","))
	cmd.Stdout, cmd.Stderr = logw, logw
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("cannot build the guest image: %w", err)
	}
	if err := os.WriteFile(filepath.Join(out, "complete"), []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		return nil, err
	}
	old, _ := filepath.Glob(filepath.Join(cacheDir, "image-*"))
	for _, o := range old {
		os.RemoveAll(o)
	}
	if err := os.Rename(out, img.Dir); err != nil {
		return nil, fmt.Errorf("cannot store the guest image: %w", err)
	}
	img.Built, img.Elapsed = true, time.Since(start)
	fmt.Fprintf(logw, "guest image built in %.1fs\n", img.Elapsed.Seconds())
	return img, nil
}
