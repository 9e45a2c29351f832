package logging_test

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/coreos/go-systemd/v22/journal"

	"github.com/plugvault/plugvault/service/internal/logging"
)

func TestSecretNeverPrints(t *testing.T) {
	s := logging.Secret("hunter2")
	for _, out := range []string{
		fmt.Sprint(s), fmt.Sprintf("%s %v %q %x %#v %+v", s, s, s, s, s, s), s.String(), s.LogValue().String(),
	} {
		if strings.Contains(out, "hunter2") || strings.Contains(out, fmt.Sprintf("%x", "hunter2")) {
			t.Errorf("secret printed: %s", out)
		}
	}
	var b strings.Builder
	slog.New(slog.NewJSONHandler(&b, nil)).Info("x", "pass", s)
	slog.New(slog.NewTextHandler(&b, nil)).Info("x", "pass", s)
	slog.New(logging.NewTextHandler(&b, nil)).Info("x", "pass", s)
	if strings.Contains(b.String(), "hunter2") || strings.Count(b.String(), "[redacted]") != 3 {
		t.Errorf("secret in log output:\n%s", b.String())
	}
}

func TestTextHandler(t *testing.T) {
	var b strings.Builder
	log := slog.New(logging.NewTextHandler(&b, slog.LevelDebug)).With("drive", "6e1f")
	log.Debug("argv", "tool", "cryptsetup")
	log.Info("drive unlocked")
	log.WithGroup("job").Warn("slow", "rate", 1.5, "note", "two words")
	log.Error("cannot mount", "error", errors.New("busy\nreally"))
	want := "<7>argv drive=6e1f tool=cryptsetup\n" +
		"<6>drive unlocked drive=6e1f\n" +
		"<4>slow drive=6e1f job.rate=1.5 job.note=\"two words\"\n" +
		"<3>cannot mount drive=6e1f error=\"busy\\nreally\"\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	slog.New(logging.NewTextHandler(&b, nil)).Debug("hidden")
	if b.Len() != 0 {
		t.Errorf("debug logged at the default level: %q", b.String())
	}
}

type sent struct {
	msg    string
	prio   journal.Priority
	fields map[string]string
}

func TestJournalHandler(t *testing.T) {
	var got []sent
	send := func(msg string, prio journal.Priority, fields map[string]string) error {
		got = append(got, sent{msg, prio, fields})
		return nil
	}
	var fb strings.Builder
	log := slog.New(logging.NewJournalHandler(send, logging.NewTextHandler(&fb, nil), nil))
	log.With("sender", ":1.42").Info("call authorized", "drive.uuid", "6e1f", "message", "spoof", "_PID", "1", "pass", logging.Secret("x"))
	if len(got) != 1 {
		t.Fatalf("sent %d entries", len(got))
	}
	e := got[0]
	if e.msg != "call authorized" || e.prio != journal.PriInfo {
		t.Errorf("entry %+v", e)
	}
	want := map[string]string{"SENDER": ":1.42", "DRIVE_UUID": "6e1f", "ATTR_MESSAGE": "spoof", "PID": "1", "PASS": "[redacted]"}
	if fmt.Sprint(e.fields) != fmt.Sprint(want) {
		t.Errorf("fields %v, want %v", e.fields, want)
	}
	if fb.Len() != 0 {
		t.Errorf("fallback used: %q", fb.String())
	}

	// Without journald the record goes to the fallback.
	failing := func(string, journal.Priority, map[string]string) error { return errors.New("no journal") }
	slog.New(logging.NewJournalHandler(failing, logging.NewTextHandler(&fb, nil), nil)).Warn("fallback", "k", "v")
	if fb.String() != "<4>fallback k=v\n" {
		t.Errorf("fallback wrote %q", fb.String())
	}
}

func TestFieldName(t *testing.T) {
	for in, want := range map[string]string{
		"drive": "DRIVE", "drive.uuid": "DRIVE_UUID", "_SYSTEMD_UNIT": "SYSTEMD_UNIT", "9lives": "F_9LIVES",
		"MESSAGE": "ATTR_MESSAGE", "priority": "ATTR_PRIORITY", "": "", "___": "", "é": "",
	} {
		if got := logging.FieldName(in); got != want {
			t.Errorf("FieldName(%q) = %q, want %q", in, got, want)
		}
	}
}

// Only logging.MessageID sets MESSAGE_ID; an attribute that is merely named so cannot.
func TestMessageID(t *testing.T) {
	var got map[string]string
	send := func(_ string, _ journal.Priority, fields map[string]string) error { got = fields; return nil }
	log := slog.New(logging.NewJournalHandler(send, logging.NewTextHandler(io.Discard, nil), nil))
	log.Info("backup completed", logging.MessageID("5182124b0e7041f486a2ff765c9bab98"), "drive", "blue")
	if got["MESSAGE_ID"] != "5182124b0e7041f486a2ff765c9bab98" || got["DRIVE"] != "blue" || got["ATTR_MESSAGE_ID"] != "" {
		t.Errorf("fields %v, want MESSAGE_ID and DRIVE", got)
	}
	log.Info("forged", "message_id", "5182124b0e7041f486a2ff765c9bab98", "MESSAGE_ID", "x")
	if _, ok := got["MESSAGE_ID"]; ok {
		t.Errorf("a plain attribute set MESSAGE_ID: %v", got)
	}
}
