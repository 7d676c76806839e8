package p11rpc

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// The first request and reply of a connection, header included (§1.2).
var (
	firstRequestFrame = mustHex("00000010 00000006 00000042" + asciiHex("client") +
		"00000001 00000005" + asciiHex("ayyay") + "01 00000029" + asciiHex(rpcHandshake) + "00 01 00000001 00")
	firstReplyFrame = mustHex("00000010 00000000 00000008 00000001 00000000")
)

func TestReadFrameCaptured(t *testing.T) {
	stream := append(append([]byte{}, firstRequestFrame...), firstReplyFrame...)
	r := bytes.NewReader(stream)

	f, err := ReadFrame(r, 0)
	if err != nil {
		t.Fatal(err)
	}
	if f.Code != 0x10 || string(f.Options) != "client" || len(f.Body) != 0x42 {
		t.Fatalf("got code %#x options %q body %d bytes", f.Code, f.Options, len(f.Body))
	}
	if !bytes.Equal(f.Body, mustHex(captures[0].hex)) {
		t.Fatalf("body % x", f.Body)
	}
	g, err := ReadFrame(r, 0)
	if err != nil {
		t.Fatal(err)
	}
	if g.Code != 0x10 || len(g.Options) != 0 || !bytes.Equal(g.Body, mustHex("00000001 00000000")) {
		t.Fatalf("reply %+v", g)
	}
	if _, err := ReadFrame(r, 0); err != io.EOF {
		t.Fatalf("at a frame boundary: got %v, want io.EOF", err)
	}

	for _, tc := range []struct {
		f    Frame
		want []byte
	}{{f, firstRequestFrame}, {g, firstReplyFrame}} {
		out, err := AppendFrame(nil, tc.f)
		if err != nil || !bytes.Equal(out, tc.want) {
			t.Fatalf("AppendFrame = % x, %v; want % x", out, err, tc.want)
		}
	}
}

func TestReadFrameErrors(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		maxBody int
		is      error
		msg     string
	}{
		{"empty stream", "", 0, io.EOF, ""},
		{"header cut", "00000010 0000", 0, io.ErrUnexpectedEOF, "header"},
		{"options cut", "00000010 00000006 00000000 636c69", 0, io.ErrUnexpectedEOF, "6 option"},
		{"body cut", "00000010 00000000 00000008 00000001", 0, io.ErrUnexpectedEOF, "8 body"},
		{"zero code", "00000000 00000000 00000000", 0, ErrZeroCode, ""},
		{"options over limit", "00000010 00000101 00000000", 0, ErrFrameTooLarge, "options length 257"},
		{"options 0xffffffff", "00000010 ffffffff 00000000", 0, ErrFrameTooLarge, "options length 4294967295"},
		{"body over the caller's limit", "00000010 00000000 00000011", 16, ErrFrameTooLarge, "body length 17 exceeds the limit of 16"},
		{"body 0x7fffffff", "00000010 00000000 7fffffff", 0, ErrFrameTooLarge, "body length 2147483647"},
		{"body 0xffffffff", "00000010 00000000 ffffffff", 0, ErrFrameTooLarge, "body length 4294967295"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadFrame(bytes.NewReader(mustHex(tc.in)), tc.maxBody)
			if !errors.Is(err, tc.is) {
				t.Fatalf("got %v, want %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %q does not say %q", err, tc.msg)
			}
		})
	}
}

// oneWrite records how many Write calls it received.
type oneWrite struct {
	bytes.Buffer
	writes int
}

func (w *oneWrite) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

func TestWriteFrameSingleWrite(t *testing.T) {
	var w oneWrite
	f := Frame{Code: 0x10, Options: []byte("client"), Body: mustHex(captures[0].hex)}
	if err := WriteFrame(&w, f); err != nil {
		t.Fatal(err)
	}
	if w.writes != 1 {
		t.Fatalf("%d writes, want 1", w.writes)
	}
	if !bytes.Equal(w.Bytes(), firstRequestFrame) {
		t.Fatalf("wrote % x", w.Bytes())
	}
}

func TestAppendFrameErrors(t *testing.T) {
	if _, err := AppendFrame(nil, Frame{Code: 0}); !errors.Is(err, ErrZeroCode) {
		t.Errorf("code 0: %v", err)
	}
	if _, err := AppendFrame(nil, Frame{Code: 1, Options: make([]byte, MaxOptionsLen+1)}); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("long options: %v", err)
	}
	if err := WriteFrame(io.Discard, Frame{Code: 0}); !errors.Is(err, ErrZeroCode) {
		t.Errorf("WriteFrame code 0: %v", err)
	}
}

// pipe is a ReadWriter whose reads come from in and whose writes go to out.
type pipe struct {
	in  io.Reader
	out bytes.Buffer
}

func (p *pipe) Read(b []byte) (int, error)  { return p.in.Read(b) }
func (p *pipe) Write(b []byte) (int, error) { return p.out.Write(b) }

func TestServerHandshake(t *testing.T) {
	for _, offer := range []byte{0, 1, 2, 7, 0xff} {
		p := &pipe{in: bytes.NewReader([]byte{offer})}
		got, err := ServerHandshake(p)
		if err != nil {
			t.Fatalf("offer %d: %v", offer, err)
		}
		if got != Protocol(offer) {
			t.Errorf("offer %d: returned %d", offer, got)
		}
		if !bytes.Equal(p.out.Bytes(), []byte{0}) {
			t.Errorf("offer %d: answered % x, want 00", offer, p.out.Bytes())
		}
	}
	if _, err := ServerHandshake(&pipe{in: bytes.NewReader(nil)}); !errors.Is(err, io.EOF) {
		t.Errorf("no byte: %v", err)
	}
}

func TestClientHandshake(t *testing.T) {
	p := &pipe{in: bytes.NewReader([]byte{0})}
	got, err := ClientHandshake(p, Protocol2)
	if err != nil || got != ProtocolAnswer || !bytes.Equal(p.out.Bytes(), []byte{2}) {
		t.Fatalf("got %d, %v, wrote % x", got, err, p.out.Bytes())
	}
}

// A FrameReader hands out the frames of a stream in order, whatever the read sizes, and leaves
// no byte of them in its buffer.
func TestFrameReader(t *testing.T) {
	var stream []byte
	want := []Frame{
		{Code: 1, Body: []byte("\x00\x00\x00\x0dPIN-123456")},
		{Code: 2, Options: []byte("opt"), Body: bytes.Repeat([]byte{7}, 5000)}, // larger than the buffer
		{Code: 3, Body: nil},
	}
	for _, f := range want {
		var err error
		if stream, err = AppendFrame(stream, f); err != nil {
			t.Fatal(err)
		}
	}
	fr := NewFrameReader(iotest.HalfReader(bytes.NewReader(stream)), 0)
	for i, w := range want {
		got, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if got.Code != w.Code || !bytes.Equal(got.Options, w.Options) || !bytes.Equal(got.Body, w.Body) {
			t.Fatalf("frame %d: got code %d, %d option and %d body bytes", i, got.Code, len(got.Options), len(got.Body))
		}
		if bytes.Contains(fr.buf, []byte("PIN-123456")) {
			t.Fatalf("after frame %d the buffer still holds the PIN", i)
		}
	}
	if _, err := fr.ReadFrame(); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
}
