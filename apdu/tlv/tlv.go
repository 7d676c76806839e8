// Package tlv reads and writes the BER-TLV data objects of ISO/IEC 7816-4 §5.2 as PIV uses them:
// tags of one to three bytes (7C, 7F49, 5FC105) and definite lengths in the short form or 81/82/83.
package tlv

import (
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
)

// Tag is a BER-TLV tag written as its bytes in big-endian order: 0x7C, 0x7F49, 0x5FC105.
type Tag uint32

// MaxLength is the largest length the three-byte long form (83 XX XX XX) can carry.
const MaxLength = 1<<24 - 1

// Len returns the number of bytes of the encoded tag.
func (t Tag) Len() int {
	switch {
	case t > 0xFFFF:
		return 3
	case t > 0xFF:
		return 2
	}
	return 1
}

// Valid reports whether t is a well-formed tag: a first byte whose low five bits are 11111 is
// followed by bytes with bit 8 set except the last, and the tag is no longer than three bytes.
func (t Tag) Valid() bool {
	if t > 0xFFFFFF {
		return false
	}
	n := t.Len()
	first := byte(t >> (8 * (n - 1)))
	if first&0x1F != 0x1F {
		return n == 1
	}
	if n == 1 {
		return false
	}
	for i := n - 2; i >= 0; i-- {
		b := byte(t >> (8 * i))
		more := b&0x80 != 0
		if more != (i > 0) {
			return false
		}
	}
	return true
}

func (t Tag) String() string { return fmt.Sprintf("%0*X", 2*t.Len(), uint32(t)) }

// ReadTag reads a tag from s.
func ReadTag(s *cryptobyte.String, tag *Tag) bool {
	var b uint8
	if !s.ReadUint8(&b) {
		return false
	}
	t := Tag(b)
	if b&0x1F == 0x1F {
		for i := 1; ; i++ {
			if i == 3 || !s.ReadUint8(&b) {
				return false // more than three tag bytes, or truncated
			}
			t = t<<8 | Tag(b)
			if b&0x80 == 0 {
				break
			}
		}
	}
	*tag = t
	return true
}

// readLength reads a definite BER length: 00..7F, or 81/82/83 followed by one to three bytes.
func readLength(s *cryptobyte.String, n *int) bool {
	var b uint8
	if !s.ReadUint8(&b) {
		return false
	}
	switch b {
	case 0x81:
		var v uint8
		if !s.ReadUint8(&v) {
			return false
		}
		*n = int(v)
	case 0x82:
		var v uint16
		if !s.ReadUint16(&v) {
			return false
		}
		*n = int(v)
	case 0x83:
		var v uint32
		if !s.ReadUint24(&v) {
			return false
		}
		*n = int(v)
	default:
		if b >= 0x80 {
			return false // indefinite (80) or longer than three bytes
		}
		*n = int(b)
	}
	return true
}

// Read reads one data object from s, setting tag and value (which aliases s).
// It returns false, consuming nothing useful, on a truncated or malformed object.
func Read(s *cryptobyte.String, tag *Tag, value *cryptobyte.String) bool {
	var n int
	return ReadTag(s, tag) && readLength(s, &n) && s.ReadBytes((*[]byte)(value), n)
}

// ErrMalformed is returned for bytes that are not a sequence of well-formed data objects.
var ErrMalformed = errors.New("tlv: malformed data object")

// Object is one decoded data object.
type Object struct {
	Tag   Tag
	Value []byte
}

// Parse decodes a sequence of data objects at one level. Values alias b.
func Parse(b []byte) ([]Object, error) {
	var out []Object
	s := cryptobyte.String(b)
	for !s.Empty() {
		var o Object
		if !Read(&s, &o.Tag, (*cryptobyte.String)(&o.Value)) {
			return nil, fmt.Errorf("%w at offset %d", ErrMalformed, len(b)-len(s))
		}
		out = append(out, o)
	}
	return out, nil
}

// Find returns the value of the first data object tagged tag in the sequence b. It fails on the
// first malformed object before it.
func Find(b []byte, tag Tag) ([]byte, bool) {
	s := cryptobyte.String(b)
	for !s.Empty() {
		var t Tag
		var v cryptobyte.String
		if !Read(&s, &t, &v) {
			return nil, false
		}
		if t == tag {
			return v, true
		}
	}
	return nil, false
}

// Unwrap returns the value of b when b is exactly one data object tagged tag.
func Unwrap(b []byte, tag Tag) ([]byte, bool) {
	s := cryptobyte.String(b)
	var t Tag
	var v cryptobyte.String
	if !Read(&s, &t, &v) || t != tag || !s.Empty() {
		return nil, false
	}
	return v, true
}

// HeaderLen returns the length of the tag and length fields for a value of n bytes.
func HeaderLen(tag Tag, n int) int {
	switch {
	case n < 0x80:
		return tag.Len() + 1
	case n <= 0xFF:
		return tag.Len() + 2
	case n <= 0xFFFF:
		return tag.Len() + 3
	}
	return tag.Len() + 4
}

// AppendHeader appends the tag and the minimal definite length for a value of n bytes. The caller
// guarantees a valid tag and n <= MaxLength; AddTLV checks both.
func AppendHeader(dst []byte, tag Tag, n int) []byte {
	for i := tag.Len() - 1; i >= 0; i-- {
		dst = append(dst, byte(tag>>(8*i)))
	}
	switch {
	case n < 0x80:
		return append(dst, byte(n))
	case n <= 0xFF:
		return append(dst, 0x81, byte(n))
	case n <= 0xFFFF:
		return append(dst, 0x82, byte(n>>8), byte(n))
	}
	return append(dst, 0x83, byte(n>>16), byte(n>>8), byte(n))
}

// Append appends one data object to dst. The caller guarantees a valid tag and a value no longer
// than MaxLength.
func Append(dst []byte, tag Tag, value []byte) []byte {
	return append(AppendHeader(dst, tag, len(value)), value...)
}
