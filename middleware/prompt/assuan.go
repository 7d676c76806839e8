package prompt

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// assuanLineMax is the longest Assuan line, without its LF (libassuan's ASSUAN_LINELENGTH, 1002,
// counts 1000 bytes and CR LF).
const assuanLineMax = 1000

// GnuPG error codes (libgpg-error, gpg-error.h) that pinentry puts in the low 16 bits of an ERR
// line; the high byte names the source, 5 for pinentry (ERR 83886179 is 5<<24 | 99).
const (
	gpgErrCanceled      = 99
	gpgErrFullyCanceled = 198
	gpgErrAssCanceled   = 277
)

// assuanEscape appends s to dst with '%', CR, LF and other control bytes percent-escaped, as
// Assuan requires for command arguments. In an OPTION value, which libassuan also decodes '+'
// in, '+' and space are escaped too. It stops before dst would exceed limit bytes, never in the
// middle of an escape or a UTF-8 sequence.
func assuanEscape(dst []byte, s string, limit int, option bool) []byte {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		var unit []byte
		switch c := s[i]; {
		case size == 1 && (c < 0x20 || c == 0x7f || c == '%' || option && (c == '+' || c == ' ')):
			unit = fmt.Appendf(nil, "%%%02X", c)
		case r == utf8.RuneError && size == 1:
			unit = fmt.Appendf(nil, "%%%02X", c)
		default:
			unit = []byte(s[i : i+size])
		}
		if len(dst)+len(unit) > limit {
			break
		}
		dst = append(dst, unit...)
		i += size
	}
	return dst
}

// errBadEscape is a '%' not followed by two hex digits.
var errBadEscape = errors.New("bad percent escape")

// assuanUnescape appends the percent-decoded s to dst.
func assuanUnescape(dst, s []byte) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			dst = append(dst, s[i])
			continue
		}
		if i+2 >= len(s) {
			return dst, fmt.Errorf("%w at byte %d", errBadEscape, i)
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return dst, fmt.Errorf("%w at byte %d", errBadEscape, i)
		}
		dst = append(dst, hi<<4|lo)
		i += 2
	}
	return dst, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// assuanKind is what an Assuan response line is.
type assuanKind int

const (
	assuanOK      assuanKind = iota // OK [text]
	assuanErr                       // ERR code [description]
	assuanData                      // D data
	assuanStatus                    // S keyword [args], ignored
	assuanComment                   // # text, ignored
	assuanInquire                   // INQUIRE keyword [args]
)

// assuanResponse is one parsed response line. rest aliases the line it was parsed from.
type assuanResponse struct {
	kind assuanKind
	rest []byte // OK text, D data (still escaped), ERR description
	code uint32 // ERR code
}

// parseAssuanResponse parses one response line without its LF.
func parseAssuanResponse(line []byte) (assuanResponse, error) {
	line = bytes.TrimSuffix(line, []byte("\r"))
	word, rest, _ := bytes.Cut(line, []byte(" "))
	switch string(word) {
	case "OK":
		return assuanResponse{kind: assuanOK, rest: rest}, nil
	case "D":
		return assuanResponse{kind: assuanData, rest: rest}, nil
	case "S":
		return assuanResponse{kind: assuanStatus, rest: rest}, nil
	case "INQUIRE":
		return assuanResponse{kind: assuanInquire, rest: rest}, nil
	case "ERR":
		num, desc, _ := bytes.Cut(rest, []byte(" "))
		code, err := strconv.ParseUint(string(num), 10, 32)
		if err != nil {
			return assuanResponse{}, errors.New("ERR line without a valid error code")
		}
		return assuanResponse{kind: assuanErr, rest: desc, code: uint32(code)}, nil
	}
	if len(line) > 0 && line[0] == '#' {
		return assuanResponse{kind: assuanComment}, nil
	}
	// The line itself stays out of the message: a broken pinentry might have sent the PIN bare.
	return assuanResponse{}, fmt.Errorf("unknown response (a %d-byte line)", len(line))
}

// cancelled reports whether an ERR response means the person cancelled.
func (r assuanResponse) cancelled() bool {
	switch r.code & 0xffff {
	case gpgErrCanceled, gpgErrFullyCanceled, gpgErrAssCanceled:
		return true
	}
	return false
}
