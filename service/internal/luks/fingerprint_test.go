package luks

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/plugvault/plugvault/service/internal/sysexec"
)

const fpUUID = "2f6a3c1e-8d4b-4e2a-9c7f-1a2b3c4d5e6f"

// luks2Meta is a LUKS2 metadata dump with the given digests section.
func luks2Meta(digests string) []byte {
	return []byte(`{"keyslots":{"0":{"type":"luks2","kdf":{"type":"pbkdf2","hash":"sha256","iterations":1000}}},
"segments":{"0":{"type":"crypt"}},"digests":{` + digests + `}}`)
}

const digestA = `"0":{"type":"pbkdf2","keyslots":["0"],"segments":["0"],"hash":"sha256","iterations":1000,
"salt":"62LXXV5IQTW2ZEBj5lcMLCbpr6QgwmB6SOxbTsKMvME=","digest":"9S9bNU47+eVTYF0XrQlXzPwsuxt5qklyAH1ePanh1VQ="}`

func TestFingerprintFromJSON(t *testing.T) {
	h, err := parseJSONDump(luks2Meta(digestA))
	if err != nil {
		t.Fatal(err)
	}
	fp, err := Fingerprint(fpUUID, h)
	if err != nil {
		t.Fatal(err)
	}
	if !FingerprintRE.MatchString(fp) {
		t.Fatalf("fingerprint %q does not match %v", fp, FingerprintRE)
	}
	// Upper-case UUID: the same drive.
	if fp2, _ := Fingerprint(strings.ToUpper(fpUUID), h); fp2 != fp {
		t.Errorf("upper-case UUID gives %q, want %q", fp2, fp)
	}
	// Another UUID, another digest, another salt: other fingerprints.
	other := strings.Replace(fpUUID, "2f6a", "2f6b", 1)
	if fp2, _ := Fingerprint(other, h); fp2 == fp {
		t.Error("another UUID gives the same fingerprint")
	}
	for _, mutate := range []func(*Header){
		func(h *Header) { h.VolumeKey.Digest = append([]byte{1}, h.VolumeKey.Digest[1:]...) },
		func(h *Header) { h.VolumeKey.Salt = append([]byte{1}, h.VolumeKey.Salt[1:]...) },
		func(h *Header) { h.VolumeKey.Iterations++ },
		func(h *Header) { h.VolumeKey.Hash = "sha512" },
	} {
		h2 := h
		mutate(&h2)
		if fp2, _ := Fingerprint(fpUUID, h2); fp2 == fp {
			t.Errorf("a changed digest (%+v) gives the same fingerprint", h2.VolumeKey)
		}
	}
}

func TestFingerprintRefusesAmbiguousHeaders(t *testing.T) {
	second := strings.NewReplacer(`"0":`, `"1":`, `"keyslots":["0"]`, `"keyslots":["1"]`, `62LX`, `72LX`).Replace(digestA)
	for name, meta := range map[string][]byte{
		// A copied digest next to the attacker's own, both bound to the data.
		"two digests on the data": luks2Meta(digestA + "," + second),
		"no digest":               luks2Meta(""),
		// The copied digest bound to no segment, the data under another.
		"digest of no segment": luks2Meta(strings.Replace(digestA, `"segments":["0"]`, `"segments":[]`, 1)),
		"a segment left out":   []byte(`{"keyslots":{},"segments":{"0":{},"1":{}},"digests":{` + digestA + `}}`),
	} {
		h, err := parseJSONDump(meta)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if fp, err := Fingerprint(fpUUID, h); err == nil {
			t.Errorf("%s: fingerprint %q, want an error", name, fp)
		}
	}
	if _, err := Fingerprint("not-a-uuid", Header{Version: 2, VolumeKey: VolumeKeyDigest{Hash: "sha256", Salt: []byte{1}, Digest: []byte{2}}}); err == nil {
		t.Error("a bad UUID was fingerprinted")
	}
}

