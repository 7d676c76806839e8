// Package pivclient is the host side of the PIV applet: one function per card instruction, over
// an apdu.Transport, with errors callers can test with errors.Is and errors.As.
package pivclient

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"

	"tokenlab/apdu"
	"tokenlab/apdu/tlv"
)

// Client sends PIV instructions to a card. It holds no state but the transport; selection and
// security status live on the card.
type Client struct {
	T apdu.Transport
}

// New returns a client for the card behind t.
func New(t apdu.Transport) *Client { return &Client{T: t} }

// AuthError is a failed PIN or PUK check; Retries is the number of tries left.
type AuthError struct{ Retries int }

func (e *AuthError) Error() string {
	if e.Retries == 0 {
		return "wrong PIN or PUK, now blocked"
	}
	return fmt.Sprintf("wrong PIN or PUK, %d tries left", e.Retries)
}

// Unwrap lets errors.Is(err, apdu.ErrVerifyFailed) match.
func (e *AuthError) Unwrap() error { return apdu.ErrVerifyFailed }

// do sends one command and turns a non-9000 status into an error naming the instruction.
func (c *Client) do(ctx context.Context, what string, cmd apdu.Command) ([]byte, error) {
	rsp, err := apdu.Exchange(ctx, c.T, cmd)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if n, ok := rsp.SW.Retries(); ok {
		return nil, fmt.Errorf("%s: %w", what, &AuthError{Retries: n})
	}
	if err := rsp.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return rsp.Data, nil
}

// PIV application identifier prefix (the registered application provider id), as YubiKey hosts select it.
var pivRID = []byte{0xA0, 0x00, 0x00, 0x03, 0x08}

// Select selects the PIV application and returns the application property template.
func (c *Client) Select(ctx context.Context) ([]byte, error) {
	return c.do(ctx, "select PIV", apdu.Command{INS: 0xA4, P1: 0x04, Data: pivRID})
}

// Version returns the firmware version (Yubico GET VERSION).
func (c *Client) Version(ctx context.Context) ([3]byte, error) {
	b, err := c.do(ctx, "get version", apdu.Command{INS: 0xFD})
	if err != nil {
		return [3]byte{}, err
	}
	if len(b) != 3 {
		return [3]byte{}, fmt.Errorf("get version: %d bytes, want 3", len(b))
	}
	return [3]byte(b), nil
}

// Serial returns the serial number (Yubico GET SERIAL).
func (c *Client) Serial(ctx context.Context) (uint32, error) {
	b, err := c.do(ctx, "get serial", apdu.Command{INS: 0xF8})
	if err != nil {
		return 0, err
	}
	if len(b) != 4 {
		return 0, fmt.Errorf("get serial: %d bytes, want 4", len(b))
	}
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]), nil
}

func padPIN(pin []byte) ([]byte, error) {
	if len(pin) == 0 || len(pin) > 8 {
		return nil, fmt.Errorf("a PIN or PUK is 1 to 8 bytes, not %d", len(pin))
	}
	b := make([]byte, 8)
	copy(b, pin)
	for i := len(pin); i < 8; i++ {
		b[i] = 0xFF
	}
	return b, nil
}

// VerifyPIN presents the PIN. A wrong PIN is an *AuthError; a blocked one apdu.ErrBlocked.
func (c *Client) VerifyPIN(ctx context.Context, pin []byte) error {
	b, err := padPIN(pin)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, "verify PIN", apdu.Command{INS: 0x20, P2: 0x80, Data: b})
	return err
}

// PINStatus asks whether the PIN is verified, without presenting it. It returns the tries left
// when it is not.
func (c *Client) PINStatus(ctx context.Context) (verified bool, retries int, err error) {
	rsp, err := apdu.Exchange(ctx, c.T, apdu.Command{INS: 0x20, P2: 0x80})
	if err != nil {
		return false, 0, err
	}
	if rsp.SW.OK() {
		return true, -1, nil
	}
	if n, ok := rsp.SW.Retries(); ok {
		return false, n, nil
	}
	if rsp.SW == apdu.SWAuthenticationBlocked {
		return false, 0, nil
	}
	return false, 0, fmt.Errorf("PIN status: %w", rsp.Err())
}

