package ike

import (
	"encoding/binary"

	"golang.org/x/crypto/cryptobyte"
)

// headerLen is the length of the IKE header. RFC 7296 §3.1.
const headerLen = 28

// maxMessageLen bounds a message or a reassembled fragmented one.
const maxMessageLen = 64 << 10

// Header is the IKE header.
type Header struct {
	SPIi, SPIr  uint64
	NextPayload PayloadType
	Exchange    ExchangeType
	Flags       uint8
	MessageID   uint32
	Length      uint32
}

// IsResponse reports the Response flag.
func (h *Header) IsResponse() bool { return h.Flags&flagResponse != 0 }

// FromInitiator reports the Initiator flag: the sender is the original initiator of the IKE SA.
func (h *Header) FromInitiator() bool { return h.Flags&flagInitiator != 0 }

func (h *Header) marshal(b *cryptobyte.Builder) {
	b.AddUint64(h.SPIi)
	b.AddUint64(h.SPIr)
	b.AddUint8(uint8(h.NextPayload))
	b.AddUint8(ikeVersion)
	b.AddUint8(uint8(h.Exchange))
	b.AddUint8(h.Flags)
	b.AddUint32(h.MessageID)
	b.AddUint32(h.Length)
}

// ParseHeader parses the IKE header of a datagram and checks its length field against the
// datagram. A major version other than 2 is an error (the caller answers
// INVALID_MAJOR_VERSION or drops).
func ParseHeader(b []byte) (Header, error) {
	var h Header
	s := cryptobyte.String(b)
	var next, version, exch uint8
	if !s.ReadUint64(&h.SPIi) || !s.ReadUint64(&h.SPIr) || !s.ReadUint8(&next) || !s.ReadUint8(&version) ||
		!s.ReadUint8(&exch) || !s.ReadUint8(&h.Flags) || !s.ReadUint32(&h.MessageID) || !s.ReadUint32(&h.Length) {
		return h, syntaxErr("header: %d bytes", len(b))
	}
	h.NextPayload, h.Exchange = PayloadType(next), ExchangeType(exch)
	if version>>4 != 2 {
		return h, errMajorVersion
	}
	if int(h.Length) != len(b) || h.Length > maxMessageLen {
		return h, syntaxErr("header: length %d in a %d-byte datagram", h.Length, len(b))
	}
	return h, nil
}

var errMajorVersion = &SyntaxError{What: "major version is not 2"}

// Message is a message's header and payloads; for a protected message, the payloads inside
// the SK payload.
type Message struct {
	Header
	Payloads []Payload

	raw []byte // as received, for the AUTH payload's signed octets

	inner      []byte      // a protected message's payloads after decryption and reassembly
	innerFirst PayloadType // the type of the first of them
}

// plainForm is a protected message as an unprotected one: its header, then the decrypted
// payloads as they came. Unprotected messages are returned as received.
func (m *Message) plainForm() []byte {
	if m.inner == nil {
		return m.raw
	}
	h := m.Header
	h.NextPayload = m.innerFirst
	h.Length = uint32(headerLen + len(m.inner))
	b := cryptobyte.NewFixedBuilder(make([]byte, 0, h.Length))
	h.marshal(b)
	b.AddBytes(m.inner)
	out, _ := b.Bytes()
	return out
}

// Marshal encodes an unprotected message (IKE_SA_INIT, or an answer without keys), setting
// the header's next-payload and length fields.
func (m *Message) Marshal() ([]byte, error) {
	var body cryptobyte.Builder
	marshalPayloads(&body, m.Payloads)
	bs, err := body.Bytes()
	if err != nil {
		return nil, err
	}
	h := m.Header
	h.NextPayload = PayloadNone
	if len(m.Payloads) > 0 {
		h.NextPayload = m.Payloads[0].Type()
	}
	h.Length = uint32(headerLen + len(bs))
	b := cryptobyte.NewFixedBuilder(make([]byte, 0, h.Length))
	h.marshal(b)
	b.AddBytes(bs)
	return b.Bytes()
}

// ParseMessage decodes a datagram's header and its unprotected payloads. When the message
// is protected the returned encrypted payload is still to be opened.
func ParseMessage(b []byte) (*Message, *encrypted, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return nil, nil, err
	}
	ps, enc, err := unmarshalPayloads(b[headerLen:], h.NextPayload)
	if err != nil {
		return nil, nil, err
	}
	return &Message{Header: h, Payloads: ps, raw: b}, enc, nil
}

// Get returns the first payload of type t, or nil.
func (m *Message) Get(t PayloadType) Payload {
	for _, p := range m.Payloads {
		if p.Type() == t {
			return p
		}
	}
	return nil
}

// Notify returns the first notification of type n, or nil.
func (m *Message) Notify(n NotifyType) *NotifyPayload {
	for _, p := range m.Payloads {
		if np, ok := p.(*NotifyPayload); ok && np.Notify == n {
			return np
		}
	}
	return nil
}

// ErrorNotify returns the first error notification, or nil.
func (m *Message) ErrorNotify() *NotifyPayload {
	for _, p := range m.Payloads {
		if np, ok := p.(*NotifyPayload); ok && np.Notify.IsError() {
			return np
		}
	}
	return nil
}

// Summary lists the payload types as charon logs them: "SA KE No N(NATD_S_IP)".
func (m *Message) Summary() string {
	s := ""
	for i, p := range m.Payloads {
		if i > 0 {
			s += " "
		}
		if n, ok := p.(*NotifyPayload); ok {
			s += "N(" + n.Notify.String() + ")"
			continue
		}
		s += p.Type().String()
	}
	return s
}

func getSA(m *Message) *SAPayload {
	p, _ := m.Get(PayloadSA).(*SAPayload)
	return p
}

func getKE(m *Message) *KEPayload {
	p, _ := m.Get(PayloadKE).(*KEPayload)
	return p
}

func getNonce(m *Message) *NoncePayload {
	p, _ := m.Get(PayloadNonce).(*NoncePayload)
	return p
}

func getAuth(m *Message) *AuthPayload {
	p, _ := m.Get(PayloadAUTH).(*AuthPayload)
	return p
}

func getID(m *Message, responder bool) *IDPayload {
	t := PayloadIDi
	if responder {
		t = PayloadIDr
	}
	p, _ := m.Get(t).(*IDPayload)
	return p
}

func getTS(m *Message, responder bool) *TSPayload {
	t := PayloadTSi
	if responder {
		t = PayloadTSr
	}
	p, _ := m.Get(t).(*TSPayload)
	return p
}

func getCP(m *Message) *CPPayload {
	p, _ := m.Get(PayloadCP).(*CPPayload)
	return p
}

func getEAP(m *Message) *EAPPayload {
	p, _ := m.Get(PayloadEAP).(*EAPPayload)
	return p
}

func certs(m *Message) [][]byte {
	var out [][]byte
	for _, p := range m.Payloads {
		if c, ok := p.(*CertPayload); ok && c.Encoding == certX509Signature {
			out = append(out, c.Data)
		}
	}
	return out
}

func spiBytes(spi uint64) []byte { return binary.BigEndian.AppendUint64(nil, spi) }
