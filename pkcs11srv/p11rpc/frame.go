// Package p11rpc is the wire codec of the p11-kit RPC protocol, which carries PKCS#11 calls from
// p11-kit-client.so to a server.
package p11rpc

// Section (§1.2) and pitfall (P8) numbers in this package refer to the reference notes
// p11kit-rpc.md. A connection starts with a one-byte version handshake (ServerHandshake), then
// carries frames (ReadFrame, WriteFrame) whose bodies are messages: a server decodes requests
// with ParseRequest and encodes replies with NewResponse or ErrorBody; the mirror pair
// NewRequest and ParseResponse is the client side, for tests and fuzzers.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// Protocol is the version byte of the handshake (§1.1). The byte the client offers selects
// the mechanism layout and the attribute type table of its messages, even though the server
// always answers ProtocolAnswer.
type Protocol byte

// Protocol versions, named after the p11-kit releases whose clients offer them.
const (
	// Protocol0 is offered by p11-kit up to 0.24.x (Debian 12 ships 0.24.1).
	Protocol0 Protocol = 0
	// Protocol1 is offered by p11-kit 0.25.0–0.25.5: PKCS#11 3.0 calls and typed
	// mechanism parameters.
	Protocol1 Protocol = 1
	// Protocol2 is offered by p11-kit 0.25.6 and later: a presence byte before mechanism
	// parameters. Higher offers are decoded as Protocol2, the newest layout known here.
	Protocol2 Protocol = 2
)

// ProtocolAnswer is the version byte this server answers to every offer: the 0.24.1 set of
// calls, which every p11-kit client speaks (§1.1, pitfall P8).
const ProtocolAnswer Protocol = 0

// layout returns the newest version this package knows that is not newer than p.
func (p Protocol) layout() Protocol {
	if p > Protocol2 {
		return Protocol2
	}
	return p
}

// ServerHandshake reads the version byte a client offers and answers ProtocolAnswer. It never
// refuses an offer: p11-kit clients newer than 0.24 reconnect and retry when they are hung up
// on, which would cost a connection for nothing. The offered byte is returned for
// ParseRequest.
func ServerHandshake(rw io.ReadWriter) (offered Protocol, err error) {
	var b [1]byte
	if _, err := io.ReadFull(rw, b[:]); err != nil {
		return 0, fmt.Errorf("p11rpc: reading the client's version byte: %w", err)
	}
	if _, err := rw.Write([]byte{byte(ProtocolAnswer)}); err != nil {
		return 0, fmt.Errorf("p11rpc: answering the version byte: %w", err)
	}
	return Protocol(b[0]), nil
}

// ClientHandshake offers version offer and returns the server's answer.
func ClientHandshake(rw io.ReadWriter, offer Protocol) (answer Protocol, err error) {
	if _, err := rw.Write([]byte{byte(offer)}); err != nil {
		return 0, fmt.Errorf("p11rpc: sending the version byte: %w", err)
	}
	var b [1]byte
	if _, err := io.ReadFull(rw, b[:]); err != nil {
		return 0, fmt.Errorf("p11rpc: reading the server's version byte: %w", err)
	}
	return Protocol(b[0]), nil
}

// Frame is one message on the stream (§1.2): a 12-byte header of three big-endian u32
// (code, options length, body length), then the options, then the body.
type Frame struct {
	// Code is the message id. A client numbers its requests (p11-kit starts at 0x10); the
	// reply carries the request's code, which is how replies are matched. Zero is invalid.
	Code uint32
	// Options are opaque bytes: p11-kit clients send "client", servers send none.
	Options []byte
	// Body is the message: call id, signature and arguments (see ParseRequest).
	Body []byte
}

// HeaderLen is the size of the frame header.
const HeaderLen = 12

// MaxOptionsLen bounds the options of a frame ReadFrame accepts; p11-kit sends 6 bytes.
const MaxOptionsLen = 256

// DefaultMaxBody is the body limit ReadFrame applies when given a limit of 0 or less. The largest
// request a PIV token sees is a C_CreateObject with a certificate, a few kilobytes.
const DefaultMaxBody = 1 << 20

// Errors of the framing layer. A server answers all of them by closing the connection: the
// stream can no longer be trusted to be at a frame boundary.
var (
	// ErrFrameTooLarge reports a header whose options or body length exceeds the limit.
	ErrFrameTooLarge = errors.New("p11rpc: frame too large")
	// ErrZeroCode reports a frame with message id 0, which no p11-kit peer sends.
	ErrZeroCode = errors.New("p11rpc: frame has message id 0")
)

