package ike

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"errors"
	"fmt"
	"hash"
	"slices"
	"strings"

	"golang.org/x/crypto/chacha20poly1305"
)

// Cipher is an encryption transform with its key size.
type Cipher struct {
	ID      uint16 // EncrAESCBC, EncrAESGCM16, EncrChaCha20Poly1305
	KeyBits uint16 // 128 or 256 for AES; 0 for ChaCha20-Poly1305 (no Key Length attribute)
}

// AEAD reports whether the cipher authenticates: no integrity transform goes with it.
func (c Cipher) AEAD() bool { return c.ID != EncrAESCBC }

// keyLen is the key material the cipher takes: the AES key, plus a 4-byte salt for the AEADs
// (RFC 5282 §7.1, RFC 7634 §2).
func (c Cipher) keyLen() int {
	switch c.ID {
	case EncrAESCBC:
		return int(c.KeyBits) / 8
	case EncrAESGCM16:
		return int(c.KeyBits)/8 + 4
	case EncrChaCha20Poly1305:
		return chacha20poly1305.KeySize + 4
	}
	return 0
}

func (c Cipher) transform() Transform {
	return Transform{Type: TransformENCR, ID: c.ID, KeyLength: c.KeyBits}
}

func (c Cipher) String() string {
	switch c.ID {
	case EncrAESCBC:
		return fmt.Sprintf("aes%d", c.KeyBits)
	case EncrAESGCM16:
		return fmt.Sprintf("aes%dgcm16", c.KeyBits)
	case EncrChaCha20Poly1305:
		return "chacha20poly1305"
	}
	return fmt.Sprintf("encr%d", c.ID)
}

func (c Cipher) supported() bool {
	switch c.ID {
	case EncrAESCBC, EncrAESGCM16:
		return c.KeyBits == 128 || c.KeyBits == 256
	case EncrChaCha20Poly1305:
		return c.KeyBits == 0
	}
	return false
}

// hashFor returns the hash of a PRF or integrity transform.
func hashFor(t TransformType, id uint16) func() hash.Hash {
	switch {
	case t == TransformPRF && id == PRFHMACSHA256, t == TransformINTEG && id == IntegHMACSHA256_128:
		return sha256.New
	case t == TransformPRF && id == PRFHMACSHA384, t == TransformINTEG && id == IntegHMACSHA384_192:
		return sha512.New384
	case t == TransformPRF && id == PRFHMACSHA512, t == TransformINTEG && id == IntegHMACSHA512_256:
		return sha512.New
	}
	return nil
}

// prf is a negotiated pseudorandom function, an HMAC (RFC 4868).
type prf struct {
	id   uint16
	hash func() hash.Hash
}

func newPRF(id uint16) (prf, error) {
	h := hashFor(TransformPRF, id)
	if h == nil {
		return prf{}, fmt.Errorf("ike: PRF %d not supported", id)
	}
	return prf{id, h}, nil
}

// size is the PRF's output and preferred key length.
func (p prf) size() int { return p.hash().Size() }

// sum computes prf(key, data...).
func (p prf) sum(key []byte, data ...[]byte) []byte {
	m := hmac.New(p.hash, key)
	for _, d := range data {
		m.Write(d)
	}
	return m.Sum(nil)
}

// integ is a negotiated integrity transform: HMAC-SHA2 truncated to half its output (RFC 4868).
type integ struct {
	id   uint16
	hash func() hash.Hash
}

func (i integ) keyLen() int { return i.hash().Size() }
func (i integ) icvLen() int { return i.hash().Size() / 2 }

// protector encrypts and authenticates the SK payloads of one direction.
type protector struct {
	c     Cipher
	aead  cipher.AEAD
	salt  []byte
	block cipher.Block
	integ integ
	mac   []byte
}

func newProtector(c Cipher, ig integ, encrKey, integKey []byte) (*protector, error) {
	p := &protector{c: c, integ: ig, mac: integKey}
	var err error
	switch c.ID {
	case EncrAESCBC:
		p.block, err = aes.NewCipher(encrKey)
	case EncrAESGCM16:
		var b cipher.Block
		if b, err = aes.NewCipher(encrKey[:len(encrKey)-4]); err == nil {
			p.aead, err = cipher.NewGCM(b)
		}
		p.salt = encrKey[len(encrKey)-4:]
	case EncrChaCha20Poly1305:
		p.aead, err = chacha20poly1305.New(encrKey[:chacha20poly1305.KeySize])
		p.salt = encrKey[chacha20poly1305.KeySize:]
	default:
		err = fmt.Errorf("ike: cipher %v not supported", c)
	}
	return p, err
}

