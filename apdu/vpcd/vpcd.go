// Package vpcd encodes the framing of vsmartcard's vpcd protocol, the TCP link between pcscd's
// virtual reader driver and a virtual card.
//
// Every message in both directions is a big-endian uint16 length followed by that many bytes.
// From the reader, a one-byte message is a control code and anything longer is a command APDU;
// the card answers a get-ATR control and every APDU with exactly one message, and nothing else.
package vpcd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// DefaultPort is the TCP port of the first vpcd reader slot (VPCDPORT, 0x8C7B).
const DefaultPort = 35963

// MaxPayload is the largest message the two-byte length can carry.
const MaxPayload = 0xFFFF

// Control is a one-byte control message from the reader (vpcd.h VPCD_CTRL_*).
type Control byte

// Control codes; there is no code 3.
const (
	PowerOff Control = 0
	PowerOn  Control = 1
	Reset    Control = 2
	GetATR   Control = 4
)

func (c Control) String() string {
	switch c {
	case PowerOff:
		return "power off"
	case PowerOn:
		return "power on"
	case Reset:
		return "reset"
	case GetATR:
		return "get ATR"
	}
	return fmt.Sprintf("unknown control 0x%02X", byte(c))
}

// Message is one decoded message from the reader: either a control code or a command APDU.
type Message struct {
	IsControl bool
	Control   Control
	APDU      []byte // aliases the frame buffer
}

// Errors from ReadMessage.
var (
	ErrEmptyMessage   = errors.New("vpcd: empty message")
	ErrUnknownControl = errors.New("vpcd: unknown control code")
)

// ReadFrame reads one length-prefixed message into buf (grown if needed) and returns it.
// It uses full reads: vpcd 0.8 writes the length and the payload in two send calls.
func ReadFrame(r io.Reader, buf []byte) ([]byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return buf, nil
}

// ParseMessage classifies a message from the reader.
func ParseMessage(b []byte) (Message, error) {
	switch len(b) {
	case 0:
		return Message{}, ErrEmptyMessage
	case 1:
		c := Control(b[0])
		switch c {
		case PowerOff, PowerOn, Reset, GetATR:
			return Message{IsControl: true, Control: c}, nil
		}
		return Message{}, fmt.Errorf("%w 0x%02X", ErrUnknownControl, b[0])
	}
	return Message{APDU: b}, nil
}

// AppendFrame appends the length prefix and payload to dst, so the caller can send the whole
// message with one write (the reader must not see a lone length header; see TCP_QUICKACK notes).
func AppendFrame(dst, payload []byte) ([]byte, error) {
	if len(payload) > MaxPayload {
		return dst, fmt.Errorf("vpcd: message of %d bytes exceeds %d", len(payload), MaxPayload)
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(payload)))
	return append(dst, payload...), nil
}
