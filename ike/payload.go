package ike

import (
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/crypto/cryptobyte"
)

// Payload is one payload of a message: its body, without the generic payload header
// (RFC 7296 §3.2), which the message writes.
type Payload interface {
	Type() PayloadType
	marshal(b *cryptobyte.Builder)
	unmarshal(body cryptobyte.String) error
}

// SyntaxError is a message or payload that does not parse; the answer is INVALID_SYNTAX
// (RFC 7296 §2.21.1) where the message is authenticated, else the message is dropped.
type SyntaxError struct {
	What string
}

func (e *SyntaxError) Error() string { return "ike: invalid syntax: " + e.What }

func syntaxErr(format string, args ...any) error {
	return &SyntaxError{What: fmt.Sprintf(format, args...)}
}

// errCriticalPayload is a payload type we do not know with the critical bit set (§2.5).
type criticalPayloadError struct{ typ PayloadType }

func (e *criticalPayloadError) Error() string {
	return fmt.Sprintf("ike: unsupported critical payload %v", e.typ)
}

// addHeaderLength writes two bytes a and b, then a 16-bit length that counts itself, a, b and
// body: the shape of the generic payload header, the proposal and the transform substructures.
func addHeaderLength(b *cryptobyte.Builder, a, c byte, body func(*cryptobyte.Builder)) {
	var inner cryptobyte.Builder
	body(&inner)
	bs, err := inner.Bytes()
	if err != nil {
		b.SetError(err)
		return
	}
	if len(bs)+4 > 0xFFFF {
		b.SetError(errors.New("ike: payload longer than 65535 bytes"))
		return
	}
	b.AddUint8(a)
	b.AddUint8(c)
	b.AddUint16(uint16(len(bs) + 4))
	b.AddBytes(bs)
}

// readHeaderLength reads the counterpart of addHeaderLength.
func readHeaderLength(s *cryptobyte.String, a, c *uint8, body *cryptobyte.String) bool {
	var n uint16
	if !s.ReadUint8(a) || !s.ReadUint8(c) || !s.ReadUint16(&n) || n < 4 {
		return false
	}
	return s.ReadBytes((*[]byte)(body), int(n)-4)
}

// Transform is one transform of a proposal. KeyLength is the Key Length attribute in bits, 0
// when absent. RFC 7296 §3.3.2, §3.3.5.
type Transform struct {
	Type      TransformType
	ID        uint16
	KeyLength uint16
}

func (t Transform) String() string {
	s := transformName(t.Type, t.ID)
	if t.KeyLength != 0 {
		s += fmt.Sprintf("_%d", t.KeyLength)
	}
	return s
}

// SAProposal is one proposal of an SA payload. RFC 7296 §3.3.1.
type SAProposal struct {
	Number     uint8
	Protocol   ProtocolID
	SPI        []byte
	Transforms []Transform
}

// SAPayload carries proposals.
type SAPayload struct {
	Proposals []SAProposal
}

// Type implements Payload.
func (*SAPayload) Type() PayloadType { return PayloadSA }

func (p *SAPayload) marshal(b *cryptobyte.Builder) {
	for i, prop := range p.Proposals {
		last := byte(2)
		if i == len(p.Proposals)-1 {
			last = 0
		}
		addHeaderLength(b, last, 0, func(b *cryptobyte.Builder) {
			b.AddUint8(prop.Number)
			b.AddUint8(uint8(prop.Protocol))
			b.AddUint8(uint8(len(prop.SPI)))
			b.AddUint8(uint8(len(prop.Transforms)))
			b.AddBytes(prop.SPI)
			for j, t := range prop.Transforms {
				last := byte(3)
				if j == len(prop.Transforms)-1 {
					last = 0
				}
				addHeaderLength(b, last, 0, func(b *cryptobyte.Builder) {
					b.AddUint8(uint8(t.Type))
					b.AddUint8(0)
					b.AddUint16(t.ID)
					if t.KeyLength != 0 {
						b.AddUint16(0x8000 | attrKeyLength)
						b.AddUint16(t.KeyLength)
					}
				})
			}
		})
	}
}

