// Package logging is plugvaultd's log/slog setup. Under systemd, when stderr is connected to
// the journal, records go to journald as native entries with upper-case fields (DRIVE=,
// SENDER=, ACTION=, …), so `journalctl DRIVE=…` works. Anywhere else they are written to stderr
// as text with the "<N>" syslog priority prefix, which journald also understands.
//
// Secrets never reach a log: wrap them in Secret, which prints as "[redacted]".
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/coreos/go-systemd/v22/journal"
)

// Secret holds a secret (a passphrase, a key) that may end up near a log call. Every way of
// printing it gives "[redacted]".
type Secret []byte

const redacted = "[redacted]"

// String implements fmt.Stringer.
func (Secret) String() string { return redacted }

// GoString implements fmt.GoStringer, so %#v does not print the bytes either.
func (Secret) GoString() string { return redacted }

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText keeps the secret out of JSON and text encoders.
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// Priority returns the syslog priority of a slog level: debug 7, info 6, between info and warn
// (notice) 5, warn 4, error 3.
func Priority(l slog.Level) journal.Priority {
	switch {
	case l < slog.LevelInfo:
		return journal.PriDebug
	case l < slog.LevelInfo+2:
		return journal.PriInfo
	case l < slog.LevelWarn:
		return journal.PriNotice
	case l < slog.LevelError:
		return journal.PriWarning
	default:
		return journal.PriErr
	}
}

// New returns the daemon's logger: native journal entries when stderr is the journal, else
// prefixed text on stderr.
func New(level slog.Leveler) *slog.Logger {
	text := NewTextHandler(os.Stderr, level)
	if ok, err := journal.StderrIsJournalStream(); err == nil && ok {
		return slog.New(NewJournalHandler(journal.Send, text, level))
	}
	return slog.New(text)
}

// kv is one flattened attribute.
type kv struct{ key, value string }

// common is what both handlers share: the level, the attributes and groups added with
// WithAttrs/WithGroup, flattened to "group.key".
type common struct {
	level  slog.Leveler
	attrs  []kv
	prefix string // current group prefix, "" or "g1.g2."
}

func (c *common) enabled(l slog.Level) bool {
	min := slog.LevelInfo
	if c.level != nil {
		min = c.level.Level()
	}
	return l >= min
}

func (c common) withAttrs(as []slog.Attr) common {
	n := c
	n.attrs = append([]kv(nil), c.attrs...)
	for _, a := range as {
		n.attrs = flatten(n.attrs, c.prefix, a)
	}
	return n
}

func (c common) withGroup(name string) common {
	n := c
	if name != "" {
		n.prefix = c.prefix + name + "."
	}
	return n
}

func (c *common) record(r slog.Record) []kv {
	out := append([]kv(nil), c.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		out = flatten(out, c.prefix, a)
		return true
	})
	return out
}

func flatten(out []kv, prefix string, a slog.Attr) []kv {
	v := a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return out
	}
	if v.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p = prefix + a.Key + "."
		}
		for _, g := range v.Group() {
			out = flatten(out, p, g)
		}
		return out
	}
	var s string
	switch v.Kind() {
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			s = err.Error()
		} else {
			s = fmt.Sprint(v.Any())
		}
	default:
		s = v.String()
	}
	return append(out, kv{prefix + a.Key, s})
}

// TextHandler writes "<N>message key=value …" lines.
type TextHandler struct {
	common
	mu *sync.Mutex
	w  io.Writer
}

// NewTextHandler returns a handler that writes to w.
func NewTextHandler(w io.Writer, level slog.Leveler) *TextHandler {
	return &TextHandler{common: common{level: level}, mu: &sync.Mutex{}, w: w}
}

// Enabled implements slog.Handler.
func (h *TextHandler) Enabled(_ context.Context, l slog.Level) bool { return h.enabled(l) }

// WithAttrs implements slog.Handler.
func (h *TextHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &TextHandler{common: h.withAttrs(as), mu: h.mu, w: h.w}
}

// WithGroup implements slog.Handler.
func (h *TextHandler) WithGroup(name string) slog.Handler {
	return &TextHandler{common: h.withGroup(name), mu: h.mu, w: h.w}
}

// Handle implements slog.Handler.
func (h *TextHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "<%d>%s", Priority(r.Level), oneLine(r.Message))
	for _, a := range h.record(r) {
		b.WriteByte(' ')
		b.WriteString(a.key)
		b.WriteByte('=')
		b.WriteString(quoteIfNeeded(a.value))
	}
	b.WriteByte('\n')
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, b.String())
	return err
}

