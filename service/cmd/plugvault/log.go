package main

import (
	"context"
	"fmt"
	"strings"
)

func runLog(ctx context.Context, a *app, args []string) error {
	if len(args) > 1 {
		return usagef("log takes at most one DRIVE")
	}
	argv := []string{"journalctl", "--unit=plugvaultd.service", "--output=short-iso"}
	if a.o.follow {
		argv = append(argv, "--follow")
	}
	if a.o.since != "" {
		argv = append(argv, "--since="+a.o.since)
	}
	if a.o.lines > 0 {
		argv = append(argv, fmt.Sprintf("--lines=%d", a.o.lines))
	}
	if len(args) == 1 {
		c, err := a.connect(ctx)
		if err != nil {
			return fmt.Errorf("%w: %v", errNoService, err)
		}
		defer c.Close()
		a.client = c
		d, err := a.resolveDrive(ctx, args[0])
		if err != nil {
			return err
		}
		// plugvaultd names the drive by its LUKS UUID in every message about it.
		argv = append(argv, "--grep="+d.st.LuksUUID)
	}
	if a.o.json {
		return a.printJSON(struct {
			Argv []string `json:"argv"`
		}{argv})
	}
	quoted := make([]string, len(argv))
	for i, s := range argv {
		quoted[i] = shellQuote(s)
	}
	a.printf("%s\n", strings.Join(quoted, " "))
	return nil
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=./:,+@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
