package vpcd

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// trickle returns one byte per Read, as TCP may when vpcd 0.8 writes the length and the payload
// in two send calls.
type trickle struct{ r io.Reader }

func (t trickle) Read(p []byte) (int, error) { return t.r.Read(p[:min(1, len(p))]) }

func TestReadFrame(t *testing.T) {
	stream := []byte{0x00, 0x01, 0x04, 0x00, 0x05, 0x00, 0xA4, 0x04, 0x00, 0x00}
	r := trickle{bytes.NewReader(stream)}
	f, err := ReadFrame(r, nil)
	if err != nil || !bytes.Equal(f, []byte{0x04}) {
		t.Fatalf("first frame % X, %v", f, err)
	}
	m, err := ParseMessage(f)
	if err != nil || !m.IsControl || m.Control != GetATR {
		t.Fatalf("get ATR parsed as %+v, %v", m, err)
	}
	f, err = ReadFrame(r, f)
	if err != nil || !bytes.Equal(f, []byte{0x00, 0xA4, 0x04, 0x00, 0x00}) {
		t.Fatalf("second frame % X, %v", f, err)
	}
	if m, _ := ParseMessage(f); m.IsControl || len(m.APDU) != 5 {
		t.Errorf("APDU parsed as %+v", m)
	}
	if _, err := ReadFrame(r, nil); err != io.EOF {
		t.Errorf("at end: %v, want io.EOF", err)
	}
	if _, err := ReadFrame(bytes.NewReader([]byte{0x00, 0x05, 0x01}), nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated frame: %v", err)
	}
}

func TestParseMessage(t *testing.T) {
	for b, want := range map[byte]Control{0: PowerOff, 1: PowerOn, 2: Reset, 4: GetATR} {
		m, err := ParseMessage([]byte{b})
		if err != nil || !m.IsControl || m.Control != want {
			t.Errorf("control %d: %+v %v", b, m, err)
		}
	}
	if _, err := ParseMessage([]byte{3}); !errors.Is(err, ErrUnknownControl) {
		t.Errorf("control 3 (there is none): %v", err)
	}
	if _, err := ParseMessage(nil); !errors.Is(err, ErrEmptyMessage) {
		t.Errorf("empty: %v", err)
	}
}

func TestAppendFrame(t *testing.T) {
	out, err := AppendFrame(nil, []byte{0x90, 0x00})
	if err != nil || !bytes.Equal(out, []byte{0x00, 0x02, 0x90, 0x00}) {
		t.Errorf("frame % X, %v", out, err)
	}
	if _, err := AppendFrame(nil, make([]byte, MaxPayload+1)); err == nil {
		t.Error("oversized frame accepted")
	}
}

func FuzzFrame(f *testing.F) {
	f.Add([]byte{0x00, 0x01, 0x04})                                                       // get ATR
	f.Add([]byte{0x00, 0x01, 0x01, 0x00, 0x01, 0x02})                                     // power on, reset
	f.Add([]byte{0x00, 0x0A, 0x00, 0xA4, 0x04, 0x00, 0x05, 0xA0, 0x00, 0x00, 0x03, 0x08}) // SELECT PIV
	f.Add([]byte{0xFF, 0xFF, 0x00})
	f.Fuzz(func(t *testing.T, stream []byte) {
		r := bytes.NewReader(stream)
		var buf []byte
		for {
			frame, err := ReadFrame(r, buf)
			if err != nil {
				return
			}
			m, err := ParseMessage(frame)
			if err == nil && m.IsControl == (len(frame) != 1) {
				t.Fatalf("frame of %d bytes classified as control=%v", len(frame), m.IsControl)
			}
			out, err := AppendFrame(nil, frame)
			if err != nil {
				t.Fatal(err)
			}
			back, err := ReadFrame(bytes.NewReader(out), nil)
			if err != nil || !bytes.Equal(back, frame) {
				t.Fatalf("round trip % X -> % X", frame, back)
			}
			buf = frame[:0]
		}
	})
}
