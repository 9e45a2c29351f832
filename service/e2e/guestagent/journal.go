package main

import (
	"bufio"
	"context"
	"encoding/json"
	"os/exec"
	"strings"

	"github.com/plugvault/plugvault/service/e2e/agentproto"
)

// watchJournal follows plugvaultd's journal and records each new entry as a KindJournal event
// with its string fields that do not start with "_". The daemon logs each step of a run at
// debug level (STEP=, PHASE=) and its runtime figures on SIGUSR1 (GOROUTINES=, FDS=, RSS_KIB=),
// so the host can wait for "cryptsetup open has begun" as it waits for a udev event.
func (a *agent) watchJournal(ctx context.Context, logf func(string, ...any)) {
	cmd := exec.CommandContext(ctx, "journalctl", "--follow", "--lines=0", "--output=json", "_SYSTEMD_UNIT=plugvaultd.service")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logf("cannot follow the journal: %v", err)
		return
	}
	if err := cmd.Start(); err != nil {
		logf("cannot follow the journal: %v", err)
		return
	}
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var fields map[string]any
		if json.Unmarshal(sc.Bytes(), &fields) != nil {
			continue
		}
		props := map[string]string{}
		for k, v := range fields {
			if s, ok := v.(string); ok && !strings.HasPrefix(k, "_") {
				props[k] = s
			}
		}
		a.record(agentproto.Event{Kind: agentproto.KindJournal, Props: props})
	}
	logf("journalctl ended: %v", cmd.Wait())
}
