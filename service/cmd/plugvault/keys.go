package main

import "context"

func runKeys(ctx context.Context, a *app, args []string) error {
	if len(args) != 1 || args[0] != "seal" {
		return usagef("usage: plugvault keys seal")
	}
	lctx, cancel := a.longCtx(ctx)
	defer cancel()
	sealed, err := a.client.SealKeys(lctx, a.options(nil))
	if err != nil {
		return callErr(err, "cannot seal the keys")
	}
	if a.o.json {
		return a.printJSON(struct {
			Sealed []string `json:"sealed"`
		}{Sealed: append([]string{}, sealed...)})
	}
	if len(sealed) == 0 {
		a.printf("No plain keyfile left to seal.\n")
		return nil
	}
	for _, p := range sealed {
		a.printf("sealed %s\n", p)
	}
	return nil
}
