package transport

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/cryptobyte"
)

// Message numbers of the transport layer (RFC 4253 §12, RFC 8308 §2.3, RFC 5656 §7.1).
const (
	msgDisconnect     = 1
	msgIgnore         = 2
	msgUnimplemented  = 3
	msgDebug          = 4
	msgServiceRequest = 5
	msgServiceAccept  = 6
	msgExtInfo        = 7
	msgKexInit        = 20
	msgNewKeys        = 21
	msgKexECDHInit    = 30
	msgKexECDHReply   = 31
	// Numbers 30 to 49 belong to the negotiated key exchange method (RFC 4250 §4.1.2).
	msgKexMethodFirst = 30
	msgKexMethodLast  = 49
)

// Disconnect reason codes (RFC 4253 §11.1).
const (
	DisconnectProtocolError        = 2
	DisconnectKeyExchangeFailed    = 3
	DisconnectMACError             = 5
	DisconnectServiceNotAvailable  = 7
	DisconnectHostKeyNotVerifiable = 9
	DisconnectByApplication        = 11
	DisconnectTooManyConnections   = 12
	DisconnectAuthCancelledByUser  = 13
	DisconnectNoMoreAuthMethods    = 14
	DisconnectIllegalUserName      = 15
)

// ErrMalformed is wrapped by every error about a message that does not parse.
var ErrMalformed = errors.New("ssh: malformed message")

func malformed(what string) error { return fmt.Errorf("%w: %s", ErrMalformed, what) }

// DisconnectError is the peer's SSH_MSG_DISCONNECT.
type DisconnectError struct {
	Reason  uint32
	Message string
}

func (e *DisconnectError) Error() string {
	return fmt.Sprintf("ssh: peer disconnected (reason %d): %q", e.Reason, e.Message)
}

// addString appends an SSH string (uint32 length and bytes).
func addString(b *cryptobyte.Builder, s []byte) {
	b.AddUint32LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(s) })
}

// addNameList appends an SSH name-list.
func addNameList(b *cryptobyte.Builder, names []string) {
	addString(b, []byte(strings.Join(names, ",")))
}

// addMPInt appends an SSH mpint of the unsigned big-endian integer x (RFC 4251 §5).
func addMPInt(b *cryptobyte.Builder, x []byte) {
	for len(x) > 0 && x[0] == 0 {
		x = x[1:]
	}
	b.AddUint32LengthPrefixed(func(b *cryptobyte.Builder) {
		if len(x) > 0 && x[0]&0x80 != 0 {
			b.AddUint8(0)
		}
		b.AddBytes(x)
	})
}

// readString reads an SSH string.
func readString(s *cryptobyte.String, out *[]byte) bool {
	var n uint32
	if !s.ReadUint32(&n) || uint64(n) > uint64(len(*s)) {
		return false
	}
	return s.ReadBytes(out, int(n))
}

// maxNames bounds a name-list: real ones have a few dozen entries.
const maxNames = 128

// readNameList reads an SSH name-list; empty names are malformed (RFC 4251 §5).
func readNameList(s *cryptobyte.String, out *[]string) bool {
	var v []byte
	if !readString(s, &v) {
		return false
	}
	if len(v) == 0 {
		*out = nil
		return true
	}
	names := strings.Split(string(v), ",")
	if len(names) > maxNames {
		return false
	}
	for _, n := range names {
		if n == "" || !printable(n) {
			return false
		}
	}
	*out = names
	return true
}

// readBool reads an SSH boolean.
func readBool(s *cryptobyte.String, out *bool) bool {
	var v uint8
	if !s.ReadUint8(&v) {
		return false
	}
	*out = v != 0
	return true
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// MarshalDisconnect builds SSH_MSG_DISCONNECT.
func MarshalDisconnect(reason uint32, message string) []byte {
	var b cryptobyte.Builder
	b.AddUint8(msgDisconnect)
	b.AddUint32(reason)
	addString(&b, []byte(message))
	addString(&b, nil) // language tag
	return b.BytesOrPanic()
}

func parseDisconnect(p []byte) (*DisconnectError, error) {
	s := cryptobyte.String(p[1:])
	var e DisconnectError
	var msg, lang []byte
	if !s.ReadUint32(&e.Reason) || !readString(&s, &msg) || !readString(&s, &lang) {
		return nil, malformed("disconnect")
	}
	e.Message = sanitize(msg)
	return &e, nil
}

// sanitize makes a peer's text safe to print: at most 256 bytes, control characters replaced.
func sanitize(b []byte) string {
	if len(b) > 256 {
		b = b[:256]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, string(b))
}

// MarshalServiceRequest builds SSH_MSG_SERVICE_REQUEST.
func MarshalServiceRequest(service string) []byte {
	var b cryptobyte.Builder
	b.AddUint8(msgServiceRequest)
	addString(&b, []byte(service))
	return b.BytesOrPanic()
}

// MarshalServiceAccept builds SSH_MSG_SERVICE_ACCEPT.
func MarshalServiceAccept(service string) []byte {
	var b cryptobyte.Builder
	b.AddUint8(msgServiceAccept)
	addString(&b, []byte(service))
	return b.BytesOrPanic()
}

// ParseService parses SSH_MSG_SERVICE_REQUEST or SSH_MSG_SERVICE_ACCEPT and returns the service.
func ParseService(p []byte, accept bool) (string, error) {
	want := byte(msgServiceRequest)
	if accept {
		want = msgServiceAccept
	}
	if len(p) == 0 || p[0] != want {
		return "", malformed(fmt.Sprintf("message %d where service message %d belongs", first(p), want))
	}
	s := cryptobyte.String(p[1:])
	var name []byte
	if !readString(&s, &name) || !s.Empty() {
		return "", malformed("service message")
	}
	return string(name), nil
}

func first(p []byte) int {
	if len(p) == 0 {
		return -1
	}
	return int(p[0])
}

// MarshalUnimplemented builds SSH_MSG_UNIMPLEMENTED for the packet with sequence number seq.
func MarshalUnimplemented(seq uint32) []byte {
	var b cryptobyte.Builder
	b.AddUint8(msgUnimplemented)
	b.AddUint32(seq)
	return b.BytesOrPanic()
}

// ExtInfo builds SSH_MSG_EXT_INFO (RFC 8308 §2.3) from name and value pairs.
func marshalExtInfo(ext [][2]string) []byte {
	var b cryptobyte.Builder
	b.AddUint8(msgExtInfo)
	b.AddUint32(uint32(len(ext)))
	for _, e := range ext {
		addString(&b, []byte(e[0]))
		addString(&b, []byte(e[1]))
	}
	return b.BytesOrPanic()
}

// maxExtensions bounds SSH_MSG_EXT_INFO.
const maxExtensions = 64

func parseExtInfo(p []byte) (map[string]string, error) {
	s := cryptobyte.String(p[1:])
	var n uint32
	if !s.ReadUint32(&n) || n > maxExtensions {
		return nil, malformed("ext-info count")
	}
	m := make(map[string]string, n)
	for range n {
		var name, value []byte
		if !readString(&s, &name) || !readString(&s, &value) {
			return nil, malformed("ext-info entry")
		}
		m[string(name)] = string(value)
	}
	if !s.Empty() {
		return nil, malformed("ext-info trailing data")
	}
	return m, nil
}