func (p *protector) ivLen() int {
	if p.aead != nil {
		return 8
	}
	return aes.BlockSize
}

func (p *protector) icvLen() int {
	if p.aead != nil {
		return p.aead.Overhead()
	}
	return p.integ.icvLen()
}

// bodyLen is the length of IV, ciphertext and ICV for plainLen bytes of payloads.
func (p *protector) bodyLen(plainLen int) int {
	n := plainLen + 1 // pad length byte
	if p.aead == nil {
		n = (n + aes.BlockSize - 1) / aes.BlockSize * aes.BlockSize
	}
	return p.ivLen() + n + p.icvLen()
}

// seal returns IV, ciphertext and ICV of plain, protected together with aad: the message from
// the IKE header to the end of the SK or SKF payload header, lengths already final
// (RFC 7296 §3.14, RFC 5282 §5.1, RFC 7383 §2.5).
func (p *protector) seal(aad, plain []byte) ([]byte, error) {
	body := make([]byte, p.bodyLen(len(plain)))
	iv := body[:p.ivLen()]
	if _, err := rand.Read(iv); err != nil {
		return nil, err
	}
	padded := body[len(iv) : len(body)-p.icvLen()]
	copy(padded, plain)
	padded[len(padded)-1] = byte(len(padded) - 1 - len(plain))
	if p.aead != nil {
		nonce := append(append(make([]byte, 0, 12), p.salt...), iv...)
		p.aead.Seal(padded[:0], nonce, padded, aad)
		return body, nil
	}
	cipher.NewCBCEncrypter(p.block, iv).CryptBlocks(padded, padded)
	m := hmac.New(p.integ.hash, p.mac)
	m.Write(aad)
	m.Write(body[:len(body)-p.icvLen()])
	copy(body[len(body)-p.icvLen():], m.Sum(nil))
	return body, nil
}

var errIntegrity = errors.New("ike: integrity check failed")

// open checks and decrypts a body made by seal, and strips the padding.
func (p *protector) open(aad, body []byte) ([]byte, error) {
	iv, icv := p.ivLen(), p.icvLen()
	if len(body) < iv+icv+1 {
		return nil, syntaxErr("SK payload of %d bytes", len(body))
	}
	ct := body[iv : len(body)-icv]
	var plain []byte
	if p.aead != nil {
		nonce := append(append(make([]byte, 0, 12), p.salt...), body[:iv]...)
		var err error
		if plain, err = p.aead.Open(nil, nonce, body[iv:], aad); err != nil {
			return nil, errIntegrity
		}
	} else {
		m := hmac.New(p.integ.hash, p.mac)
		m.Write(aad)
		m.Write(body[:len(body)-icv])
		if subtle.ConstantTimeCompare(m.Sum(nil)[:icv], body[len(body)-icv:]) != 1 {
			return nil, errIntegrity
		}
		if len(ct)%aes.BlockSize != 0 {
			return nil, syntaxErr("CBC ciphertext of %d bytes", len(ct))
		}
		plain = make([]byte, len(ct))
		cipher.NewCBCDecrypter(p.block, body[:iv]).CryptBlocks(plain, ct)
	}
	pad := int(plain[len(plain)-1])
	if pad+1 > len(plain) {
		return nil, syntaxErr("pad length %d in %d bytes", pad, len(plain))
	}
	return plain[:len(plain)-1-pad], nil
}

// Proposal is a set of acceptable algorithms, in order of preference. For an IKE SA it has
// ciphers, PRFs, integrity algorithms (none with an AEAD) and DH groups; for a Child SA
// (ESP) ciphers, integrity algorithms and optionally DH groups (PFS on rekey).
type Proposal struct {
	Ciphers []Cipher
	Integ   []uint16
	PRFs    []uint16
	Groups  []uint16
}

