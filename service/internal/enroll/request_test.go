package enroll_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/plugvault/plugvault/service/internal/enroll"
)

// The requests that carry a passphrase or keyfile print it as [redacted], however they are
// printed or logged; the bytes stay usable (and zeroable) as a []byte.
func TestRequestsDoNotPrintTheirSecrets(t *testing.T) {
	pass := []byte("hunter2")
	enr := enroll.Request{Device: "/dev/sdb", Passphrase: pass}
	adopt := enroll.AdoptRequest{Device: "/dev/sdc", Secret: []byte("keyfile")}
	var log bytes.Buffer
	slog.New(slog.NewTextHandler(&log, nil)).Info("request", "enroll", enr, "adopt", adopt)
	for _, out := range []string{
		fmt.Sprintf("%v %+v %#v", enr, enr, enr),
		fmt.Sprintf("%v %+v %#v", adopt, adopt, adopt),
		log.String(),
	} {
		if strings.Contains(out, "hunter2") || strings.Contains(out, "keyfile") || strings.Contains(out, fmt.Sprint([]byte("hunter2"))) || !strings.Contains(out, "[redacted]") {
			t.Errorf("a secret is printed: %s", out)
		}
	}
	var b []byte = enr.Passphrase
	clear(b)
	if pass[0] != 0 {
		t.Error("the request's passphrase is not the caller's buffer")
	}
}
