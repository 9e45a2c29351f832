package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/plugvault/plugvault/service/api"
)

// maxSecret bounds a passphrase or keyfile read from stdin or a file; cryptsetup's own default
// limit for keyfiles is 8 MiB.
const maxSecret = 8 << 20

// isTerminal reports whether r is a terminal.
func isTerminal(r any) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// readPassphrase reads a passphrase: from stdin with --passphrase-stdin (to EOF, one trailing
// newline removed), else from the terminal without echo (twice when confirm is set). The caller
// zeroes the result.
func (a *app) readPassphrase(prompt string, confirm bool) ([]byte, error) {
	if a.o.passphraseStdin {
		p, err := readStdinPassphrase(a.stdin)
		if err != nil {
			return nil, err
		}
		if len(p) == 0 {
			return nil, usagef("the passphrase on stdin is empty")
		}
		return p, nil
	}
	f, ok := a.stdin.(*os.File)
	if !ok || !isTerminal(f) {
		return nil, usagef("stdin is not a terminal: pass the passphrase on stdin with --passphrase-stdin")
	}
	p, err := readNoEcho(f, a.stderr, prompt)
	if err != nil {
		return nil, err
	}
	if len(p) == 0 {
		return nil, usagef("the passphrase is empty")
	}
	if confirm {
		again, err := readNoEcho(f, a.stderr, "Repeat the passphrase: ")
		if err != nil {
			clear(p)
			return nil, err
		}
		same := bytes.Equal(p, again)
		clear(again)
		if !same {
			clear(p)
			return nil, usagef("the passphrases do not match")
		}
	}
	return p, nil
}

// readStdinPassphrase reads r to EOF and removes exactly one trailing "\n" (what echo, a
// here-string or a file with a final newline add); every other byte, "\r" included, is kept.
func readStdinPassphrase(r io.Reader) ([]byte, error) {
	b, err := readSecret(r)
	if err != nil {
		return nil, err
	}
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b[n-1] = 0
		b = b[:n-1]
	}
	return b, nil
}

// readSecret reads r to EOF, refusing more than maxSecret bytes. Unlike io.ReadAll it zeroes
// each buffer it outgrows, so no partial copy of the secret is left behind for the garbage
// collector; the caller zeroes the result.
func readSecret(r io.Reader) ([]byte, error) {
	b := make([]byte, 0, 512)
	for {
		if len(b) == cap(b) {
			if len(b) > maxSecret {
				clear(b)
				return nil, usagef("the secret is longer than %d bytes", maxSecret)
			}
			grown := make([]byte, len(b), 2*cap(b))
			copy(grown, b)
			clear(b)
			b = grown
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			clear(b)
			return nil, fmt.Errorf("cannot read the secret: %w", err)
		}
	}
	if len(b) > maxSecret {
		clear(b)
		return nil, usagef("the secret is longer than %d bytes", maxSecret)
	}
	return b, nil
}

// readNoEcho turns echo off on the terminal f, then prints prompt to w and reads one line
// (without its newline). Echo is off before the prompt appears, so nothing typed after the
// prompt is ever shown. Ctrl-C still interrupts (ISIG stays on) and the terminal is restored.
func readNoEcho(f *os.File, w io.Writer, prompt string) ([]byte, error) {
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, fmt.Errorf("cannot read the terminal settings: %w", err)
	}
	raw := *old
	raw.Lflag &^= unix.ECHO
	raw.Lflag |= unix.ICANON | unix.ISIG
	raw.Iflag |= unix.ICRNL
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil, fmt.Errorf("cannot turn off echo: %w", err)
	}
	defer func() {
		_ = unix.IoctlSetTermios(fd, unix.TCSETS, old)
		fmt.Fprintln(w)
	}()
	fmt.Fprint(w, prompt)
	return readLine(f)
}

// readLine reads one line byte by byte (so nothing after it is consumed) and returns it without
// the newline. EOF before any byte is an error.
func readLine(r io.Reader) ([]byte, error) {
	// Room for any sane passphrase up front: growing the slice would leave copies of the
	// secret behind in memory that nobody clears.
	line := make([]byte, 0, 4096)
	var b [1]byte
	for {
		n, err := r.Read(b[:])
		if n == 1 {
			if b[0] == '\n' {
				return line, nil
			}
			line = append(line, b[0])
			continue
		}
		if errors.Is(err, io.EOF) {
			if len(line) == 0 {
				return nil, fmt.Errorf("cannot read from the terminal: end of input: %w", api.ErrCancelled)
			}
			return line, nil
		}
		if err != nil {
			clear(line)
			return nil, fmt.Errorf("cannot read from the terminal: %w", err)
		}
	}
}

// confirm asks a question on the terminal and reads the answer; it is only called when stdin is
// a terminal.
func (a *app) ask(question string) (string, error) {
	fmt.Fprint(a.stderr, question)
	line, err := readLine(a.stdin)
	if err != nil {
		return "", err
	}
	return string(bytes.TrimSpace(line)), nil
}