var cipherNames = map[string]Cipher{
	"aes128":           {EncrAESCBC, 128},
	"aes256":           {EncrAESCBC, 256},
	"aes128gcm16":      {EncrAESGCM16, 128},
	"aes256gcm16":      {EncrAESGCM16, 256},
	"aes128gcm":        {EncrAESGCM16, 128},
	"aes256gcm":        {EncrAESGCM16, 256},
	"chacha20poly1305": {EncrChaCha20Poly1305, 0},
}

var integNames = map[string]uint16{
	"sha256": IntegHMACSHA256_128, "sha384": IntegHMACSHA384_192, "sha512": IntegHMACSHA512_256,
}

var prfNames = map[string]uint16{
	"prfsha256": PRFHMACSHA256, "prfsha384": PRFHMACSHA384, "prfsha512": PRFHMACSHA512,
}

var groupNames = map[string]uint16{
	"modp2048": DHModp2048, "ecp256": DHECP256, "ecp384": DHECP384, "ecp521": DHECP521,
	"curve25519": DHCurve25519, "x25519": DHCurve25519,
}

// ParseProposal parses a proposal in strongSwan's notation, which FortiGate's names follow:
// "aes128-sha256-modp2048", "aes256gcm16-prfsha384-ecp384", "chacha20poly1305-prfsha256".
// With a CBC cipher, sha256 is both the integrity algorithm and, unless a prf is named, the
// PRF. For ESP (esp true) no PRF is taken.
func ParseProposal(s string, esp bool) (Proposal, error) {
	var p Proposal
	for _, tok := range strings.Split(strings.ToLower(strings.TrimSpace(s)), "-") {
		if c, ok := cipherNames[tok]; ok {
			p.Ciphers = append(p.Ciphers, c)
		} else if i, ok := integNames[tok]; ok {
			p.Integ = append(p.Integ, i)
		} else if f, ok := prfNames[tok]; ok && !esp {
			p.PRFs = append(p.PRFs, f)
		} else if g, ok := groupNames[tok]; ok {
			p.Groups = append(p.Groups, g)
		} else if tok == "noesn" && esp {
		} else {
			return p, fmt.Errorf("ike: proposal %q: unknown algorithm %q", s, tok)
		}
	}
	if len(p.Ciphers) == 0 {
		return p, fmt.Errorf("ike: proposal %q names no cipher", s)
	}
	aead, cbc := false, false
	for _, c := range p.Ciphers {
		aead, cbc = aead || c.AEAD(), cbc || !c.AEAD()
	}
	if aead && cbc {
		return p, fmt.Errorf("ike: proposal %q mixes AEAD and CBC ciphers", s)
	}
	if cbc && len(p.Integ) == 0 {
		return p, fmt.Errorf("ike: proposal %q: a CBC cipher needs an integrity algorithm (sha256, sha384, sha512)", s)
	}
	if aead && len(p.Integ) > 0 {
		if esp || len(p.PRFs) > 0 {
			return p, fmt.Errorf("ike: proposal %q: an AEAD cipher takes no integrity algorithm", s)
		}
		// "aes128gcm16-sha256": strongSwan reads sha256 as the PRF.
		for _, i := range p.Integ {
			p.PRFs = append(p.PRFs, prfOfInteg(i))
		}
		p.Integ = nil
	}
	if !esp && len(p.PRFs) == 0 {
		for _, i := range p.Integ {
			p.PRFs = append(p.PRFs, prfOfInteg(i))
		}
		if len(p.PRFs) == 0 {
			return p, fmt.Errorf("ike: proposal %q names no PRF (prfsha256, prfsha384, prfsha512)", s)
		}
	}
	return p, nil
}

func prfOfInteg(i uint16) uint16 {
	switch i {
	case IntegHMACSHA384_192:
		return PRFHMACSHA384
	case IntegHMACSHA512_256:
		return PRFHMACSHA512
	}
	return PRFHMACSHA256
}

// ParseProposals parses a comma-separated list of proposals.
func ParseProposals(s string, esp bool) ([]Proposal, error) {
	var out []Proposal
	for _, f := range strings.Split(s, ",") {
		if strings.TrimSpace(f) == "" {
			continue
		}
		p, err := ParseProposal(f, esp)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("ike: no proposal in %q", s)
	}
	return out, nil
}

