package luks

import (
	"bufio"
	"bytes"
	"encoding/hex"
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
	// VolumeKey is the digest that the data segment's volume key is checked against; zero
	// when the header has no single one (volumeKeyProblem says why).
	VolumeKey        VolumeKeyDigest
	volumeKeyProblem string
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

// ParseDump reads what `cryptsetup luksDump` prints: the JSON metadata of a LUKS2 header
// (--dump-json-metadata) or the text dump of a LUKS1 header.
func ParseDump(b []byte) (Header, error) {
	if t := bytes.TrimSpace(b); len(t) > 0 && t[0] == '{' {
		return parseJSONDump(b)
	}
	return parseTextDump(b)
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
		Segments map[string]json.RawMessage `json:"segments"`
		Digests  map[string]struct {
			Type       string   `json:"type"`
			Segments   []string `json:"segments"`
			Hash       string   `json:"hash"`
			Iterations int64    `json:"iterations"`
			Salt       []byte   `json:"salt"`   // base64
			Digest     []byte   `json:"digest"` // base64
		} `json:"digests"`
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
	// The volume key of the data: exactly one digest covers the segments, and it covers all
	// of them. A header with more (an online reencryption in progress, or one crafted so that
	// a second digest sits next to a copied one) has no single identity.
	var bound []string
	for id, dg := range meta.Digests {
		if len(dg.Segments) > 0 {
			bound = append(bound, id)
		}
	}
	if len(bound) != 1 {
		h.volumeKeyProblem = fmt.Sprintf("%d volume-key digests cover the data segments, not 1 (is a reencryption in progress?)", len(bound))
		return h, nil
	}
	dg := meta.Digests[bound[0]]
	covered := map[string]bool{}
	for _, seg := range dg.Segments {
		covered[seg] = true
	}
	for seg := range meta.Segments {
		if !covered[seg] {
			h.volumeKeyProblem = fmt.Sprintf("data segment %q has no volume-key digest", seg)
			return h, nil
		}
	}
	h.VolumeKey = VolumeKeyDigest{Type: dg.Type, Hash: dg.Hash, Iterations: dg.Iterations, Salt: dg.Salt, Digest: dg.Digest}
	return h, nil
}

var (
	luks1SlotRe = regexp.MustCompile(`^Key Slot (\d+): (ENABLED|DISABLED)$`)
	iterRe      = regexp.MustCompile(`^\s+Iterations:\s+(\d+)$`)
	// "MK digest:", "MK salt:" (hex bytes, continued on indented lines), "MK iterations:",
	// "Hash spec:".
	luks1FieldRe = regexp.MustCompile(`^(MK digest|MK salt|MK iterations|Hash spec):\s*(.*)$`)
	hexLineRe    = regexp.MustCompile(`^\s+((?:[0-9a-f]{2} ?)+)$`)
)

// parseTextDump reads a LUKS1 luksDump. A LUKS2 text dump is refused: use the JSON.
func parseTextDump(b []byte) (Header, error) {
	h := Header{Keyslots: make(map[int]Keyslot)}
	cur := -1
	var hexField *[]byte // the MK field whose hex bytes may continue on the next line
	var badHex error
	appendHex := func(dst *[]byte, s string) {
		raw, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(s), " ", ""))
		if err != nil {
			badHex = fmt.Errorf("cannot parse the LUKS header dump: %w", err)
		}
		*dst = append(*dst, raw...)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if m := luks1FieldRe.FindStringSubmatch(line); m != nil {
			hexField = nil
			vk := &h.VolumeKey
			switch m[1] {
			case "MK digest":
				hexField = &vk.Digest
			case "MK salt":
				hexField = &vk.Salt
			case "MK iterations":
				it, err := strconv.ParseInt(strings.TrimSpace(m[2]), 10, 64)
				if err != nil {
					return Header{}, fmt.Errorf("cannot parse the LUKS header dump: MK iterations %q", m[2])
				}
				vk.Iterations = it
			case "Hash spec":
				vk.Hash = strings.TrimSpace(m[2])
			}
			if hexField != nil {
				appendHex(hexField, m[2])
			}
			continue
		}
		if hexField != nil {
			if m := hexLineRe.FindStringSubmatch(line); m != nil {
				appendHex(hexField, m[1])
				continue
			}
			hexField = nil
		}
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
	if badHex != nil {
		return Header{}, badHex
	}
	h.VolumeKey.Type = "pbkdf2"
	return h, nil
}