const luks1Dump = `LUKS header information for l1.img

Version:       	1
Cipher name:   	aes
Cipher mode:   	xts-plain64
Hash spec:     	sha256
Payload offset:	4096
MK bits:       	512
MK digest:     	0c 27 e3 fb 01 54 0d ce 7a 9f 3e 8b e8 d7 19 1d de 2e 5d 19 
MK salt:       	37 f1 f2 8b 42 82 e2 1d cc 84 75 4f d6 41 b3 c3 
               	63 5b 82 29 15 f7 f8 07 34 74 42 77 d2 c0 a2 45 
MK iterations: 	275650
UUID:          	5dfc1b3d-0314-43b8-81fa-a4db39f9efa8

Key Slot 0: ENABLED
	Iterations:         	13617
	Salt:               	12 c8 b5 80 fc 00 f8 af 19 f7 0e 4d 76 34 a1 bf 
	                      	7a 4d 8b 35 f3 d6 33 d6 a8 15 86 e2 42 25 c5 20 
	Key material offset:	8
	AF stripes:            	4000
Key Slot 1: DISABLED
`

func TestFingerprintFromLUKS1Dump(t *testing.T) {
	h, err := parseTextDump([]byte(luks1Dump))
	if err != nil {
		t.Fatal(err)
	}
	vk := h.VolumeKey
	if len(vk.Digest) != 20 || vk.Digest[0] != 0x0c || len(vk.Salt) != 32 || vk.Salt[31] != 0x45 || vk.Iterations != 275650 || vk.Hash != "sha256" {
		t.Fatalf("volume-key digest %+v", vk)
	}
	if _, err := Fingerprint("5dfc1b3d-0314-43b8-81fa-a4db39f9efa8", h); err != nil {
		t.Fatal(err)
	}
}

// TestRealFingerprint formats image files with the real tool: a second header made with the
// first one's UUID (as an impostor would) has another fingerprint; adding and removing key
// slots keeps it.
func TestRealFingerprint(t *testing.T) {
	c, dir := realOnFiles(t)
	ctx := context.Background()
	ours := image(t, dir, "ours.img")
	uuid, err := c.Format(ctx, ours, []byte("ours"), "")
	if err != nil {
		t.Fatal(err)
	}
	gotUUID, fp, err := c.Identify(ctx, ours)
	if err != nil {
		t.Fatal(err)
	}
	if gotUUID != uuid {
		t.Errorf("Identify: UUID %q, want %q", gotUUID, uuid)
	}
	if !FingerprintRE.MatchString(fp) {
		t.Fatalf("fingerprint %q", fp)
	}
	if _, err := c.AddKey(ctx, ours, []byte("ours"), []byte("another key"), true); err != nil {
		t.Fatal(err)
	}
	if _, fp2, err := c.Identify(ctx, ours); err != nil || fp2 != fp {
		t.Errorf("after luksAddKey: %q, %v; want %q", fp2, err, fp)
	}

	for _, typ := range []string{"luks2", "luks1"} {
		fake := image(t, dir, "impostor-"+typ+".img")
		if _, err := (sysexec.Exec{}).Run(ctx, sysexec.Cmd{Path: c.Path(), Stdin: strings.NewReader("theirs"),
			Args: []string{"luksFormat", "--batch-mode", "--type", typ, "--uuid", uuid,
				"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", "-", fake}}); err != nil {
			t.Fatalf("luksFormat %s: %v", typ, err)
		}
		if got, err := c.UUID(ctx, fake); err != nil || got != uuid {
			t.Fatalf("%s impostor UUID %q, %v; want %q", typ, got, err, uuid)
		}
		_, fp2, err := c.Identify(ctx, fake)
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		if fp2 == fp {
			t.Errorf("%s impostor with the copied UUID has our fingerprint", typ)
		}
	}
	_ = os.Remove(ours)
}