// Logout clears the PIN's security status (VERIFY P1 FF, SP 800-73-4).
func (c *Client) Logout(ctx context.Context) error {
	_, err := c.do(ctx, "log out", apdu.Command{INS: 0x20, P1: 0xFF, P2: 0x80})
	return err
}

func (c *Client) changeReference(ctx context.Context, what string, ins, ref byte, old, next []byte) error {
	o, err := padPIN(old)
	if err != nil {
		return err
	}
	n, err := padPIN(next)
	if err != nil {
		return err
	}
	_, err = c.do(ctx, what, apdu.Command{INS: ins, P2: ref, Data: append(o, n...)})
	return err
}

// ChangePIN replaces the PIN.
func (c *Client) ChangePIN(ctx context.Context, old, next []byte) error {
	return c.changeReference(ctx, "change PIN", 0x24, 0x80, old, next)
}

// ChangePUK replaces the PUK.
func (c *Client) ChangePUK(ctx context.Context, old, next []byte) error {
	return c.changeReference(ctx, "change PUK", 0x24, 0x81, old, next)
}

// Unblock sets a new PIN with the PUK (RESET RETRY COUNTER).
func (c *Client) Unblock(ctx context.Context, puk, pin []byte) error {
	return c.changeReference(ctx, "unblock PIN", 0x2C, 0x80, puk, pin)
}

// ManagementKeyAlgorithm identifiers (GENERAL AUTHENTICATE P1 for key 9B).
const (
	AlgTDES   byte = 0x03
	AlgAES128 byte = 0x08
	AlgAES192 byte = 0x0A
	AlgAES256 byte = 0x0C
)

// Key algorithm identifiers.
const (
	AlgRSA1024 byte = 0x06
	AlgRSA2048 byte = 0x07
	AlgRSA3072 byte = 0x05
	AlgRSA4096 byte = 0x16
	AlgECCP256 byte = 0x11
	AlgECCP384 byte = 0x14
	AlgEd25519 byte = 0xE0
	AlgX25519  byte = 0xE1
)

// Slots.
const (
	SlotAuthentication     byte = 0x9A
	SlotCardManagement     byte = 0x9B
	SlotSignature          byte = 0x9C
	SlotKeyManagement      byte = 0x9D
	SlotCardAuthentication byte = 0x9E
	SlotAttestation        byte = 0xF9
)

// PIN and touch policies.
const (
	PINPolicyDefault   byte = 0
	PINPolicyNever     byte = 1
	PINPolicyOnce      byte = 2
	PINPolicyAlways    byte = 3
	TouchPolicyDefault byte = 0
	TouchPolicyNever   byte = 1
	TouchPolicyAlways  byte = 2
	TouchPolicyCached  byte = 3
)

func authTemplate(fields ...[]byte) []byte {
	var in []byte
	for _, f := range fields {
		in = append(in, f...)
	}
	return tlv.Append(nil, 0x7C, in)
}

func authField(rsp []byte, tag tlv.Tag) ([]byte, error) {
	body, ok := tlv.Unwrap(rsp, 0x7C)
	if !ok {
		return nil, errors.New("response is not a dynamic authentication template")
	}
	v, ok := tlv.Find(body, tag)
	if !ok {
		return nil, fmt.Errorf("response has no tag %v", tag)
	}
	return v, nil
}

