package ike

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
)

// ikeSA is the cryptographic state of one IKE SA: SPIs, negotiated suite, keys, nonces and the
// message-ID window. Its owner serialises access.
type ikeSA struct {
	spiI, spiR uint64
	initiator  bool // we are this IKE SA's original initiator (after a rekey: whoever rekeyed)
	suite      Suite
	prf        prf
	keys       *ikeKeys
	out, in    *protector
	ni, nr     []byte
	fragSize   int // 0: the peer cannot reassemble fragments (no IKEV2_FRAGMENTATION_SUPPORTED)
	win        window
	reasm      reassembly
}

func newSPI() uint64 {
	var b [8]byte
	for {
		rand.Read(b[:])
		if s := binary.BigEndian.Uint64(b[:]); s != 0 {
			return s
		}
	}
}

// install derives the keys from SKEYSEED and sets up both directions' protection.
func (sa *ikeSA) install(seed []byte) error {
	p, err := newPRF(sa.suite.PRF)
	if err != nil {
		return err
	}
	sa.prf = p
	if sa.keys, err = deriveIKEKeys(sa.suite, p, seed, sa.ni, sa.nr, sa.spiI, sa.spiR); err != nil {
		return err
	}
	var ig integ
	if sa.suite.Integ != IntegNone {
		ig = integ{sa.suite.Integ, hashFor(TransformINTEG, sa.suite.Integ)}
	}
	pi, err := newProtector(sa.suite.Cipher, ig, sa.keys.ei, sa.keys.ai)
	if err != nil {
		return err
	}
	pr, err := newProtector(sa.suite.Cipher, ig, sa.keys.er, sa.keys.ar)
	if err != nil {
		return err
	}
	if sa.initiator {
		sa.out, sa.in = pi, pr
	} else {
		sa.out, sa.in = pr, pi
	}
	return nil
}

// header returns the header of a message we send on this SA.
func (sa *ikeSA) header(exch ExchangeType, response bool, id uint32) Header {
	h := Header{SPIi: sa.spiI, SPIr: sa.spiR, Exchange: exch, MessageID: id}
	if sa.initiator {
		h.Flags |= flagInitiator
	}
	if response {
		h.Flags |= flagResponse
	}
	return h
}

// protect encodes payloads in an SK payload, or in SKF fragments when the peer reassembles
// and the message would be longer than fragSize (RFC 7383 §2.5).
func (sa *ikeSA) protect(exch ExchangeType, response bool, id uint32, ps []Payload) ([][]byte, error) {
	var pb cryptobyte.Builder
	marshalPayloads(&pb, ps)
	plain, err := pb.Bytes()
	if err != nil {
		return nil, err
	}
	first := PayloadNone
	if len(ps) > 0 {
		first = ps[0].Type()
	}
	h := sa.header(exch, response, id)
	if sa.fragSize > 0 && exch != ExchangeIKESAInit && headerLen+4+sa.out.bodyLen(len(plain)) > sa.fragSize {
		return sa.fragment(h, first, plain)
	}
	msg, err := sa.seal(h, PayloadSK, first, 0, 0, plain)
	if err != nil {
		return nil, err
	}
	return [][]byte{msg}, nil
}

// seal builds one SK or SKF message around plain.
func (sa *ikeSA) seal(h Header, typ, first PayloadType, number, total uint16, plain []byte) ([]byte, error) {
	skHdr := 4
	if typ == PayloadSKF {
		skHdr = 8
	}
	bodyLen := sa.out.bodyLen(len(plain))
	h.NextPayload = typ
	h.Length = uint32(headerLen + skHdr + bodyLen)
	b := cryptobyte.NewFixedBuilder(make([]byte, 0, h.Length))
	h.marshal(b)
	b.AddUint8(uint8(first))
	b.AddUint8(0)
	b.AddUint16(uint16(skHdr + bodyLen))
	if typ == PayloadSKF {
		b.AddUint16(number)
		b.AddUint16(total)
	}
	aad, err := b.Bytes()
	if err != nil {
		return nil, err
	}
	body, err := sa.out.seal(aad, plain)
	if err != nil {
		return nil, err
	}
	return append(aad, body...), nil
}

// open decrypts a protected message's SK payload, or one SKF fragment of it, and fills
// m.Payloads. It returns false while fragments are missing.
func (sa *ikeSA) open(raw []byte, m *Message, enc *encrypted) (bool, error) {
	aad := raw[:len(raw)-len(enc.body)]
	plain, err := sa.in.open(aad, enc.body)
	if err != nil {
		return false, err
	}
	first := enc.next
	if enc.fragment {
		var done bool
		plain, first, done, err = sa.reasm.add(m.MessageID, m.IsResponse(), enc, plain)
		if err != nil || !done {
			return false, err
		}
	}
	inner, nested, err := unmarshalPayloads(plain, first)
	if err != nil {
		return false, err
	}
	if nested != nil {
		return false, syntaxErr("%v payload inside an encrypted payload", PayloadSK)
	}
	m.Payloads = append(m.Payloads, inner...)
	m.inner, m.innerFirst = plain, first
	return true, nil
}

func (sa *ikeSA) String() string {
	return fmt.Sprintf("%016x_i %016x_r", sa.spiI, sa.spiR)
}
