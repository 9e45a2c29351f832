package main

import (
	"fmt"
	"io"

	"github.com/plugvault/plugvault/service/internal/config"
)

// optionalPath is a flag that may be given alone (--check-config) or with a value
// (--check-config=FILE).
type optionalPath struct {
	set  bool
	path string
}

func (p *optionalPath) String() string { return p.path }

func (p *optionalPath) IsBoolFlag() bool { return true }

func (p *optionalPath) Set(s string) error {
	p.set = true
	if s != "true" {
		p.path = s
	}
	return nil
}

// checkConfig prints every problem of the configuration at path (config.Load joins them).
func checkConfig(path string, stdout, stderr io.Writer) int {
	_, err := config.Load(path)
	if err == nil {
		fmt.Fprintf(stdout, "%s: ok\n", path)
		return 0
	}
	problems := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		problems = j.Unwrap()
	}
	for _, p := range problems {
		fmt.Fprintln(stderr, p)
	}
	return 1
}