func (p *SAPayload) unmarshal(s cryptobyte.String) error {
	more := true
	for more {
		var last, reserved uint8
		var body cryptobyte.String
		if !readHeaderLength(&s, &last, &reserved, &body) {
			return syntaxErr("SA: truncated proposal")
		}
		if last != 0 && last != 2 {
			return syntaxErr("SA: proposal substructure type %d", last)
		}
		more = last == 2
		var prop SAProposal
		var proto, spiSize, n uint8
		if !body.ReadUint8(&prop.Number) || !body.ReadUint8(&proto) || !body.ReadUint8(&spiSize) ||
			!body.ReadUint8(&n) || !body.ReadBytes(&prop.SPI, int(spiSize)) {
			return syntaxErr("SA: truncated proposal header")
		}
		prop.Protocol = ProtocolID(proto)
		for i := 0; i < int(n); i++ {
			var tlast, r uint8
			var tb cryptobyte.String
			if !readHeaderLength(&body, &tlast, &r, &tb) {
				return syntaxErr("SA: truncated transform")
			}
			if (tlast != 0 && tlast != 3) || (tlast == 0) != (i == int(n)-1) {
				return syntaxErr("SA: transform count does not match the last-transform marks")
			}
			var t Transform
			var typ uint8
			if !tb.ReadUint8(&typ) || !tb.Skip(1) || !tb.ReadUint16(&t.ID) {
				return syntaxErr("SA: truncated transform header")
			}
			t.Type = TransformType(typ)
			for !tb.Empty() {
				var at uint16
				if !tb.ReadUint16(&at) {
					return syntaxErr("SA: truncated attribute")
				}
				if at&0x8000 != 0 { // TV
					var v uint16
					if !tb.ReadUint16(&v) {
						return syntaxErr("SA: truncated attribute")
					}
					if at&0x7FFF == attrKeyLength {
						t.KeyLength = v
					}
					continue
				}
				var v cryptobyte.String
				if !tb.ReadUint16LengthPrefixed(&v) {
					return syntaxErr("SA: truncated attribute")
				}
			}
			prop.Transforms = append(prop.Transforms, t)
		}
		if !body.Empty() {
			return syntaxErr("SA: %d bytes after the transforms of proposal %d", len(body), prop.Number)
		}
		p.Proposals = append(p.Proposals, prop)
	}
	if !s.Empty() {
		return syntaxErr("SA: bytes after the last proposal")
	}
	if len(p.Proposals) == 0 {
		return syntaxErr("SA: no proposal")
	}
	return nil
}

// KEPayload is a Diffie-Hellman public value. RFC 7296 §3.4.
type KEPayload struct {
	Group uint16
	Data  []byte
}

// Type implements Payload.
func (*KEPayload) Type() PayloadType { return PayloadKE }

func (p *KEPayload) marshal(b *cryptobyte.Builder) {
	b.AddUint16(p.Group)
	b.AddUint16(0)
	b.AddBytes(p.Data)
}

func (p *KEPayload) unmarshal(s cryptobyte.String) error {
	if !s.ReadUint16(&p.Group) || !s.Skip(2) {
		return syntaxErr("KE: truncated")
	}
	p.Data = append([]byte(nil), s...)
	return nil
}

// NoncePayload is a nonce of 16 to 256 bytes. RFC 7296 §3.9.
type NoncePayload struct {
	Data []byte
}

// Type implements Payload.
func (*NoncePayload) Type() PayloadType { return PayloadNonce }

func (p *NoncePayload) marshal(b *cryptobyte.Builder) { b.AddBytes(p.Data) }