// ReadFrame reads one frame from r with full reads. A body longer than maxBody (DefaultMaxBody
// if maxBody <= 0) or options longer than MaxOptionsLen are refused with ErrFrameTooLarge
// before anything is allocated for them. It returns io.EOF only when r ends cleanly before the
// first header byte; a stream that ends inside a frame gives an error wrapping
// io.ErrUnexpectedEOF.
func ReadFrame(r io.Reader, maxBody int) (Frame, error) {
	if maxBody <= 0 {
		maxBody = DefaultMaxBody
	}
	var hdr [HeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if err == io.EOF {
			return Frame{}, io.EOF
		}
		return Frame{}, fmt.Errorf("p11rpc: reading frame header: %w", err)
	}
	code := binary.BigEndian.Uint32(hdr[0:4])
	olen := binary.BigEndian.Uint32(hdr[4:8])
	dlen := binary.BigEndian.Uint32(hdr[8:12])
	if code == 0 {
		return Frame{}, ErrZeroCode
	}
	if uint64(olen) > MaxOptionsLen {
		return Frame{}, fmt.Errorf("%w: options length %d exceeds the limit of %d", ErrFrameTooLarge, olen, MaxOptionsLen)
	}
	if uint64(dlen) > uint64(maxBody) {
		return Frame{}, fmt.Errorf("%w: body length %d exceeds the limit of %d", ErrFrameTooLarge, dlen, maxBody)
	}
	buf := make([]byte, int(olen)+int(dlen))
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, fmt.Errorf("p11rpc: reading frame %#x (%d option and %d body bytes): %w", code, olen, dlen, err)
	}
	return Frame{Code: code, Options: buf[:olen:olen], Body: buf[olen:]}, nil
}

// AppendFrame appends the encoding of f to dst.
func AppendFrame(dst []byte, f Frame) ([]byte, error) {
	if f.Code == 0 {
		return dst, ErrZeroCode
	}
	if len(f.Options) > MaxOptionsLen {
		return dst, fmt.Errorf("%w: options length %d exceeds the limit of %d", ErrFrameTooLarge, len(f.Options), MaxOptionsLen)
	}
	if uint64(len(f.Body)) > math.MaxUint32 {
		return dst, fmt.Errorf("%w: body length %d does not fit the protocol", ErrFrameTooLarge, len(f.Body))
	}
	dst = binary.BigEndian.AppendUint32(dst, f.Code)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(f.Options)))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(f.Body)))
	dst = append(dst, f.Options...)
	return append(dst, f.Body...), nil
}

// WriteFrame writes f to w in a single Write. A net.Conn serialises whole Writes, so replies
// written by concurrent goroutines (out-of-order answers, §1.3) never interleave.
func WriteFrame(w io.Writer, f Frame) error {
	buf, err := AppendFrame(make([]byte, 0, HeaderLen+len(f.Options)+len(f.Body)), f)
	if err != nil {
		return err
	}
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("p11rpc: writing frame %#x: %w", f.Code, err)
	}
	return nil
}

// FrameReader reads frames from a stream through a buffer of its own, so that a small request
// usually costs one read, not two. Bytes leave the buffer wiped: PINs pass through it.
type FrameReader struct {
	r          io.Reader
	maxBody    int
	buf        []byte
	start, end int
}

// NewFrameReader returns a FrameReader on r; maxBody is as for ReadFrame.
func NewFrameReader(r io.Reader, maxBody int) *FrameReader {
	return &FrameReader{r: r, maxBody: maxBody, buf: make([]byte, 4096)}
}

// Read implements io.Reader.
func (fr *FrameReader) Read(p []byte) (int, error) {
	if fr.start == fr.end {
		if len(p) >= len(fr.buf) {
			return fr.r.Read(p)
		}
		n, err := fr.r.Read(fr.buf)
		fr.start, fr.end = 0, n
		if n == 0 {
			return 0, err
		}
	}
	n := copy(p, fr.buf[fr.start:fr.end])
	clear(fr.buf[fr.start : fr.start+n])
	fr.start += n
	return n, nil
}

// ReadFrame reads the next frame, as the function ReadFrame does.
func (fr *FrameReader) ReadFrame() (Frame, error) { return ReadFrame(fr, fr.maxBody) }
