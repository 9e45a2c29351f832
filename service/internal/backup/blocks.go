package backup

import (
	"bytes"
	"crypto/sha256"
	"hash"
	"io"

	"golang.org/x/sys/unix"
)

// Block-level updates. A regular file of at least blockMin bytes has its block hashes in the
// manifest (Entry.Blocks). When such a file changes and the destination rewrites files from a
// clone of the version it holds (btrfs), the new version starts as a clone of the old one
// (FICLONE: no data is written) and only the blocks whose hash differs are written, so a
// 100-byte append to a 256 MiB file costs about one block on the drive. The source is read
// once: the same pass hashes the file (Entry.Hash), hashes its blocks and writes what changed.
const (
	blockSize   = 1 << 20
	blockMin    = 4 << 20
	blockSumLen = 16 // bytes of each block's SHA-256 kept
)

// blockHasher hashes a stream of content block by block.
type blockHasher struct {
	h    hash.Hash
	n    int
	sums []byte
}

func newBlockHasher() *blockHasher { return &blockHasher{h: sha256.New()} }

func (b *blockHasher) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		c := min(len(p), blockSize-b.n)
		b.h.Write(p[:c])
		b.n += c
		p = p[c:]
		if b.n == blockSize {
			b.flush()
		}
	}
	return total, nil
}

func (b *blockHasher) flush() {
	var s [sha256.Size]byte
	b.sums = append(b.sums, b.h.Sum(s[:0])[:blockSumLen]...)
	b.h.Reset()
	b.n = 0
}

// result returns the block hashes of everything written.
func (b *blockHasher) result() string {
	if b.n > 0 {
		b.flush()
	}
	return string(b.sums)
}

// blockSum is the hash kept for one block.
func blockSum(dst, p []byte) []byte {
	s := sha256.Sum256(p)
	return append(dst, s[:blockSumLen]...)
}

// updateBlocks makes out (a clone of the previous version, whose block hashes are old) hold
// the size bytes of in: it reads in once, feeds h (the file hash, may be nil), and writes only
// the blocks whose hash is not old's. It returns the bytes read, the bytes written and the new
// block hashes. buf must hold a block.
func updateBlocks(in, out int, size int64, old string, h io.Writer, buf []byte) (read, written int64, sums string, err error) {
	buf = buf[:blockSize]
	sb := make([]byte, 0, (size/blockSize+1)*blockSumLen)
	for off := int64(0); off < size; off += blockSize {
		want := int(min(blockSize, size-off))
		n, err := preadFull(in, buf[:want], off)
		if err != nil {
			return read, written, "", err
		}
		read += int64(n)
		if h != nil {
			h.Write(buf[:n])
		}
		i := len(sb)
		sb = blockSum(sb, buf[:n])
		if n > 0 && (i+blockSumLen > len(old) || !bytes.Equal(sb[i:], []byte(old[i:i+blockSumLen]))) {
			if err := pwriteFull(out, buf[:n], off); err != nil {
				return read, written, "", err
			}
			written += int64(n)
		}
		if n < want {
			// The file shrank while being read.
			size = off + int64(n)
			break
		}
	}
	if err := unix.Ftruncate(out, size); err != nil {
		return read, written, "", err
	}
	return read, written, string(sb), nil
}

// preadFull reads len(p) bytes at off, fewer only at the end of the file.
func preadFull(fd int, p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		m, err := unix.Pread(fd, p[n:], off+int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	return n, nil
}

func pwriteFull(fd int, p []byte, off int64) error {
	for w := 0; w < len(p); {
		m, err := unix.Pwrite(fd, p[w:], off+int64(w))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		w += m
	}
	return nil
}

// cloneBase opens the version of name the destination directory dfd holds, when it is the
// stored version k with block hashes, for updateBlocks; -1 otherwise.
func cloneBase(dfd int, name string, k *Entry) int {
	if k == nil || k.Type != 'f' || k.Blocks == "" || k.hasFlag(flagChanging) {
		return -1
	}
	fd, err := unix.Openat(dfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != k.Size ||
		int64(len(k.Blocks)) != (k.Size+blockSize-1)/blockSize*blockSumLen {
		unix.Close(fd)
		return -1
	}
	return fd
}
