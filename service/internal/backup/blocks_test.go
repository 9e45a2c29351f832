package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// pattern is n bytes of deterministic, incompressible-enough content.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ byte(i>>11) ^ seed
	}
	return b
}

func writeTemp(t *testing.T, data []byte) int {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(p, unix.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func TestUpdateBlocksWritesOnlyChangedBlocks(t *testing.T) {
	old := pattern(5*blockSize+300, 1)
	bh := newBlockHasher()
	bh.Write(old)
	oldSums := bh.result()
	for _, c := range []struct {
		name   string
		change func([]byte) []byte
		dirty  []int // blocks that differ (by index)
	}{
		{"append", func(b []byte) []byte { return append(b, bytes.Repeat([]byte("x"), 100)...) }, []int{5}},
		{"middle byte", func(b []byte) []byte { b[2*blockSize+17] ^= 0xff; return b }, []int{2}},
		{"truncated", func(b []byte) []byte { return b[:3*blockSize+5] }, []int{3}},
		{"unchanged", func(b []byte) []byte { return b }, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := c.change(append([]byte(nil), old...))
			in := writeTemp(t, src)
			out := writeTemp(t, old) // what a clone of the old version holds
			h := sha256.New()
			read, written, sums, err := updateBlocks(in, out, int64(len(src)), oldSums, h, make([]byte, blockSize))
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(src)+10)
			n, _ := unix.Pread(out, got, 0)
			if !bytes.Equal(got[:n], src) {
				t.Fatalf("result differs from the source (%d bytes, want %d)", n, len(src))
			}
			var want int64
			for _, i := range c.dirty {
				want += int64(min(blockSize, len(src)-i*blockSize))
			}
			if read != int64(len(src)) || written != want {
				t.Errorf("read %d, wrote %d; want %d, %d", read, written, len(src), want)
			}
			whole := sha256.Sum256(src)
			if hex.EncodeToString(h.Sum(nil)) != hex.EncodeToString(whole[:]) {
				t.Error("the file hash is not the source's")
			}
			bh := newBlockHasher()
			bh.Write(src)
			if sums != bh.result() {
				t.Error("block hashes differ from a fresh hash of the source")
			}
		})
	}
}

func TestManifestBlocksRoundTrip(t *testing.T) {
	bh := newBlockHasher()
	bh.Write(pattern(blockMin+1, 3))
	en := Entry{Path: "a b/c", Type: 'f', Mode: 0o644, Size: blockMin + 1, Hash: strings.Repeat("ab", 32), Blocks: bh.result()}
	line := strings.TrimSuffix(string(appendEntry(nil, &en)), "\n")
	got, err := parseEntry(line)
	if err != nil || got != en {
		t.Fatalf("parse(%q) = %+v, %v", line, got, err)
	}
	// A line of a manifest written before block hashes existed still parses.
	en.Blocks = ""
	old := strings.TrimSuffix(string(appendEntry(nil, &en)), "\n")
	if got, err := parseEntry(old); err != nil || got != en {
		t.Fatalf("parse(%q) = %+v, %v", old, got, err)
	}
}

// usedBytes is the space used on the filesystem of fd, after a sync.
func usedBytes(t *testing.T, dir string) int64 {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	unix.Syncfs(fd)
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Blocks-st.Bfree) * st.Bsize
}

func TestRootBtrfsAppendWritesChangedBlocksOnly(t *testing.T) {
	src := t.TempDir()
	const size = 32 << 20
	big := filepath.Join(src, "big")
	if err := os.WriteFile(big, pattern(size, 9), 0o644); err != nil {
		t.Fatal(err)
	}
	job := rootJob(t, src, "btrfs")
	first := runGuarded(t, job)
	m, err := readManifestFile(filepath.Join(job.Target, rootDir, job.Host, first.Snapshot, metaDir, "manifest"))
	if err != nil {
		t.Fatal(err)
	}
	if en := m[strings.TrimPrefix(big, "/")]; en == nil || len(en.Blocks) != size/blockSize*blockSumLen {
		t.Fatalf("manifest entry of the big file has no block hashes: %+v", en)
	}
	f, err := os.OpenFile(big, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(bytes.Repeat([]byte("y"), 100))
	f.Close()
	before := usedBytes(t, job.Target)
	second := runGuarded(t, job)
	grown := usedBytes(t, job.Target) - before
	compareSnapshot(t, job, src)
	st := readStatsFile(t, job, second.Snapshot)
	t.Logf("a 100-byte append to a %d MiB file wrote %d bytes; the drive's used space grew by %d KiB", size>>20, st.BytesWritten, grown>>10)
	if st.BytesWritten >= blockSize {
		t.Errorf("the append wrote %d bytes, more than one block", st.BytesWritten)
	}
	if grown >= size/2 {
		t.Errorf("the drive's used space grew by %d bytes for a 100-byte append: the file was not cloned", grown)
	}
	for _, snap := range []string{first.Snapshot, second.Snapshot} {
		if _, problems, err := Verify(context.Background(), job.Target, job.Host, snap, nil); err != nil || len(problems) > 0 {
			t.Errorf("verify %s: %v %q", snap, err, problems)
		}
	}
}
