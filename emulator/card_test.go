package emulator

import (
	"bytes"
	"context"
	"encoding/hex"
	"strings"
	"testing"

	"tokenlab/apdu"
)

// echoApplet answers INS 01 with P1·256+P2 bytes of a counting pattern and INS 02 with the
// length of the command data it received; it records what the runtime told it.
type echoApplet struct {
	aid                 []byte
	selects, reselects  int
	deselects, bypasses int
	lastData            []byte
}

func (e *echoApplet) AID() []byte { return e.aid }
func (e *echoApplet) Select(reselect bool, rsp []byte) ([]byte, apdu.StatusWord) {
	if reselect {
		e.reselects++
	} else {
		e.selects++
	}
	return append(rsp, 0x6F, 0x00), apdu.SWSuccess
}
func (e *echoApplet) Deselect() { e.deselects++ }
func (e *echoApplet) Bypassed() { e.bypasses++ }
func (e *echoApplet) Process(_ context.Context, cmd *apdu.Command, rsp []byte) ([]byte, apdu.StatusWord) {
	switch cmd.INS {
	case 0x01:
		n := int(cmd.P1)<<8 | int(cmd.P2)
		for i := 0; i < n; i++ {
			rsp = append(rsp, byte(i))
		}
		return rsp, apdu.SWSuccess
	case 0x02:
		e.lastData = append([]byte(nil), cmd.Data...)
		return append(rsp, byte(len(cmd.Data)>>8), byte(len(cmd.Data))), apdu.SWSuccess
	}
	return rsp, apdu.SWInstructionNotSupported
}

var (
	pivAID  = []byte{0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00}
	mgmtAID = []byte{0xA0, 0x00, 0x00, 0x05, 0x27, 0x47, 0x11, 0x17}
)

func newTestCard() (*Card, *echoApplet, *echoApplet) {
	a, b := &echoApplet{aid: pivAID}, &echoApplet{aid: mgmtAID}
	return New([]byte{0x3B, 0x00}, a, b), a, b
}