func (p *NoncePayload) unmarshal(s cryptobyte.String) error {
	if len(s) < 16 || len(s) > 256 {
		return syntaxErr("nonce of %d bytes (16 to 256)", len(s))
	}
	p.Data = append([]byte(nil), s...)
	return nil
}

// NotifyPayload is a notification. RFC 7296 §3.10.
type NotifyPayload struct {
	Protocol ProtocolID
	SPI      []byte
	Notify   NotifyType
	Data     []byte
}

// Type implements Payload.
func (*NotifyPayload) Type() PayloadType { return PayloadNotify }

func (p *NotifyPayload) marshal(b *cryptobyte.Builder) {
	b.AddUint8(uint8(p.Protocol))
	b.AddUint8(uint8(len(p.SPI)))
	b.AddUint16(uint16(p.Notify))
	b.AddBytes(p.SPI)
	b.AddBytes(p.Data)
}

func (p *NotifyPayload) unmarshal(s cryptobyte.String) error {
	var proto, spiSize uint8
	var typ uint16
	if !s.ReadUint8(&proto) || !s.ReadUint8(&spiSize) || !s.ReadUint16(&typ) || !s.ReadBytes(&p.SPI, int(spiSize)) {
		return syntaxErr("N: truncated")
	}
	p.Protocol, p.Notify = ProtocolID(proto), NotifyType(typ)
	p.SPI = append([]byte(nil), p.SPI...)
	p.Data = append([]byte(nil), s...)
	return nil
}

// DeletePayload deletes SAs: the IKE SA (no SPI) or Child SAs by their inbound SPIs.
// RFC 7296 §3.11.
type DeletePayload struct {
	Protocol ProtocolID
	SPIs     [][]byte
}

// Type implements Payload.
func (*DeletePayload) Type() PayloadType { return PayloadDelete }

func (p *DeletePayload) marshal(b *cryptobyte.Builder) {
	size := 0
	if len(p.SPIs) > 0 {
		size = len(p.SPIs[0])
	}
	b.AddUint8(uint8(p.Protocol))
	b.AddUint8(uint8(size))
	b.AddUint16(uint16(len(p.SPIs)))
	for _, spi := range p.SPIs {
		b.AddBytes(spi)
	}
}

func (p *DeletePayload) unmarshal(s cryptobyte.String) error {
	var proto, size uint8
	var n uint16
	if !s.ReadUint8(&proto) || !s.ReadUint8(&size) || !s.ReadUint16(&n) {
		return syntaxErr("D: truncated")
	}
	p.Protocol = ProtocolID(proto)
	if int(size)*int(n) != len(s) {
		return syntaxErr("D: %d SPIs of %d bytes in %d bytes", n, size, len(s))
	}
	for i := 0; i < int(n); i++ {
		var spi []byte
		s.ReadBytes(&spi, int(size))
		p.SPIs = append(p.SPIs, append([]byte(nil), spi...))
	}
	return nil
}

// IDPayload is an identification, IDi or IDr. RFC 7296 §3.5.
type IDPayload struct {
	Responder bool // IDr rather than IDi
	ID        Identity
}

// Type implements Payload.
func (p *IDPayload) Type() PayloadType {
	if p.Responder {
		return PayloadIDr
	}
	return PayloadIDi
}

func (p *IDPayload) marshal(b *cryptobyte.Builder) { b.AddBytes(p.ID.body()) }

func (p *IDPayload) unmarshal(s cryptobyte.String) error {
	var typ uint8
	if !s.ReadUint8(&typ) || !s.Skip(3) {
		return syntaxErr("ID: truncated")
	}
	p.ID = Identity{Type: IDType(typ), Data: append([]byte(nil), s...)}
	return nil
}

// CertPayload carries a certificate. RFC 7296 §3.6.
type CertPayload struct {
	Encoding CertEncoding
	Data     []byte
}

// Type implements Payload.
func (*CertPayload) Type() PayloadType { return PayloadCERT }

