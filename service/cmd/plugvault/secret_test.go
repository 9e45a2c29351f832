package main

import (
	"bytes"
	"io"
	"testing"
)

// trickleReader hands out data at most chunk bytes per Read and keeps every buffer it was
// given.
type trickleReader struct {
	data  []byte
	chunk int
	bufs  [][]byte
}

func (r *trickleReader) Read(p []byte) (int, error) {
	r.bufs = append(r.bufs, p)
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.chunk)], r.data)
	r.data = r.data[n:]
	return n, nil
}

// dirty returns how many of the buffers read into still hold a non-zero byte (each backing
// array is scanned once, to its capacity).
func (r *trickleReader) dirty() int {
	seen := map[*byte]bool{}
	n := 0
	for _, b := range r.bufs {
		b = b[:cap(b)]
		if len(b) == 0 || seen[&b[len(b)-1]] {
			continue
		}
		seen[&b[len(b)-1]] = true
		for _, c := range b {
			if c != 0 {
				n++
				break
			}
		}
	}
	return n
}

// A secret read from stdin or a file leaves no copy behind: once the caller zeroes what
// readSecret returned, every buffer it read into is zero, also those it outgrew.
func TestReadSecretLeavesNoCopies(t *testing.T) {
	secret := bytes.Repeat([]byte("s3cret!"), 1000) // 7000 bytes: the buffer grows several times
	r := &trickleReader{data: bytes.Clone(secret), chunk: 100}
	got, err := readSecret(r)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("readSecret = %d bytes, %v", len(got), err)
	}
	clear(got)
	if n := r.dirty(); n != 0 {
		t.Fatalf("%d buffers still hold secret bytes", n)
	}
	// Too long: refused, and nothing stays behind either.
	r = &trickleReader{data: bytes.Repeat([]byte("x"), maxSecret+1), chunk: 1 << 20}
	if _, err := readSecret(r); err == nil {
		t.Fatal("an oversized secret was accepted")
	}
	if n := r.dirty(); n != 0 {
		t.Fatalf("oversized: %d buffers still hold secret bytes", n)
	}
}