func (p Proposal) String() string {
	var parts []string
	for _, c := range p.Ciphers {
		parts = append(parts, c.String())
	}
	for _, i := range p.Integ {
		parts = append(parts, transformName(TransformINTEG, i))
	}
	for _, f := range p.PRFs {
		parts = append(parts, transformName(TransformPRF, f))
	}
	for _, g := range p.Groups {
		parts = append(parts, transformName(TransformDH, g))
	}
	return strings.Join(parts, "-")
}

func transformName(t TransformType, id uint16) string {
	switch t {
	case TransformENCR:
		return Cipher{ID: id, KeyBits: 0}.String()
	case TransformINTEG:
		for n, v := range integNames {
			if v == id {
				return n
			}
		}
	case TransformPRF:
		for n, v := range prfNames {
			if v == id {
				return n
			}
		}
	case TransformDH:
		switch id {
		case DHModp2048:
			return "modp2048"
		case DHECP256:
			return "ecp256"
		case DHECP384:
			return "ecp384"
		case DHECP521:
			return "ecp521"
		case DHCurve25519:
			return "curve25519"
		}
	case TransformESN:
		if id == ESNNo {
			return "noesn"
		}
		return "esn"
	}
	return fmt.Sprintf("%d:%d", t, id)
}

// saProposal encodes p as proposal number n of protocol proto with spi. An ESP proposal
// carries "no extended sequence numbers".
func (p Proposal) saProposal(n uint8, proto ProtocolID, spi []byte) SAProposal {
	sp := SAProposal{Number: n, Protocol: proto, SPI: spi}
	for _, c := range p.Ciphers {
		sp.Transforms = append(sp.Transforms, c.transform())
	}
	if proto == ProtocolIKE {
		for _, f := range p.PRFs {
			sp.Transforms = append(sp.Transforms, Transform{Type: TransformPRF, ID: f})
		}
	}
	for _, i := range p.Integ {
		sp.Transforms = append(sp.Transforms, Transform{Type: TransformINTEG, ID: i})
	}
	for _, g := range p.Groups {
		sp.Transforms = append(sp.Transforms, Transform{Type: TransformDH, ID: g})
	}
	if proto == ProtocolESP {
		sp.Transforms = append(sp.Transforms, Transform{Type: TransformESN, ID: ESNNo})
	}
	return sp
}

// Suite is a negotiated set of algorithms: one of each type.
type Suite struct {
	Cipher Cipher
	Integ  uint16 // IntegNone with an AEAD
	PRF    uint16 // IKE only
	Group  uint16 // 0 when no DH (a Child SA without PFS)
}

func (s Suite) String() string {
	parts := []string{s.Cipher.String()}
	if s.Integ != IntegNone {
		parts = append(parts, transformName(TransformINTEG, s.Integ))
	}
	if s.PRF != 0 {
		parts = append(parts, transformName(TransformPRF, s.PRF))
	}
	if s.Group != 0 {
		parts = append(parts, transformName(TransformDH, s.Group))
	}
	return strings.Join(parts, "-")
}

// suiteOf reads a proposal with one transform of each type, as a responder's answer has.
func suiteOf(sp SAProposal) (Suite, error) {
	var s Suite
	seen := map[TransformType]bool{}
	for _, t := range sp.Transforms {
		if seen[t.Type] {
			return s, fmt.Errorf("ike: the chosen proposal has two transforms of type %d", t.Type)
		}
		seen[t.Type] = true
		switch t.Type {
		case TransformENCR:
			s.Cipher = Cipher{t.ID, t.KeyLength}
		case TransformINTEG:
			s.Integ = t.ID
		case TransformPRF:
			s.PRF = t.ID
		case TransformDH:
			s.Group = t.ID
		}
	}
	return s, nil
}