func (p *CertPayload) marshal(b *cryptobyte.Builder) {
	b.AddUint8(uint8(p.Encoding))
	b.AddBytes(p.Data)
}

func (p *CertPayload) unmarshal(s cryptobyte.String) error {
	var enc uint8
	if !s.ReadUint8(&enc) {
		return syntaxErr("CERT: truncated")
	}
	p.Encoding, p.Data = CertEncoding(enc), append([]byte(nil), s...)
	return nil
}

// CertReqPayload asks for certificates from the CAs whose public-key hashes it lists.
// RFC 7296 §3.7.
type CertReqPayload struct {
	Encoding CertEncoding
	Data     []byte // concatenated SHA-1 hashes of SubjectPublicKeyInfo
}

// Type implements Payload.
func (*CertReqPayload) Type() PayloadType { return PayloadCERTREQ }

func (p *CertReqPayload) marshal(b *cryptobyte.Builder) {
	b.AddUint8(uint8(p.Encoding))
	b.AddBytes(p.Data)
}

func (p *CertReqPayload) unmarshal(s cryptobyte.String) error {
	var enc uint8
	if !s.ReadUint8(&enc) {
		return syntaxErr("CERTREQ: truncated")
	}
	p.Encoding, p.Data = CertEncoding(enc), append([]byte(nil), s...)
	return nil
}

// AuthPayload proves an identity. RFC 7296 §3.8.
type AuthPayload struct {
	Method AuthMethod
	Data   []byte
}

// Type implements Payload.
func (*AuthPayload) Type() PayloadType { return PayloadAUTH }

func (p *AuthPayload) marshal(b *cryptobyte.Builder) {
	b.AddUint8(uint8(p.Method))
	b.AddBytes([]byte{0, 0, 0})
	b.AddBytes(p.Data)
}

func (p *AuthPayload) unmarshal(s cryptobyte.String) error {
	var m uint8
	if !s.ReadUint8(&m) || !s.Skip(3) || s.Empty() {
		return syntaxErr("AUTH: truncated")
	}
	p.Method, p.Data = AuthMethod(m), append([]byte(nil), s...)
	return nil
}

// TrafficSelector is an IPv4 address range with a protocol and a port range. RFC 7296 §3.13.1.
type TrafficSelector struct {
	Protocol   uint8 // 0: any
	StartPort  uint16
	EndPort    uint16
	Start, End netip.Addr
}

func (ts TrafficSelector) String() string {
	s := ts.Start.String() + "-" + ts.End.String()
	if p, ok := prefixOf(ts.Start, ts.End); ok {
		s = p.String()
	}
	if ts.Protocol != 0 || ts.StartPort != 0 || ts.EndPort != 0xFFFF {
		s += fmt.Sprintf("[%d/%d-%d]", ts.Protocol, ts.StartPort, ts.EndPort)
	}
	return s
}

// TSPayload carries traffic selectors, TSi or TSr. RFC 7296 §3.13.
type TSPayload struct {
	Responder bool
	Selectors []TrafficSelector
}

// Type implements Payload.
func (p *TSPayload) Type() PayloadType {
	if p.Responder {
		return PayloadTSr
	}
	return PayloadTSi
}

func (p *TSPayload) marshal(b *cryptobyte.Builder) {
	b.AddUint8(uint8(len(p.Selectors)))
	b.AddBytes([]byte{0, 0, 0})
	for _, ts := range p.Selectors {
		b.AddUint8(tsIPv4AddrRange)
		b.AddUint8(ts.Protocol)
		b.AddUint16(16)
		b.AddUint16(ts.StartPort)
		b.AddUint16(ts.EndPort)
		s4, e4 := ts.Start.As4(), ts.End.As4()
		b.AddBytes(s4[:])
		b.AddBytes(e4[:])
	}
}