// AuthenticateManagementKey does the mutual witness/challenge authentication with the card
// management key of the given algorithm (AlgTDES, AlgAES128/192/256).
func (c *Client) AuthenticateManagementKey(ctx context.Context, alg byte, key []byte) error {
	block, err := newBlock(alg, key)
	if err != nil {
		return err
	}
	n := block.BlockSize()
	rsp, err := c.do(ctx, "management key witness", apdu.Command{INS: 0x87, P1: alg, P2: SlotCardManagement, Data: authTemplate([]byte{0x80, 0x00})})
	if err != nil {
		return err
	}
	enc, err := authField(rsp, 0x80)
	if err != nil || len(enc) != n {
		return fmt.Errorf("management key witness: malformed response % X", rsp)
	}
	witness := make([]byte, n)
	block.Decrypt(witness, enc)
	challenge := randomBytes(n)
	rsp, err = c.do(ctx, "management key authentication", apdu.Command{INS: 0x87, P1: alg, P2: SlotCardManagement,
		Data: authTemplate(tlv.Append(nil, 0x80, witness), tlv.Append(nil, 0x81, challenge))})
	if err != nil {
		return err
	}
	got, err := authField(rsp, 0x82)
	if err != nil || len(got) != n {
		return fmt.Errorf("management key authentication: malformed response % X", rsp)
	}
	want := make([]byte, n)
	block.Encrypt(want, challenge)
	if !equal(got, want) {
		return errors.New("management key authentication: the card does not know the key (its answer to our challenge is wrong)")
	}
	return nil
}

// Challenge returns the card's random challenge for external authentication with the
// management key (7C 02 81 00); OpenSC uses it as the card's random number generator.
func (c *Client) Challenge(ctx context.Context) ([]byte, error) {
	rsp, err := c.do(ctx, "get challenge", apdu.Command{INS: 0x87, P2: SlotCardManagement, Data: authTemplate([]byte{0x81, 0x00})})
	if err != nil {
		return nil, err
	}
	b, err := authField(rsp, 0x81)
	if err != nil || len(b) == 0 {
		return nil, fmt.Errorf("get challenge: malformed response % X", rsp)
	}
	return b, nil
}

// GenerateKey generates a key pair in slot and returns the public key.
func (c *Client) GenerateKey(ctx context.Context, slot, alg, pinPolicy, touchPolicy byte) (crypto.PublicKey, error) {
	var crt []byte
	crt = tlv.Append(crt, 0x80, []byte{alg})
	if pinPolicy != 0 {
		crt = tlv.Append(crt, 0xAA, []byte{pinPolicy})
	}
	if touchPolicy != 0 {
		crt = tlv.Append(crt, 0xAB, []byte{touchPolicy})
	}
	rsp, err := c.do(ctx, "generate key", apdu.Command{INS: 0x47, P2: slot, Data: tlv.Append(nil, 0xAC, crt)})
	if err != nil {
		return nil, err
	}
	body, ok := tlv.Unwrap(rsp, 0x7F49)
	if !ok {
		return nil, fmt.Errorf("generate key: response is not a public key template")
	}
	return ParsePublicKey(alg, body)
}

// ParsePublicKey decodes the content of a public key template (7F49 or GET METADATA tag 04) for
// a key of algorithm alg, checking it is well formed: an RSA modulus of the algorithm's size and
// an odd public exponent, a point on the curve, a 32-byte 25519 key.
func ParsePublicKey(alg byte, b []byte) (crypto.PublicKey, error) {
	objs, err := tlv.Parse(b)
	if err != nil {
		return nil, err
	}
	fields := map[tlv.Tag][]byte{}
	for _, o := range objs {
		if _, dup := fields[o.Tag]; dup {
			return nil, fmt.Errorf("public key: tag %v appears twice", o.Tag)
		}
		fields[o.Tag] = o.Value
	}
	only := func(tags ...tlv.Tag) bool {
		for _, t := range tags {
			if _, ok := fields[t]; !ok {
				return false
			}
		}
		return len(fields) == len(tags)
	}
	switch alg {
	case AlgRSA1024, AlgRSA2048, AlgRSA3072, AlgRSA4096:
		bits := map[byte]int{AlgRSA1024: 1024, AlgRSA2048: 2048, AlgRSA3072: 3072, AlgRSA4096: 4096}[alg]
		if !only(0x81, 0x82) {
			return nil, errors.New("public key: RSA wants exactly 81 (modulus) and 82 (exponent)")
		}
		n, e := new(big.Int).SetBytes(fields[0x81]), new(big.Int).SetBytes(fields[0x82])
		if n.BitLen() != bits {
			return nil, fmt.Errorf("public key: %d-bit modulus for RSA-%d", n.BitLen(), bits)
		}
		if e.BitLen() > 31 || e.Int64() < 3 || e.Bit(0) == 0 {
			return nil, errors.New("public key: RSA exponent is not an odd number from 3 to 2^31")
		}
		return &rsa.PublicKey{N: n, E: int(e.Int64())}, nil
	case AlgECCP256, AlgECCP384:
		if !only(0x86) {
			return nil, errors.New("public key: EC wants exactly 86 (point)")
		}
		curve := elliptic.P256()
		if alg == AlgECCP384 {
			curve = elliptic.P384()
		}
		return ecdsa.ParseUncompressedPublicKey(curve, fields[0x86])
	case AlgEd25519:
		if !only(0x86) || len(fields[0x86]) != ed25519.PublicKeySize {
			return nil, errors.New("public key: Ed25519 wants exactly 86 with 32 bytes")
		}
		return ed25519.PublicKey(bytes.Clone(fields[0x86])), nil
	case AlgX25519:
		if !only(0x86) {
			return nil, errors.New("public key: X25519 wants exactly 86 (point)")
		}
		return ecdh.X25519().NewPublicKey(fields[0x86])
	}
	return nil, fmt.Errorf("public key: unknown algorithm 0x%02X", alg)
}