// choose picks, for proposals offered by the peer, the first of ours that one of theirs
// matches (our preference wins, as strongSwan's default), and returns the peer's proposal
// number and SPI with one transform of each type. group, when not 0, must be the DH group.
func choose(ours []Proposal, theirs []SAProposal, proto ProtocolID) (Suite, SAProposal, bool) {
	for _, p := range ours {
		for _, sp := range theirs {
			if sp.Protocol != proto {
				continue
			}
			if s, ok := match(p, sp, proto); ok {
				chosen := Suite.saProposal(s, sp.Number, proto, sp.SPI)
				return s, chosen, true
			}
		}
	}
	return Suite{}, SAProposal{}, false
}

// match finds in the peer's proposal sp a transform of each type from p.
func match(p Proposal, sp SAProposal, proto ProtocolID) (Suite, bool) {
	has := func(t Transform) bool {
		return slices.ContainsFunc(sp.Transforms, func(u Transform) bool {
			return u.Type == t.Type && u.ID == t.ID && u.KeyLength == t.KeyLength
		})
	}
	any := func(t TransformType) bool {
		return slices.ContainsFunc(sp.Transforms, func(u Transform) bool { return u.Type == t })
	}
	var s Suite
	found := false
	for _, c := range p.Ciphers {
		if c.supported() && has(c.transform()) {
			s.Cipher, found = c, true
			break
		}
	}
	if !found {
		return s, false
	}
	if s.Cipher.AEAD() {
		// An AEAD proposal has no integrity transform, or only NONE.
		if slices.ContainsFunc(sp.Transforms, func(u Transform) bool { return u.Type == TransformINTEG && u.ID != IntegNone }) {
			return s, false
		}
	} else {
		found = false
		for _, i := range p.Integ {
			if has(Transform{Type: TransformINTEG, ID: i}) {
				s.Integ, found = i, true
				break
			}
		}
		if !found {
			return s, false
		}
	}
	if proto == ProtocolIKE {
		found = false
		for _, f := range p.PRFs {
			if has(Transform{Type: TransformPRF, ID: f}) {
				s.PRF, found = f, true
				break
			}
		}
		if !found {
			return s, false
		}
	}
	if any(TransformDH) || (proto == ProtocolIKE) {
		found = false
		for _, g := range p.Groups {
			if has(Transform{Type: TransformDH, ID: g}) {
				s.Group, found = g, true
				break
			}
		}
		// A Child SA proposal may list DH NONE (0) among its groups.
		if !found && !(proto != ProtocolIKE && (len(p.Groups) == 0 && has(Transform{Type: TransformDH, ID: 0}))) {
			return s, false
		}
	}
	if proto == ProtocolESP && any(TransformESN) && !has(Transform{Type: TransformESN, ID: ESNNo}) {
		return s, false
	}
	return s, true
}

// saProposal encodes a chosen suite as the one-transform-per-type answer.
func (s Suite) saProposal(n uint8, proto ProtocolID, spi []byte) SAProposal {
	p := Proposal{Ciphers: []Cipher{s.Cipher}}
	if s.Integ != IntegNone {
		p.Integ = []uint16{s.Integ}
	}
	if s.PRF != 0 {
		p.PRFs = []uint16{s.PRF}
	}
	if s.Group != 0 {
		p.Groups = []uint16{s.Group}
	}
	return p.saProposal(n, proto, spi)
}

// DefaultProposals is FortiGate's dial-up proposal set (ike-ssh.md §2), each with DH 14, 19,
// 20, 21 and 31: aes128-sha256, aes256-sha256, aes128gcm-prfsha256, aes256gcm-prfsha384,
// chacha20poly1305-prfsha256.
func DefaultProposals() []Proposal {
	groups := []uint16{DHECP256, DHCurve25519, DHECP384, DHECP521, DHModp2048}
	var out []Proposal
	for _, s := range []string{"aes128-sha256", "aes256-sha256", "aes128gcm16-prfsha256", "aes256gcm16-prfsha384", "chacha20poly1305-prfsha256"} {
		p, _ := ParseProposal(s, false)
		p.Groups = groups
		out = append(out, p)
	}
	return out
}

// DefaultChildProposals are the ESP proposals offered and accepted by default.
func DefaultChildProposals() []Proposal {
	var out []Proposal
	for _, s := range []string{"aes128gcm16", "aes256gcm16", "chacha20poly1305", "aes128-sha256", "aes256-sha256"} {
		p, _ := ParseProposal(s, true)
		out = append(out, p)
	}
	return out
}
