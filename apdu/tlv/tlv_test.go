package tlv

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []Object
	}{
		{"one-byte tag", "53 02 70 00", []Object{{0x53, []byte{0x70, 0x00}}}},
		{"two-byte tag", "7F 49 03 86 01 04", []Object{{0x7F49, []byte{0x86, 0x01, 0x04}}}},
		{"three-byte tag", "5C 03 5F C1 05", []Object{{0x5C, []byte{0x5F, 0xC1, 0x05}}}},
		{"tag 5FC105 itself", "5F C1 05 01 AA", []Object{{0x5FC105, []byte{0xAA}}}},
		{"long form 81", "53 81 03 01 02 03", []Object{{0x53, []byte{1, 2, 3}}}},
		{"long form 82", "53 82 00 02 01 02", []Object{{0x53, []byte{1, 2}}}},
		{"long form 83", "53 83 00 00 01 07", []Object{{0x53, []byte{7}}}},
		{"empty value and sequence", "82 00 81 01 FF", []Object{{0x82, []byte{}}, {0x81, []byte{0xFF}}}},
		{"nothing", "", nil},
	}
	for _, tt := range tests {
		got, err := Parse(unhex(t, tt.in))
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if len(got) != len(tt.want) {
			t.Errorf("%s: %d objects, want %d", tt.name, len(got), len(tt.want))
			continue
		}
		for i := range got {
			if got[i].Tag != tt.want[i].Tag || !bytes.Equal(got[i].Value, tt.want[i].Value) {
				t.Errorf("%s: object %d = %v % X, want %v % X", tt.name, i, got[i].Tag, got[i].Value, tt.want[i].Tag, tt.want[i].Value)
			}
		}
	}
}

func TestParseMalformed(t *testing.T) {
	for _, in := range []string{
		"53",                   // no length
		"53 03 01 02",          // value too short
		"53 80",                // indefinite length
		"53 84 00 00 00 01 00", // four length bytes
		"53 81",                // truncated long form
		"5F",                   // truncated multi-byte tag
		"5F C1 C2 05 00",       // four-byte tag
	} {
		if _, err := Parse(unhex(t, in)); err == nil {
			t.Errorf("Parse(%s) accepted malformed input", in)
		}
	}
}

func TestAppend(t *testing.T) {
	tests := []struct {
		tag  Tag
		n    int
		want string
	}{
		{0x7C, 0, "7C 00"},
		{0x7C, 0x7F, "7C 7F"},
		{0x7C, 0x80, "7C 81 80"},
		{0x53, 0xFF, "53 81 FF"},
		{0x53, 0x100, "53 82 01 00"},
		{0x5FC105, 0x10000, "5F C1 05 83 01 00 00"},
		{0x7F49, 3, "7F 49 03"},
	}
	for _, tt := range tests {
		v := make([]byte, tt.n)
		got := Append(nil, tt.tag, v)
		want := unhex(t, tt.want)
		if !bytes.Equal(got[:len(want)], want) || len(got) != len(want)+tt.n {
			t.Errorf("Append(%v, %d bytes) header % X, want % X", tt.tag, tt.n, got[:min(len(got), len(want))], want)
		}
		if HeaderLen(tt.tag, tt.n) != len(want) {
			t.Errorf("HeaderLen(%v, %d) = %d, want %d", tt.tag, tt.n, HeaderLen(tt.tag, tt.n), len(want))
		}
	}
}

func TestTagValid(t *testing.T) {
	for tag, want := range map[Tag]bool{0x53: true, 0x7F49: true, 0x5FC105: true, 0x5F: false, 0x5FC1: false, 0x7C01: false, 0x1F0000: false, 0x01000000: false} {
		if tag.Valid() != want {
			t.Errorf("%X.Valid() = %v", uint32(tag), !want)
		}
	}
}

func TestFindUnwrap(t *testing.T) {
	b := unhex(t, "7C 06 82 00 81 02 AA BB")
	body, ok := Unwrap(b, 0x7C)
	if !ok {
		t.Fatal("Unwrap failed")
	}
	if v, ok := Find(body, 0x81); !ok || !bytes.Equal(v, []byte{0xAA, 0xBB}) {
		t.Errorf("Find 81 = % X %v", v, ok)
	}
	if _, ok := Find(body, 0x85); ok {
		t.Error("found an absent tag")
	}
	if _, ok := Unwrap(append(b, 0), 0x7C); ok {
		t.Error("Unwrap accepted trailing bytes")
	}
}

// FuzzTLV: parsing never panics, and what parses re-encodes to bytes that parse to the same
// objects (lengths may shrink to their minimal form).
func FuzzTLV(f *testing.F) {
	for _, s := range []string{
		"61114F0600001000010079074F05A000000308",                                       // SELECT PIV response (YubiKey 5)
		"7E124F0BA0000003080000100001005F2F024000",                                     // discovery object
		"7C2482008120000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F", // GENERAL AUTHENTICATE
		"7F494386410400",           // public key template (cut)
		"5382012E7082012530820121", // certificate object header
		"AC0980011 1AA0102AB0101",
		"0101FF0202000005010106020303", // GET METADATA 80
		"5C035FC105",
	} {
		f.Add(unhex(f, strings.ReplaceAll(s, " ", "")))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		objs, err := Parse(b)
		Find(b, 0x7C)
		Unwrap(b, 0x53)
		if err != nil {
			return
		}
		var out []byte
		for _, o := range objs {
			if !o.Tag.Valid() {
				t.Fatalf("Parse returned malformed tag %X", uint32(o.Tag))
			}
			out = Append(out, o.Tag, o.Value)
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("re-encoded objects do not parse: %v", err)
		}
		if len(again) != len(objs) {
			t.Fatalf("%d objects became %d", len(objs), len(again))
		}
		for i := range objs {
			if objs[i].Tag != again[i].Tag || !bytes.Equal(objs[i].Value, again[i].Value) {
				t.Fatalf("object %d changed: %+v -> %+v", i, objs[i], again[i])
			}
		}
		if len(out) > len(b) {
			t.Fatalf("minimal encoding grew from %d to %d bytes", len(b), len(out))
		}
	})
}
