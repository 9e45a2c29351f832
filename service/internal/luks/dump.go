package luks

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Header is what plugvault needs from a LUKS header.
type Header struct {
	Version  int             // 1 or 2
	Keyslots map[int]Keyslot // active key slots by number
}

// Keyslot describes one active key slot.
type Keyslot struct {
	Type       string // "luks2", or "luks1" for a LUKS1 header
	PBKDF      string // "argon2id", "argon2i" or "pbkdf2"
	Iterations int64  // pbkdf2 iterations, or the argon2 time cost
	Memory     int64  // argon2 memory in KiB; 0 for pbkdf2
}

// SlotNumbers returns the active slot numbers in ascending order.
func (h Header) SlotNumbers() []int {
	s := make([]int, 0, len(h.Keyslots))
	for n := range h.Keyslots {
		s = append(s, n)
	}
	sort.Ints(s)
	return s
}

// parseJSONDump reads luksDump --dump-json-metadata (LUKS2). Numbers that can exceed 2^53 are
// JSON strings in LUKS2 (offsets, sizes); the ones read here are plain numbers.
func parseJSONDump(b []byte) (Header, error) {
	var meta struct {
		Keyslots map[string]struct {
			Type string `json:"type"`
			KDF  struct {
				Type       string `json:"type"`
				Iterations int64  `json:"iterations"`
				Time       int64  `json:"time"`
				Memory     int64  `json:"memory"`
			} `json:"kdf"`
		} `json:"keyslots"`
	}
	if err := json.Unmarshal(b, &meta); err != nil {
		return Header{}, fmt.Errorf("cannot parse the LUKS2 metadata: %w", err)
	}
	if meta.Keyslots == nil {
		return Header{}, fmt.Errorf("cannot parse the LUKS2 metadata: no keyslots object")
	}
	h := Header{Version: 2, Keyslots: make(map[int]Keyslot)}
	for k, ks := range meta.Keyslots {
		n, err := strconv.Atoi(k)
		if err != nil || n < 0 || n > maxSlot || strconv.Itoa(n) != k {
			return Header{}, fmt.Errorf("cannot parse the LUKS2 metadata: bad key slot %q", k)
		}
		slot := Keyslot{Type: ks.Type, PBKDF: ks.KDF.Type, Memory: ks.KDF.Memory}
		if ks.KDF.Type == "pbkdf2" {
			slot.Iterations = ks.KDF.Iterations
		} else {
			slot.Iterations = ks.KDF.Time
		}
		h.Keyslots[n] = slot
	}
	return h, nil
}

var (
	luks1SlotRe = regexp.MustCompile(`^Key Slot (\d+): (ENABLED|DISABLED)$`)
	iterRe      = regexp.MustCompile(`^\s+Iterations:\s+(\d+)$`)
)

// parseTextDump reads a LUKS1 luksDump. A LUKS2 text dump is refused: use the JSON.
func parseTextDump(b []byte) (Header, error) {
	h := Header{Keyslots: make(map[int]Keyslot)}
	cur := -1
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "Version:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return Header{}, fmt.Errorf("cannot parse the LUKS header dump: version %q", v)
			}
			h.Version = n
			continue
		}
		if m := luks1SlotRe.FindStringSubmatch(line); m != nil {
			n, _ := strconv.Atoi(m[1])
			cur = -1
			if m[2] == "ENABLED" {
				if n > 7 {
					return Header{}, fmt.Errorf("cannot parse the LUKS header dump: key slot %d", n)
				}
				cur = n
				h.Keyslots[n] = Keyslot{Type: "luks1", PBKDF: "pbkdf2"}
			}
			continue
		}
		if m := iterRe.FindStringSubmatch(line); m != nil && cur >= 0 {
			it, _ := strconv.ParseInt(m[1], 10, 64)
			ks := h.Keyslots[cur]
			ks.Iterations = it
			h.Keyslots[cur] = ks
		}
	}
	if h.Version != 1 {
		return Header{}, fmt.Errorf("cannot parse the LUKS header dump: version %d is not LUKS1", h.Version)
	}
	return h, nil
}
