package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/pelletier/go-toml/v2/unstable"
)

// ErrNoDrive is returned (wrapped) by RemoveDrive when no [[drive]] has the given luks_uuid.
var ErrNoDrive = errors.New("no such drive")

// editMu serialises read-modify-write cycles of the file within the daemon, the only writer.
var editMu sync.Mutex

// newFileHeader starts a configuration file that AppendDrive creates.
const newFileHeader = `# plugvault configuration (see config.toml.example in plugvault's documentation for every
# setting). plugvault adds and removes [[drive]] entries itself and keeps your comments.
version = 1
`

// AppendDrive adds d as a new [[drive]] at the end of the file at path and writes it
// atomically, keeping everything else in the file as it was (comments included). The file is
// created if missing. The result must validate as a whole (a duplicate name or luks_uuid is
// refused), otherwise nothing is written.
func AppendDrive(path string, d Drive) error {
	editMu.Lock()
	defer editMu.Unlock()
	old, err := readForEdit(path)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	if old == nil {
		b.WriteString(newFileHeader)
	} else {
		b.Write(old)
		if len(old) > 0 && old[len(old)-1] != '\n' {
			b.WriteByte('\n')
		}
	}
	b.WriteByte('\n')
	renderDrive(&b, d)
	if _, err := parse(path, b.Bytes()); err != nil {
		return fmt.Errorf("cannot add drive %q to %s:\n%w", d.Name, path, err)
	}
	return writeAtomic(path, b.Bytes())
}

// RemoveDrive deletes the [[drive]] whose luks_uuid is luksUUID from the file at path, with
// its sub-tables and the comment lines directly above its header, and writes the file
// atomically. Everything else stays as it was. It wraps ErrNoDrive if there is no such drive.
func RemoveDrive(path string, luksUUID string) error {
	return editDrive(path, luksUUID, "remove drive "+luksUUID+" from", func(old []byte, bl driveBlock) []byte {
		out := append(append([]byte{}, old[:bl.start]...), old[bl.end:]...)
		// Do not leave two blank lines where the block was.
		if bl.start > 1 && bl.start < len(out) && out[bl.start-1] == '\n' && out[bl.start-2] == '\n' && out[bl.start] == '\n' {
			out = append(out[:bl.start], out[bl.start+1:]...)
		}
		if bl.start == len(out) {
			out = append(bytes.TrimRight(out, "\n"), '\n')
		}
		return out
	})
}

// SetFingerprint records fp as the fingerprint of the [[drive]] whose luks_uuid is luksUUID,
// replacing the one it has or adding the line below luks_uuid, and writes the file
// atomically. Everything else stays as it was. It wraps ErrNoDrive if there is no such drive.
func SetFingerprint(path, luksUUID, fp string) error {
	line := "fingerprint = " + tomlString(fp) + "\n"
	return editDrive(path, luksUUID, "record the fingerprint of drive "+luksUUID+" in", func(old []byte, bl driveBlock) []byte {
		if bl.fpEnd > 0 {
			return append(append(append([]byte{}, old[:bl.fpStart]...), line...), old[bl.fpEnd:]...)
		}
		at := bl.uuidLineEnd
		out := append([]byte{}, old[:at]...)
		if at > 0 && out[at-1] != '\n' {
			out = append(out, '\n')
		}
		return append(append(out, line...), old[at:]...)
	})
}