func (p *TSPayload) unmarshal(s cryptobyte.String) error {
	var n uint8
	if !s.ReadUint8(&n) || !s.Skip(3) {
		return syntaxErr("TS: truncated")
	}
	for i := 0; i < int(n); i++ {
		var typ, proto uint8
		var length uint16
		if !s.ReadUint8(&typ) || !s.ReadUint8(&proto) || !s.ReadUint16(&length) || length < 8 {
			return syntaxErr("TS: truncated selector")
		}
		var body cryptobyte.String
		if !s.ReadBytes((*[]byte)(&body), int(length)-4) {
			return syntaxErr("TS: truncated selector")
		}
		if typ != tsIPv4AddrRange {
			continue // IPv6 and others: not ours to narrow to; ignored
		}
		ts := TrafficSelector{Protocol: proto}
		var a, e []byte
		if !body.ReadUint16(&ts.StartPort) || !body.ReadUint16(&ts.EndPort) || !body.ReadBytes(&a, 4) ||
			!body.ReadBytes(&e, 4) || !body.Empty() {
			return syntaxErr("TS: IPv4 selector of %d bytes", length)
		}
		ts.Start, ts.End = netip.AddrFrom4([4]byte(a)), netip.AddrFrom4([4]byte(e))
		p.Selectors = append(p.Selectors, ts)
	}
	if !s.Empty() {
		return syntaxErr("TS: bytes after the selectors")
	}
	return nil
}

// CPAttribute is one configuration attribute. RFC 7296 §3.15.1.
type CPAttribute struct {
	Type  uint16
	Value []byte
}

// CPPayload is a configuration request or reply. RFC 7296 §3.15.
type CPPayload struct {
	CFGType    uint8
	Attributes []CPAttribute
}

// Type implements Payload.
func (*CPPayload) Type() PayloadType { return PayloadCP }

func (p *CPPayload) marshal(b *cryptobyte.Builder) {
	b.AddUint8(p.CFGType)
	b.AddBytes([]byte{0, 0, 0})
	for _, a := range p.Attributes {
		b.AddUint16(a.Type & 0x7FFF)
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(a.Value) })
	}
}

func (p *CPPayload) unmarshal(s cryptobyte.String) error {
	if !s.ReadUint8(&p.CFGType) || !s.Skip(3) {
		return syntaxErr("CP: truncated")
	}
	for !s.Empty() {
		var t uint16
		var v cryptobyte.String
		if !s.ReadUint16(&t) || !s.ReadUint16LengthPrefixed(&v) {
			return syntaxErr("CP: truncated attribute")
		}
		p.Attributes = append(p.Attributes, CPAttribute{Type: t & 0x7FFF, Value: append([]byte(nil), v...)})
	}
	return nil
}

// EAPPayload carries one EAP message. RFC 7296 §3.16.
type EAPPayload struct {
	Data []byte
}

// Type implements Payload.
func (*EAPPayload) Type() PayloadType { return PayloadEAP }

func (p *EAPPayload) marshal(b *cryptobyte.Builder) { b.AddBytes(p.Data) }

func (p *EAPPayload) unmarshal(s cryptobyte.String) error {
	if len(s) < 4 {
		return syntaxErr("EAP: truncated")
	}
	p.Data = append([]byte(nil), s...)
	return nil
}

// VendorPayload is a vendor ID. RFC 7296 §3.12.
type VendorPayload struct {
	Data []byte
}

// Type implements Payload.
func (*VendorPayload) Type() PayloadType { return PayloadVendor }

func (p *VendorPayload) marshal(b *cryptobyte.Builder) { b.AddBytes(p.Data) }

func (p *VendorPayload) unmarshal(s cryptobyte.String) error {
	p.Data = append([]byte(nil), s...)
	return nil
}

// unknownPayload is a payload of a type we do not know, kept so a message can be re-encoded.
type unknownPayload struct {
	typ  PayloadType
	Data []byte
}

