package apdu

import (
	"bytes"
	"encoding/hex"
	"errors"
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

func TestParseCommand(t *testing.T) {
	long := strings.Repeat("AB", 300)
	tests := []struct {
		name     string
		in       string
		dataLen  int
		ne       int
		extended bool
	}{
		{"case 1", "00 F7 00 9B", 0, 0, false},
		{"case 2S Le 03", "00 FD 00 00 03", 0, 3, false},
		{"case 2S Le 00 is 256", "00 FD 00 00 00", 0, 256, false},
		{"case 3S", "00 CB 3F FF 05 5C 03 5F C1 05", 5, 0, false},
		{"case 4S Le 08", "00 CB 3F FF 05 5C 03 5F C1 05 08", 5, 8, false},
		{"case 4S Le 00", "00 87 00 9B 04 7C 02 81 00 00", 4, 256, false},
		{"case 2E", "00 C0 00 00 00 01 00", 0, 256, true},
		{"case 2E Le 0000 is 65536", "00 C0 00 00 00 00 00", 0, 65536, true},
		{"case 3E small", "00 DB 3F FF 00 00 03 01 02 03", 3, 0, true},
		{"case 4E", "00 DB 3F FF 00 00 03 01 02 03 10 00", 3, 4096, true},
		{"case 3E 300 bytes", "00 DB 3F FF 00 01 2C " + long, 300, 0, true},
		{"case 4E Le 0000", "00 DB 3F FF 00 01 2C " + long + " 00 00", 300, 65536, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := unhex(t, tt.in)
			c, err := ParseCommand(in)
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Data) != tt.dataLen || c.Ne != tt.ne || c.Extended != tt.extended {
				t.Errorf("got data %d Ne %d ext %v, want %d %d %v", len(c.Data), c.Ne, c.Extended, tt.dataLen, tt.ne, tt.extended)
			}
			out, err := c.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out, in) {
				t.Errorf("marshal = % X, want % X", out, in)
			}
			if c.Len() != len(in) {
				t.Errorf("Len = %d, want %d", c.Len(), len(in))
			}
		})
	}
}

func TestParseCommandErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"empty", "", ErrShortCommand},
		{"3 bytes", "00 A4 04", ErrShortCommand},
		{"short Lc too long", "00 A4 04 00 05 A0 00 00", ErrCommandLen},
		{"short Lc too short", "00 A4 04 00 02 A0 00 00 03 08", ErrCommandLen},
		{"extended marker only", "00 A4 04 00 00 01", ErrCommandLen},
		{"extended Lc zero", "00 A4 04 00 00 00 00 01", ErrCommandLen},
		{"extended Lc mismatch", "00 A4 04 00 00 00 05 A0 00", ErrCommandLen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseCommand(unhex(t, tt.in))
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestMarshalPicksExtended(t *testing.T) {
	c := Command{INS: 0xDB, P1: 0x3F, P2: 0xFF, Data: make([]byte, 256)}
	b, err := c.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b[4:7], []byte{0, 1, 0}) {
		t.Errorf("Lc = % X, want extended 00 01 00", b[4:7])
	}
	c = Command{INS: 0xC0, Ne: 65536}
	if b, _ = c.MarshalBinary(); !bytes.Equal(b, []byte{0, 0xC0, 0, 0, 0, 0, 0}) {
		t.Errorf("Ne 65536 = % X", b)
	}
	if _, err := (&Command{Data: make([]byte, 65536)}).MarshalBinary(); err == nil {
		t.Error("65536 data bytes marshalled")
	}
	if _, err := (&Command{Ne: 65537}).MarshalBinary(); err == nil {
		t.Error("Ne 65537 marshalled")
	}
}

func TestStatusWordErrors(t *testing.T) {
	tests := []struct {
		sw   StatusWord
		want error
	}{
		{SWNotFound, ErrNotFound},
		{SWReferenceNotFound, ErrNotFound},
		{SWSecurityStatusNotSatisfied, ErrSecurityStatus},
		{SWAuthenticationBlocked, ErrBlocked},
		{0x63C2, ErrVerifyFailed},
		{SWInstructionNotSupported, ErrNotSupported},
		{SWWrongLength, ErrWrongLength},
	}
	for _, tt := range tests {
		err := tt.sw.Err()
		if !errors.Is(err, tt.want) {
			t.Errorf("%v: errors.Is(%v) = false", tt.sw, tt.want)
		}
		var e *Error
		if !errors.As(err, &e) || e.SW != tt.sw {
			t.Errorf("%v: errors.As gave %v", tt.sw, e)
		}
	}
	if SWSuccess.Err() != nil {
		t.Error("9000 is an error")
	}
	if n, ok := StatusWord(0x63C2).Retries(); !ok || n != 2 {
		t.Errorf("63C2 retries = %d, %v", n, ok)
	}
	if VerifyFailed(20) != 0x63CF || VerifyFailed(0) != 0x63C0 {
		t.Error("VerifyFailed does not saturate")
	}
	if got := StatusWord(0x6982).String(); got != "6982 (security status not satisfied)" {
		t.Errorf("String = %q", got)
	}
}