// Authenticate runs GENERAL AUTHENTICATE with 82 00 and 81 data: an ECDSA signature over a
// digest (DER), an Ed25519 signature over a message, or the raw RSA operation on a block.
func (c *Client) Authenticate(ctx context.Context, slot, alg byte, data []byte) ([]byte, error) {
	// 7C { 82 00, 81 data } in one allocation: this is the signing hot path.
	inner := 2 + tlv.HeaderLen(0x81, len(data)) + len(data)
	b := make([]byte, 0, tlv.HeaderLen(0x7C, inner)+inner)
	b = tlv.AppendHeader(b, 0x7C, inner)
	b = append(b, 0x82, 0x00)
	b = tlv.Append(b, 0x81, data)
	rsp, err := c.do(ctx, "general authenticate", apdu.Command{INS: 0x87, P1: alg, P2: slot, Data: b})
	if err != nil {
		return nil, err
	}
	return authField(rsp, 0x82)
}

// ECDH returns the shared secret of slot's key with a peer public key (85).
func (c *Client) ECDH(ctx context.Context, slot, alg byte, peer []byte) ([]byte, error) {
	rsp, err := c.do(ctx, "key agreement", apdu.Command{INS: 0x87, P1: alg, P2: slot,
		Data: authTemplate([]byte{0x82, 0x00}, tlv.Append(nil, 0x85, peer))})
	if err != nil {
		return nil, err
	}
	return authField(rsp, 0x82)
}

func tagList(tag tlv.Tag) []byte {
	var b []byte
	for i := tag.Len() - 1; i >= 0; i-- {
		b = append(b, byte(tag>>(8*i)))
	}
	return tlv.Append(nil, 0x5C, b)
}

// GetData reads a data object and returns its value (inside 53; the whole 7E for discovery).
func (c *Client) GetData(ctx context.Context, tag tlv.Tag) ([]byte, error) {
	rsp, err := c.do(ctx, "get data "+tag.String(), apdu.Command{INS: 0xCB, P1: 0x3F, P2: 0xFF, Data: tagList(tag)})
	if err != nil {
		return nil, err
	}
	if tag == 0x7E {
		return rsp, nil
	}
	v, ok := tlv.Unwrap(rsp, 0x53)
	if !ok {
		return nil, fmt.Errorf("get data %v: response is not wrapped in 53", tag)
	}
	return v, nil
}

// PutData writes a data object; an empty value deletes it.
func (c *Client) PutData(ctx context.Context, tag tlv.Tag, value []byte) error {
	data := append(tagList(tag), tlv.Append(nil, 0x53, value)...)
	_, err := c.do(ctx, "put data "+tag.String(), apdu.Command{INS: 0xDB, P1: 0x3F, P2: 0xFF, Data: data})
	return err
}

// CertificateTag returns the object tag of a slot's certificate.
func CertificateTag(slot byte) tlv.Tag {
	switch {
	case slot == 0x9A:
		return 0x5FC105
	case slot == 0x9C:
		return 0x5FC10A
	case slot == 0x9D:
		return 0x5FC10B
	case slot == 0x9E:
		return 0x5FC101
	case slot == 0xF9:
		return 0x5FFF01
	case slot >= 0x82 && slot <= 0x95:
		return 0x5FC10D + tlv.Tag(slot-0x82)
	}
	return 0
}

