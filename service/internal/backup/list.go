package backup

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/plugvault/plugvault/service/api"
	"golang.org/x/sys/unix"
)

// List returns the snapshots of host on the target, oldest first: complete ones and partial
// (interrupted) ones.
func List(target, host string) ([]api.Snapshot, error) {
	if !validHost(host) {
		return nil, fmt.Errorf("cannot list snapshots: invalid host name %q", host)
	}
	tfd, err := openDirPath(target)
	if err != nil {
		return nil, fmt.Errorf("cannot open target %q: %w", target, err)
	}
	defer unix.Close(tfd)
	hfd, err := openDirBeneath(tfd, rootDir+"/"+host)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, fmt.Errorf("cannot open %s/%s: %w", rootDir, host, err)
	}
	defer unix.Close(hfd)
	names, err := readDirNames(hfd)
	if err != nil {
		return nil, fmt.Errorf("cannot list the snapshots: %w", err)
	}
	var out []api.Snapshot
	for _, n := range names {
		base, status := n, api.SnapshotComplete
		if strings.HasSuffix(n, partialExt) {
			base, status = strings.TrimSuffix(n, partialExt), api.SnapshotPartial
		}
		if !api.IsSnapshotName(base) {
			continue
		}
		t, _ := time.Parse(api.SnapshotLayout, base)
		s := api.Snapshot{Name: base, Created: t.Unix(), Status: status, Changed: api.ChangedUnknown}
		if st := readStats(hfd, n); st != nil {
			s.Files, s.Bytes = st.Entries, st.Bytes
			if st.Changed != nil {
				s.Changed = int64(min(*st.Changed, math.MaxInt64))
			}
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
