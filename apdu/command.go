// Package apdu encodes and exchanges ISO/IEC 7816-4 command and response APDUs.
package apdu

import (
	"errors"
	"fmt"
)

// Limits of the length fields (ISO/IEC 7816-4 §5.1).
const (
	MaxShortLc    = 255
	MaxShortNe    = 256
	MaxExtendedLc = 65535
	MaxExtendedNe = 65536
)

// ClassChaining is the CLA bit that marks a command as not the last of a chain (ISO/IEC 7816-4 §5.1.1.1).
const ClassChaining = 0x10

// Instructions handled by the card runtime rather than by an applet.
const (
	InsSelect      = 0xA4
	InsGetResponse = 0xC0
)

// Command is a command APDU: header, optional command data and optional expected response length.
//
// Parse followed by AppendBinary reproduces the input byte for byte, so the four ISO cases
// are told apart by which of Data and Ne are present:
//
//	case 1: no Data, Ne == 0     case 3: Data, Ne == 0
//	case 2: no Data, Ne > 0      case 4: Data, Ne > 0
type Command struct {
	CLA, INS, P1, P2 byte
	// Data is the command data field, at most 65535 bytes (Lc).
	Data []byte
	// Ne is the maximum number of response data bytes expected: 0 when the command has no Le
	// field, 256 for a short Le of 00, 65536 for an extended Le of 0000.
	Ne int
	// Extended selects the extended length encoding (Lc 00 HH LL, Le HH LL). It is set by Parse
	// and forced by AppendBinary when Data or Ne do not fit the short form.
	Extended bool
}

// Errors from Parse; they name the malformation so a card can answer 6700 and a log can say why.
var (
	ErrShortCommand = errors.New("apdu: command shorter than the 4-byte header")
	ErrCommandLen   = errors.New("apdu: command length does not match its Lc/Le fields")
)

// ParseCommand decodes a command APDU of any of the four cases in short or extended form.
// The returned Data aliases b.
func ParseCommand(b []byte) (Command, error) {
	var c Command
	if len(b) < 4 {
		return c, ErrShortCommand
	}
	c.CLA, c.INS, c.P1, c.P2 = b[0], b[1], b[2], b[3]
	body := b[4:]
	switch {
	case len(body) == 0: // case 1
		return c, nil
	case len(body) == 1: // case 2S
		c.Ne = shortNe(body[0])
		return c, nil
	case body[0] != 0: // case 3S or 4S
		lc := int(body[0])
		switch len(body) {
		case 1 + lc:
			c.Data = body[1:]
		case 2 + lc:
			c.Data = body[1 : 1+lc]
			c.Ne = shortNe(body[1+lc])
		default:
			return Command{}, fmt.Errorf("%w: short Lc %d with %d body bytes", ErrCommandLen, lc, len(body))
		}
		return c, nil
	}
	// body[0] == 0 and more bytes follow: extended form.
	c.Extended = true
	if len(body) == 3 { // case 2E
		c.Ne = extendedNe(body[1], body[2])
		return c, nil
	}
	if len(body) < 3 {
		return Command{}, fmt.Errorf("%w: %d body bytes after an extended marker", ErrCommandLen, len(body))
	}
	lc := int(body[1])<<8 | int(body[2])
	if lc == 0 {
		return Command{}, fmt.Errorf("%w: extended Lc of zero", ErrCommandLen)
	}
	switch len(body) {
	case 3 + lc: // case 3E
		c.Data = body[3:]
	case 5 + lc: // case 4E
		c.Data = body[3 : 3+lc]
		c.Ne = extendedNe(body[3+lc], body[4+lc])
	default:
		return Command{}, fmt.Errorf("%w: extended Lc %d with %d body bytes", ErrCommandLen, lc, len(body))
	}
	return c, nil
}

func shortNe(le byte) int {
	if le == 0 {
		return MaxShortNe
	}
	return int(le)
}

func extendedNe(hi, lo byte) int {
	n := int(hi)<<8 | int(lo)
	if n == 0 {
		return MaxExtendedNe
	}
	return n
}

// Len returns the encoded length of c.
func (c *Command) Len() int {
	n := 4
	ext := c.extended()
	if len(c.Data) > 0 {
		if ext {
			n += 3
		} else {
			n++
		}
		n += len(c.Data)
	}
	if c.Ne > 0 {
		switch {
		case !ext:
			n++
		case len(c.Data) > 0:
			n += 2
		default:
			n += 3
		}
	}
	return n
}

func (c *Command) extended() bool {
	return c.Extended && (len(c.Data) > 0 || c.Ne > 0) || len(c.Data) > MaxShortLc || c.Ne > MaxShortNe
}

// AppendBinary appends the encoding of c to dst. It picks the extended form when c.Extended is
// set or when Data or Ne do not fit the short form.
func (c *Command) AppendBinary(dst []byte) ([]byte, error) {
	if len(c.Data) > MaxExtendedLc {
		return dst, fmt.Errorf("apdu: command data of %d bytes exceeds %d", len(c.Data), MaxExtendedLc)
	}
	if c.Ne < 0 || c.Ne > MaxExtendedNe {
		return dst, fmt.Errorf("apdu: Ne %d out of range 0..%d", c.Ne, MaxExtendedNe)
	}
	dst = append(dst, c.CLA, c.INS, c.P1, c.P2)
	ext := c.extended()
	if len(c.Data) > 0 {
		if ext {
			dst = append(dst, 0, byte(len(c.Data)>>8), byte(len(c.Data)))
		} else {
			dst = append(dst, byte(len(c.Data)))
		}
		dst = append(dst, c.Data...)
	}
	if c.Ne > 0 {
		switch {
		case !ext:
			dst = append(dst, byte(c.Ne)) // 256 encodes as 00
		case len(c.Data) > 0:
			dst = append(dst, byte(c.Ne>>8), byte(c.Ne)) // 65536 encodes as 0000
		default:
			dst = append(dst, 0, byte(c.Ne>>8), byte(c.Ne))
		}
	}
	return dst, nil
}

// MarshalBinary returns the encoding of c.
func (c *Command) MarshalBinary() ([]byte, error) {
	return c.AppendBinary(make([]byte, 0, c.Len()))
}

// IsChained reports whether the command is a non-final link of a command chain.
func (c *Command) IsChained() bool { return c.CLA&ClassChaining != 0 }

func (c Command) String() string {
	return fmt.Sprintf("%02X %02X %02X %02X Lc=%d Ne=%d", c.CLA, c.INS, c.P1, c.P2, len(c.Data), c.Ne)
}