func (p *unknownPayload) Type() PayloadType             { return p.typ }
func (p *unknownPayload) marshal(b *cryptobyte.Builder) { b.AddBytes(p.Data) }
func (p *unknownPayload) unmarshal(s cryptobyte.String) error {
	p.Data = append([]byte(nil), s...)
	return nil
}

// newPayload returns an empty payload of type t, or nil for a type we do not know.
func newPayload(t PayloadType) Payload {
	switch t {
	case PayloadSA:
		return &SAPayload{}
	case PayloadKE:
		return &KEPayload{}
	case PayloadIDi:
		return &IDPayload{}
	case PayloadIDr:
		return &IDPayload{Responder: true}
	case PayloadCERT:
		return &CertPayload{}
	case PayloadCERTREQ:
		return &CertReqPayload{}
	case PayloadAUTH:
		return &AuthPayload{}
	case PayloadNonce:
		return &NoncePayload{}
	case PayloadNotify:
		return &NotifyPayload{}
	case PayloadDelete:
		return &DeletePayload{}
	case PayloadVendor:
		return &VendorPayload{}
	case PayloadTSi:
		return &TSPayload{}
	case PayloadTSr:
		return &TSPayload{Responder: true}
	case PayloadCP:
		return &CPPayload{}
	case PayloadEAP:
		return &EAPPayload{}
	}
	return nil
}

// maxPayloads bounds the payloads of one message: a peer cannot make us allocate without end.
const maxPayloads = 64

// marshalPayloads writes a payload chain; the caller writes first's type where it belongs.
func marshalPayloads(b *cryptobyte.Builder, ps []Payload) {
	for i, p := range ps {
		next := PayloadNone
		if i+1 < len(ps) {
			next = ps[i+1].Type()
		}
		addHeaderLength(b, byte(next), 0, p.marshal)
	}
}

// unmarshalPayloads parses a payload chain that starts with type first. A known payload type
// that is not SK or SKF is parsed; an unknown one is skipped unless critical (§2.5). An SK or
// SKF payload ends the chain and is returned raw with its next-payload type.
func unmarshalPayloads(s cryptobyte.String, first PayloadType) (ps []Payload, enc *encrypted, err error) {
	next := first
	for next != PayloadNone {
		if len(ps) == maxPayloads {
			return nil, nil, syntaxErr("more than %d payloads", maxPayloads)
		}
		var nn, flags uint8
		var body cryptobyte.String
		if !readHeaderLength(&s, &nn, &flags, &body) {
			return nil, nil, syntaxErr("%v payload: truncated", next)
		}
		switch next {
		case PayloadSK, PayloadSKF:
			if !s.Empty() {
				return nil, nil, syntaxErr("%v payload is not the last one", next)
			}
			enc = &encrypted{fragment: next == PayloadSKF, next: PayloadType(nn)}
			if enc.fragment {
				if !body.ReadUint16(&enc.number) || !body.ReadUint16(&enc.total) || enc.number == 0 ||
					enc.total == 0 || enc.number > enc.total {
					return nil, nil, syntaxErr("SKF: fragment %d of %d", enc.number, enc.total)
				}
			}
			enc.body = body
			return ps, enc, nil
		}
		p := newPayload(next)
		if p == nil {
			if flags&0x80 != 0 {
				return nil, nil, &criticalPayloadError{next}
			}
			p = &unknownPayload{typ: next}
		}
		if err := p.unmarshal(body); err != nil {
			return nil, nil, err
		}
		ps = append(ps, p)
		next = PayloadType(nn)
	}
	if !s.Empty() {
		return nil, nil, syntaxErr("%d bytes after the last payload", len(s))
	}
	return ps, nil, nil
}

// encrypted is a raw SK or SKF payload, before decryption.
type encrypted struct {
	fragment      bool
	next          PayloadType // type of the first inner payload (0 in non-first fragments)
	number, total uint16      // fragment numbers, SKF only
	body          []byte      // IV, ciphertext, ICV
}