// editDrive rewrites the file at path with edit applied to the [[drive]] whose luks_uuid is
// luksUUID (the last one first, should there be several), checks that the result still
// validates, and writes it atomically. what says what is done, for errors ("remove drive X
// from"). It wraps ErrNoDrive if there is no such drive.
func editDrive(path, luksUUID, what string, edit func(old []byte, bl driveBlock) []byte) error {
	editMu.Lock()
	defer editMu.Unlock()
	old, err := readForEdit(path)
	if err != nil {
		return err
	}
	if old == nil {
		return fmt.Errorf("cannot %s %s: it does not exist: %w", what, path, ErrNoDrive)
	}
	blocks, err := driveBlocks(old)
	if err != nil {
		return fmt.Errorf("cannot %s %s: %w", what, path, err)
	}
	out := old
	found := false
	// From the last block backwards, so that earlier offsets stay valid.
	for i := len(blocks) - 1; i >= 0; i-- {
		if blocks[i].uuid == luksUUID {
			out, found = edit(out, blocks[i]), true
		}
	}
	if !found {
		return fmt.Errorf("cannot %s %s: no [[drive]] has this luks_uuid: %w", what, path, ErrNoDrive)
	}
	if _, err := parse(path, out); err != nil {
		return fmt.Errorf("cannot %s %s:\n%w", what, path, err)
	}
	return writeAtomic(path, out)
}

// lineEnd returns the offset after the newline that ends the line holding off (or len(data)).
func lineEnd(data []byte, off int) int {
	if i := bytes.IndexByte(data[off:], '\n'); i >= 0 {
		return off + i + 1
	}
	return len(data)
}

// readForEdit returns the file's contents, or nil if it does not exist. It refuses a symbolic
// link: replacing it with a file would silently detach it from where the administrator
// keeps the real file.
func readForEdit(path string) ([]byte, error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot update configuration: %w", err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return nil, fmt.Errorf("cannot update configuration %s: it is a symbolic link, which plugvault never replaces; edit the file it points to", path)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("cannot update configuration %s: not a regular file", path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot update configuration: %w", err)
	}
	if data == nil {
		data = []byte{}
	}
	return data, nil
}

// writeAtomic replaces path with data: a temporary file in the same directory, fsync, rename
// over path, fsync of the directory. Readers see the old file or the new one, never a mix, and
// a crash leaves at most a stray temporary file. The result is mode 0644 and, when run as
// root, owned by root.
func writeAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("cannot update configuration: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("cannot update configuration: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("cannot update configuration: %w", err)
	}
	if os.Geteuid() == 0 {
		if err := f.Chown(0, 0); err != nil {
			return fmt.Errorf("cannot update configuration: %w", err)
		}
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("cannot update configuration: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("cannot update configuration: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("cannot update configuration: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("cannot update configuration: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("cannot update configuration: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("cannot update configuration: %w", err)
	}
	return nil
}

// driveBlock is the byte range of one [[drive]] in the file.
type driveBlock struct {
	start, end     int
	uuid           string
	uuidLineEnd    int // offset after the luks_uuid line's newline
	fpStart, fpEnd int // the fingerprint line, newline included (0, 0: none)
}

// driveBlocks finds every [[drive]] with its sub-tables. A block starts at the comment lines
// directly above its header (no blank line between) and ends where the next table that is not
// one of its sub-tables starts, minus the comment lines directly above that table.
func driveBlocks(data []byte) ([]driveBlock, error) {
	type header struct {
		line  int // offset of the start of the header's line
		drive bool
	}
	var headers []header
	var blocks []driveBlock
	var p unstable.Parser
	p.Reset(data)
	inDrive := false
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.ArrayTable, unstable.Table:
			keys, first := keyParts(e)
			start := lineStart(data, p.Shape(first.Raw).Start.Offset)
			isDrive := e.Kind == unstable.ArrayTable && len(keys) == 1 && keys[0] == "drive"
			sub := len(keys) > 1 && keys[0] == "drive"
			if isDrive || !sub {
				headers = append(headers, header{start, isDrive})
			}
			if isDrive {
				blocks = append(blocks, driveBlock{start: start})
			}
			inDrive = isDrive || (sub && inDrive)
		case unstable.KeyValue:
			keys, _ := keyParts(e)
			if !inDrive || len(keys) != 1 {
				break
			}
			b := &blocks[len(blocks)-1]
			v := e.Value()
			switch keys[0] {
			case "luks_uuid":
				if v != nil && v.Kind == unstable.String {
					b.uuid = string(v.Data)
					b.uuidLineEnd = lineEnd(data, p.Shape(v.Raw).End.Offset)
				}
			case "fingerprint":
				if v != nil {
					_, first := keyParts(e)
					b.fpStart = lineStart(data, p.Shape(first.Raw).Start.Offset)
					b.fpEnd = lineEnd(data, p.Shape(v.Raw).End.Offset)
				}
			}
		}
	}
	if err := p.Error(); err != nil {
		return nil, fmt.Errorf("cannot parse: %w", err)
	}
	bi := 0
	for hi, h := range headers {
		if !h.drive {
			continue
		}
		end := len(data)
		if hi+1 < len(headers) {
			end = commentsAbove(data, headers[hi+1].line)
		}
		blocks[bi].start = commentsAbove(data, h.line)
		blocks[bi].end = contentEnd(data, h.line, end)
		bi++
	}
	return blocks, nil
}

