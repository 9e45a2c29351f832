package main

import "context"

func runVersion(ctx context.Context, a *app, args []string) error {
	cli := cliVersion()
	daemon := ""
	if c, err := a.connect(ctx); err == nil {
		rctx, cancel := a.readCtx(ctx)
		daemon, _ = c.Version(rctx)
		cancel()
		c.Close()
	}
	if a.o.json {
		return a.printJSON(struct {
			CLI    string `json:"cli"`
			Daemon string `json:"daemon"`
		}{cli, daemon})
	}
	a.printf("plugvault %s\n", cli)
	if daemon == "" {
		daemon = "not reachable"
	}
	a.printf("plugvaultd %s\n", daemon)
	return nil
}