// SetCertificate stores a DER certificate for slot, uncompressed.
func (c *Client) SetCertificate(ctx context.Context, slot byte, der []byte) error {
	var obj []byte
	obj = tlv.Append(obj, 0x70, der)
	obj = tlv.Append(obj, 0x71, []byte{0})
	obj = tlv.Append(obj, 0xFE, nil)
	return c.PutData(ctx, CertificateTag(slot), obj)
}

// Certificate reads and parses the certificate of slot.
func (c *Client) Certificate(ctx context.Context, slot byte) (*x509.Certificate, error) {
	v, err := c.GetData(ctx, CertificateTag(slot))
	if err != nil {
		return nil, err
	}
	der, ok := tlv.Find(v, 0x70)
	if !ok {
		return nil, errors.New("certificate object has no certificate (70)")
	}
	return x509.ParseCertificate(der)
}

// Attest returns the attestation certificate of the key in slot.
func (c *Client) Attest(ctx context.Context, slot byte) (*x509.Certificate, error) {
	der, err := c.do(ctx, "attest", apdu.Command{INS: 0xF9, P1: slot})
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// Metadata is what GET METADATA returns; absent fields are zero.
type Metadata struct {
	Algorithm   byte
	PINPolicy   byte
	TouchPolicy byte
	Origin      byte
	PublicKey   crypto.PublicKey
	IsDefault   bool
	MaxRetries  int
	Retries     int
}

// GetMetadata reads the metadata of a slot, the management key (9B), the PIN (80) or PUK (81).
func (c *Client) GetMetadata(ctx context.Context, ref byte) (*Metadata, error) {
	rsp, err := c.do(ctx, "get metadata", apdu.Command{INS: 0xF7, P2: ref})
	if err != nil {
		return nil, err
	}
	m, err := ParseMetadata(rsp)
	if err != nil {
		return nil, fmt.Errorf("get metadata: %w", err)
	}
	return m, nil
}

// ParseMetadata decodes a GET METADATA response. Known tags must have their length and appear
// once; unknown tags are skipped, as newer firmware adds them.
func ParseMetadata(b []byte) (*Metadata, error) {
	objs, err := tlv.Parse(b)
	if err != nil {
		return nil, err
	}
	want := map[tlv.Tag]int{0x01: 1, 0x02: 2, 0x03: 1, 0x05: 1, 0x06: 2}
	seen := map[tlv.Tag]bool{}
	var m Metadata
	var pub []byte
	for _, o := range objs {
		if o.Tag > 0x06 {
			continue
		}
		if seen[o.Tag] {
			return nil, fmt.Errorf("tag %v appears twice", o.Tag)
		}
		seen[o.Tag] = true
		if n, ok := want[o.Tag]; ok && len(o.Value) != n {
			return nil, fmt.Errorf("tag %v has %d bytes, want %d", o.Tag, len(o.Value), n)
		}
		v := o.Value
		switch o.Tag {
		case 0x01:
			m.Algorithm = v[0]
		case 0x02:
			m.PINPolicy, m.TouchPolicy = v[0], v[1]
		case 0x03:
			m.Origin = v[0]
		case 0x04:
			pub = v
		case 0x05:
			m.IsDefault = v[0] != 0
		case 0x06:
			m.MaxRetries, m.Retries = int(v[0]), int(v[1])
		}
	}
	if seen[0x04] {
		// After the loop: the algorithm (01) says how to read it, wherever it came.
		if m.PublicKey, err = ParsePublicKey(m.Algorithm, pub); err != nil {
			return nil, err
		}
	}
	return &m, nil
}

// SetManagementKey replaces the management key; requireTouch sets its touch policy.
func (c *Client) SetManagementKey(ctx context.Context, alg byte, key []byte, requireTouch bool) error {
	p2 := byte(0xFF)
	if requireTouch {
		p2 = 0xFE
	}
	data := append([]byte{alg, 0x9B, byte(len(key))}, key...)
	_, err := c.do(ctx, "set management key", apdu.Command{INS: 0xFF, P1: 0xFF, P2: p2, Data: data})
	return err
}

// SetPINRetries sets the PIN and PUK retry counters, resetting both to their defaults.
func (c *Client) SetPINRetries(ctx context.Context, pin, puk byte) error {
	_, err := c.do(ctx, "set PIN retries", apdu.Command{INS: 0xFA, P1: pin, P2: puk})
	return err
}

// Reset restores the factory state; the card refuses unless PIN and PUK are blocked.
func (c *Client) Reset(ctx context.Context) error {
	_, err := c.do(ctx, "reset", apdu.Command{INS: 0xFB})
	return err
}

// ImportKey imports a private key into slot: P-256 or P-384 ECDSA, Ed25519, X25519, or
// two-prime RSA 1024 to 4096 with primes of half the modulus size, as the card requires.
func (c *Client) ImportKey(ctx context.Context, slot byte, priv crypto.PrivateKey, pinPolicy, touchPolicy byte) error {
	var alg byte
	var data []byte
	switch k := priv.(type) {
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256():
			alg = AlgECCP256
		case elliptic.P384():
			alg = AlgECCP384
		default:
			return fmt.Errorf("import key: curve %s is not P-256 or P-384", k.Curve.Params().Name)
		}
		b, err := k.Bytes()
		if err != nil {
			return err
		}
		data = tlv.Append(data, 0x06, b)
	case ed25519.PrivateKey:
		alg = AlgEd25519
		data = tlv.Append(data, 0x07, k.Seed())
	case *ecdh.PrivateKey:
		if k.Curve() != ecdh.X25519() {
			return errors.New("import key: only X25519 keys of crypto/ecdh")
		}
		alg = AlgX25519
		data = tlv.Append(data, 0x08, k.Bytes())
	case *rsa.PrivateKey:
		bits := k.N.BitLen()
		switch bits {
		case 1024:
			alg = AlgRSA1024
		case 2048:
			alg = AlgRSA2048
		case 3072:
			alg = AlgRSA3072
		case 4096:
			alg = AlgRSA4096
		default:
			return fmt.Errorf("import key: unsupported RSA size %d", bits)
		}
		if len(k.Primes) != 2 || k.Primes[0].BitLen() != bits/2 || k.Primes[1].BitLen() != bits/2 || k.E != 65537 {
			return errors.New("import key: RSA keys need two primes of half the modulus size and e = 65537")
		}
		p, q := k.Primes[0], k.Primes[1]
		one := big.NewInt(1)
		dp := new(big.Int).Mod(k.D, new(big.Int).Sub(p, one))
		dq := new(big.Int).Mod(k.D, new(big.Int).Sub(q, one))
		qinv := new(big.Int).ModInverse(q, p)
		if qinv == nil {
			return errors.New("import key: q is not invertible mod p")
		}
		for i, v := range []*big.Int{p, q, dp, dq, qinv} {
			data = tlv.Append(data, tlv.Tag(i+1), v.FillBytes(make([]byte, bits/16)))
		}
	default:
		return fmt.Errorf("import key: unsupported key type %T", priv)
	}
	if pinPolicy != 0 {
		data = tlv.Append(data, 0xAA, []byte{pinPolicy})
	}
	if touchPolicy != 0 {
		data = tlv.Append(data, 0xAB, []byte{touchPolicy})
	}
	_, err := c.do(ctx, "import key", apdu.Command{INS: 0xFE, P1: alg, P2: slot, Data: data})
	return err
}

// MoveKey moves the key in from to slot to (Yubico 5.7).
func (c *Client) MoveKey(ctx context.Context, from, to byte) error {
	_, err := c.do(ctx, "move key", apdu.Command{INS: 0xF6, P1: to, P2: from})
	return err
}

// DeleteKey deletes the key in slot (Yubico 5.7).
func (c *Client) DeleteKey(ctx context.Context, slot byte) error {
	_, err := c.do(ctx, "delete key", apdu.Command{INS: 0xF6, P1: 0xFF, P2: slot})
	return err
}