// contentEnd returns where a block that may extend to end really ends: after its last line
// that is neither blank nor a comment, and the comment lines directly below it (commented-out
// settings). Comment paragraphs after a blank line are about what follows, and stay.
func contentEnd(data []byte, start, end int) int {
	last := start // offset just past the last content line
	attached := true
	for off := start; off < end; {
		next := bytes.IndexByte(data[off:end], '\n')
		if next < 0 {
			next = end
		} else {
			next += off + 1
		}
		line := strings.TrimSpace(string(data[off:next]))
		switch {
		case line == "":
			attached = false
		case strings.HasPrefix(line, "#"):
			if attached {
				last = next
			}
		default:
			last, attached = next, true
		}
		off = next
	}
	return last
}

func lineStart(data []byte, off int) int {
	return bytes.LastIndexByte(data[:off], '\n') + 1
}

// commentsAbove moves the line offset up over the comment lines directly above it.
func commentsAbove(data []byte, line int) int {
	for line > 0 {
		prev := lineStart(data, line-1)
		if !strings.HasPrefix(strings.TrimSpace(string(data[prev:line])), "#") {
			break
		}
		line = prev
	}
	return line
}

// renderDrive writes d as a [[drive]] table in the order of the example file, leaving out
// what is unset.
func renderDrive(b *bytes.Buffer, d Drive) {
	b.WriteString("[[drive]]\n")
	fmt.Fprintf(b, "name = %s\n", tomlString(d.Name))
	fmt.Fprintf(b, "luks_uuid = %s\n", tomlString(d.LuksUUID))
	if d.Fingerprint != "" {
		fmt.Fprintf(b, "fingerprint = %s\n", tomlString(d.Fingerprint))
	}
	if d.Keyfile != "" {
		fmt.Fprintf(b, "keyfile = %s\n", tomlString(d.Keyfile))
	}
	fmt.Fprintf(b, "key_slot = %d\n", d.KeySlot)
	if len(d.Sources) > 0 {
		fmt.Fprintf(b, "sources = %s\n", tomlStrings(d.Sources))
	}
	if len(d.Excludes) > 0 {
		fmt.Fprintf(b, "excludes = %s\n", tomlStrings(d.Excludes))
	}
	if d.RunAs != "" {
		fmt.Fprintf(b, "run_as = %s\n", tomlString(d.RunAs))
	}
	if len(d.MountOptions) > 0 {
		fmt.Fprintf(b, "mount_options = %s\n", tomlStrings(d.MountOptions))
	}
	if r := d.Retention; r != (Retention{}) {
		b.WriteString("[drive.retention]\n")
		fmt.Fprintf(b, "keep_all_hours = %d\n", r.KeepAllHours)
		fmt.Fprintf(b, "daily_days = %d\n", r.DailyDays)
		fmt.Fprintf(b, "weekly_weeks = %d\n", r.WeeklyWeeks)
		fmt.Fprintf(b, "min_free_percent = %d\n", r.MinFreePercent)
	}
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			b.WriteString(`\u` + fmt.Sprintf("%04X", r))
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func tomlStrings(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = tomlString(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