// oneLine keeps a message on one line: a newline would start a new journal entry.
func oneLine(s string) string {
	if !strings.ContainsAny(s, "\n\r") {
		return s
	}
	return strings.NewReplacer("\n", `\n`, "\r", `\r`).Replace(s)
}

func quoteIfNeeded(s string) string {
	if s == "" || strings.ContainsFunc(s, func(r rune) bool {
		return r <= ' ' || r == '"' || r == '=' || r == '\\' || r == 0x7f || r >= 0x80 && !strconv.IsPrint(r)
	}) {
		return strconv.Quote(s)
	}
	return s
}

// MESSAGE_IDs of plugvaultd's journal entries (service/systemd/plugvault.catalog explains
// each).
const (
	MessageBackupCompleted = "5182124b0e7041f486a2ff765c9bab98"
	MessageBackupFailed    = "ec49cf070e404582b6d0acedc008f4c2"
	MessageImpostor        = "9deb08d63b934dc185f0ee06da0837c9"
	MessageOverdue         = "f8fbdd78552843abbea2e25d5f5e4f3d"
)

// messageID is the value type of MessageID's attribute.
type messageID string

// MessageID is the attribute that sets a journal entry's MESSAGE_ID (a journal catalog entry,
// journalctl --catalog). Only this attribute sets it: any other attribute named message_id
// becomes ATTR_MESSAGE_ID, so a logged value never forges one.
func MessageID(id string) slog.Attr { return slog.Any("message_id", messageID(id)) }

// SendFunc sends one journal entry (journal.Send).
type SendFunc func(message string, priority journal.Priority, fields map[string]string) error

// JournalHandler writes native journal entries: MESSAGE, PRIORITY and one upper-case field
// per attribute. When sending fails (no journald) it writes the record to its fallback.
type JournalHandler struct {
	common
	send     SendFunc
	fallback slog.Handler
}

// NewJournalHandler returns a handler that sends with send and falls back to fallback.
func NewJournalHandler(send SendFunc, fallback slog.Handler, level slog.Leveler) *JournalHandler {
	return &JournalHandler{common: common{level: level}, send: send, fallback: fallback}
}

// Enabled implements slog.Handler.
func (h *JournalHandler) Enabled(_ context.Context, l slog.Level) bool { return h.enabled(l) }

// WithAttrs implements slog.Handler.
func (h *JournalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &JournalHandler{common: h.withAttrs(as), send: h.send, fallback: h.fallback.WithAttrs(as)}
}

// WithGroup implements slog.Handler.
func (h *JournalHandler) WithGroup(name string) slog.Handler {
	return &JournalHandler{common: h.withGroup(name), send: h.send, fallback: h.fallback.WithGroup(name)}
}

// Handle implements slog.Handler.
func (h *JournalHandler) Handle(ctx context.Context, r slog.Record) error {
	fields := map[string]string{}
	for _, a := range h.record(r) {
		name := FieldName(a.key)
		if name == "" {
			continue
		}
		fields[name] = a.value
	}
	r.Attrs(func(a slog.Attr) bool {
		if id, ok := a.Value.Any().(messageID); ok {
			delete(fields, FieldName(a.Key))
			fields["MESSAGE_ID"] = string(id)
		}
		return true
	})
	if err := h.send(r.Message, Priority(r.Level), fields); err != nil {
		return h.fallback.Handle(ctx, r)
	}
	return nil
}

// FieldName turns an attribute key into a journal field name: upper case, every byte that is
// not a letter or digit becomes "_", no leading "_" (those are trusted fields journald sets)
// and no clash with the fields the handler sets itself.
func FieldName(key string) string {
	b := make([]byte, 0, len(key))
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c >= 'a' && c <= 'z':
			b = append(b, c-'a'+'A')
		case c >= 'A' && c <= 'Z' || c >= '0' && c <= '9':
			b = append(b, c)
		default:
			b = append(b, '_')
		}
	}
	name := strings.TrimLeft(string(b), "_")
	if name != "" && name[0] >= '0' && name[0] <= '9' {
		name = "F_" + name
	}
	if len(name) > 64 {
		name = name[:64]
	}
	switch name {
	case "MESSAGE", "PRIORITY", "MESSAGE_ID", "SYSLOG_IDENTIFIER", "CODE_FILE", "CODE_LINE", "CODE_FUNC":
		name = "ATTR_" + name
	}
	return name
}
