package config

import (
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// position is a 1-based line and column in the file.
type position struct{ line, col int }

// positions maps key paths to where they are written, so that a validation problem can point
// at its line. Paths name drives by index: "drive.0.luks_uuid", "drive.1" (the [[drive]]
// header), "mount_base".
type positions struct {
	at map[string]position
	// problems are structural mistakes the decoder accepts silently, such as [drive]
	// written for [[drive]].
	problems []locatedError
}

// indexPositions walks the document with go-toml's parser. A document that does not parse
// yields what was indexed up to the error; the decoder reports the error itself.
func indexPositions(data []byte) *positions {
	idx := &positions{at: map[string]position{}}
	var p unstable.Parser
	p.Reset(data)
	drives := -1
	table := "" // path prefix of the current table, "" at the top level
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.ArrayTable, unstable.Table:
			keys, first := keyParts(e)
			pos := idx.headerPos(&p, first)
			if len(keys) > 0 && keys[0] == "drive" {
				if e.Kind == unstable.ArrayTable && len(keys) == 1 {
					drives++
					table = "drive." + strconv.Itoa(drives)
					idx.at[table] = pos
					continue
				}
				if e.Kind == unstable.Table && len(keys) == 1 {
					idx.problems = append(idx.problems, locatedError{pos,
						"drive: written as [drive]; write [[drive]] (two brackets): each drive is one entry of a list"})
				}
				if drives < 0 {
					table = strings.Join(keys, ".")
				} else {
					table = "drive." + strconv.Itoa(drives) + "." + strings.Join(keys[1:], ".")
				}
			} else {
				table = strings.Join(keys, ".")
			}
			table = strings.TrimSuffix(table, ".")
			idx.at[table] = pos
		case unstable.KeyValue:
			keys, first := keyParts(e)
			path := strings.Join(keys, ".")
			if table != "" {
				path = table + "." + path
			}
			idx.at[path] = idx.pos(&p, first)
		}
	}
	return idx
}

// keyParts returns the parts of an expression's (possibly dotted) key and its first key node.
func keyParts(e *unstable.Node) ([]string, *unstable.Node) {
	var parts []string
	var first *unstable.Node
	it := e.Key()
	for it.Next() {
		n := it.Node()
		if first == nil {
			first = n
		}
		parts = append(parts, string(n.Data))
	}
	return parts, first
}

func (idx *positions) pos(p *unstable.Parser, n *unstable.Node) position {
	if n == nil {
		return position{}
	}
	s := p.Shape(n.Raw)
	return position{s.Start.Line, s.Start.Column}
}

// headerPos is the position of the '[' that opens a table header whose first key is n.
func (idx *positions) headerPos(p *unstable.Parser, n *unstable.Node) position {
	if n == nil {
		return position{}
	}
	data := p.Data()
	off := int(n.Raw.Offset)
	for off > 0 && (data[off-1] == '[' || data[off-1] == ' ' || data[off-1] == '\t') {
		off--
	}
	for off < int(n.Raw.Offset) && data[off] != '[' {
		off++
	}
	s := p.Shape(unstable.Range{Offset: uint32(off), Length: 0})
	return position{s.Start.Line, s.Start.Column}
}

// lookup returns the position of path or, failing that, of the nearest enclosing table or key
// that is written in the file (a missing key points at its drive's [[drive]] header).
func (idx *positions) lookup(path string) (position, bool) {
	for path != "" {
		if pos, ok := idx.at[path]; ok && pos.line > 0 {
			return pos, true
		}
		i := strings.LastIndex(path, ".")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return position{}, false
}