func tx(t *testing.T, c *Card, h string) (data []byte, sw string) {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(h, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.Transmit(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 2 {
		t.Fatalf("response of %d bytes", len(out))
	}
	return out[:len(out)-2], strings.ToUpper(hex.EncodeToString(out[len(out)-2:]))
}

func TestSelect(t *testing.T) {
	c, piv, mgmt := newTestCard()
	tests := []struct {
		name, apdu, sw string
		data           bool
	}{
		{"5-byte RID, no Le", "00 A4 04 00 05 A0 00 00 03 08", "9000", true},
		{"9-byte AID, Le", "00 A4 04 00 09 A0 00 00 03 08 00 00 10 00 00", "9000", true},
		{"11-byte AID", "00 A4 04 00 0B A0 00 00 03 08 00 00 10 00 01 00", "9000", true},
		{"P2 0C: no response data", "00 A4 04 0C 05 A0 00 00 03 08", "9000", false},
		{"longer than the AID", "00 A4 04 00 0C A0 00 00 03 08 00 00 10 00 01 00 FF", "6A82", false},
		{"4-byte prefix is too short", "00 A4 04 00 04 A0 00 00 03", "6A82", false},
		{"muscle (probed by OpenSC before PIV)", "00 A4 04 00 06 A0 00 00 00 01 01", "6A82", false},
		{"SELECT MF by file id", "00 A4 00 0C 02 3F 00", "6A82", false},
		{"unsupported P2", "00 A4 04 01 05 A0 00 00 03 08", "6A86", false},
	}
	for _, tt := range tests {
		data, sw := tx(t, c, tt.apdu)
		if sw != tt.sw || (len(data) > 0) != tt.data {
			t.Errorf("%s: data % X sw %s, want sw %s data %v", tt.name, data, sw, tt.sw, tt.data)
		}
	}
	if piv.selects != 1 || piv.reselects != 3 || piv.deselects != 0 {
		t.Errorf("PIV selected %d, reselected %d, deselected %d times; want 1, 3, 0", piv.selects, piv.reselects, piv.deselects)
	}
	if piv.bypasses != 5 {
		t.Errorf("failed SELECTs bypassed the PIV applet %d times, want 5", piv.bypasses)
	}
	tx(t, c, "00 A4 04 00 08 A0 00 00 05 27 47 11 17")
	if piv.deselects != 1 || mgmt.selects != 1 {
		t.Errorf("selecting another applet: PIV deselected %d, mgmt selected %d", piv.deselects, mgmt.selects)
	}
}

func TestNoAppletSelected(t *testing.T) {
	c, _, _ := newTestCard()
	// OpenSC reads the discovery object before selecting anything.
	if _, sw := tx(t, c, "00 CB 3F FF 03 5C 01 7E 08"); sw != "6A82" {
		t.Errorf("GET DATA with nothing selected: %s, want 6A82", sw)
	}
}

func TestResponseChaining(t *testing.T) {
	c, _, _ := newTestCard()
	tx(t, c, "00 A4 04 00 05 A0 00 00 03 08")
	want := make([]byte, 1000)
	for i := range want {
		want[i] = byte(i)
	}

	// No Le (piv-go, yubico-piv-tool): 256 bytes, then GET RESPONSE.
	data, sw := tx(t, c, "00 01 03 E8")
	if len(data) != 256 || sw != "6100" {
		t.Fatalf("first chunk: %d bytes, %s", len(data), sw)
	}
	got := append([]byte(nil), data...)
	for sw == "6100" || strings.HasPrefix(sw, "61") && sw != "6100" {
		data, sw = tx(t, c, "00 C0 00 00 00")
		got = append(got, data...)
		if sw == "9000" {
			break
		}
	}
	if !bytes.Equal(got, want) || sw != "9000" {
		t.Fatalf("reassembled %d bytes, sw %s", len(got), sw)
	}

	// OpenSC's length probe: Le 08 gets 8 bytes and 61xx; the next command drops the rest.
	data, sw = tx(t, c, "00 01 03 E8 08")
	if len(data) != 8 || sw != "6100" {
		t.Errorf("Le=08 probe: %d bytes, %s", len(data), sw)
	}
	if _, sw = tx(t, c, "00 01 00 10"); sw != "9000" {
		t.Errorf("command after probe: %s", sw)
	}
	if _, sw = tx(t, c, "00 C0 00 00 00"); sw != "6D00" {
		t.Errorf("GET RESPONSE with nothing pending reached the applet: %s, want its 6D00", sw)
	}

	// Last chunk says how much remains.
	_, sw = tx(t, c, "00 01 01 10") // 272 bytes
	if sw != "6110" {
		t.Errorf("272 bytes: sw %s, want 6110", sw)
	}
	data, sw = tx(t, c, "00 C0 00 00 10")
	if len(data) != 16 || sw != "9000" {
		t.Errorf("GET RESPONSE 10: %d bytes %s", len(data), sw)
	}

	// Extended Le takes everything at once (ykman over USB).
	data, sw = tx(t, c, "00 01 03 E8 00 00 00")
	if len(data) != 1000 || sw != "9000" {
		t.Errorf("extended Le: %d bytes, %s", len(data), sw)
	}
}

func TestCommandChaining(t *testing.T) {
	c, piv, _ := newTestCard()
	tx(t, c, "00 A4 04 00 05 A0 00 00 03 08")
	link := "10 02 00 00 FF " + strings.Repeat("AB", 255)
	for i := 0; i < 2; i++ {
		if data, sw := tx(t, c, link); sw != "9000" || len(data) != 0 {
			t.Fatalf("chain link %d: % X %s", i, data, sw)
		}
	}
	data, sw := tx(t, c, "00 02 00 00 03 01 02 03")
	if sw != "9000" || !bytes.Equal(data, []byte{0x02, 0x01}) || len(piv.lastData) != 513 {
		t.Fatalf("chain end: % X %s, applet got %d bytes", data, sw, len(piv.lastData))
	}

	// A different command abandons a chain and counts as a bypass.
	before := piv.bypasses
	tx(t, c, link)
	if _, sw := tx(t, c, "00 02 00 01 01 FF"); sw != "9000" || len(piv.lastData) != 1 {
		t.Errorf("after an abandoned chain the applet got %d bytes", len(piv.lastData))
	}
	if piv.bypasses != before+1 {
		t.Errorf("abandoned chain: %d bypasses, want 1", piv.bypasses-before)
	}
	if _, sw := tx(t, c, "10 A4 04 00 05 A0 00 00 03 08"); sw != "6884" {
		t.Errorf("chained SELECT: %s, want 6884", sw)
	}
}

func TestClassAndMalformed(t *testing.T) {
	c, piv, _ := newTestCard()
	tx(t, c, "00 A4 04 00 05 A0 00 00 03 08")
	tests := []struct{ apdu, sw string }{
		{"00 02 00", "6700"},
		{"00 02 00 00 05 01 02", "6700"},
		{"80 02 00 00", "6E00"},
		{"0C 02 00 00", "6882"},
		{"00 09 00 00", "6D00"},
	}
	for _, tt := range tests {
		if _, sw := tx(t, c, tt.apdu); sw != tt.sw {
			t.Errorf("%s: %s, want %s", tt.apdu, sw, tt.sw)
		}
	}
	if piv.bypasses != 4 {
		t.Errorf("%d bypasses, want 4 (the runtime answered four commands itself)", piv.bypasses)
	}
}

func TestPowerAndReset(t *testing.T) {
	c, piv, _ := newTestCard()
	for _, f := range []func(){c.Reset, c.PowerOff, c.PowerOn} {
		tx(t, c, "00 A4 04 00 05 A0 00 00 03 08")
		f()
		if _, sw := tx(t, c, "00 01 00 01"); sw != "6A82" {
			t.Errorf("after power event the applet is still selected: %s", sw)
		}
	}
	if piv.deselects != 3 {
		t.Errorf("PIV deselected %d times, want 3", piv.deselects)
	}
	if !bytes.Equal(c.ATR(), []byte{0x3B, 0x00}) {
		t.Errorf("ATR % X", c.ATR())
	}
}
