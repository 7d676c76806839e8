package ike

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"filippo.io/bigmod"
)

// dhKey is our half of a Diffie-Hellman exchange.
type dhKey interface {
	// public is the KE payload's key exchange data.
	public() []byte
	// shared computes g^ir from the peer's key exchange data, validating it.
	shared(peer []byte) ([]byte, error)
}

var errBadKE = errors.New("ike: invalid key exchange data")

// generateDH makes a fresh key of a group.
func generateDH(group uint16) (dhKey, error) {
	switch group {
	case DHECP256:
		return newECDH(ecdh.P256())
	case DHECP384:
		return newECDH(ecdh.P384())
	case DHECP521:
		return newECDH(ecdh.P521())
	case DHCurve25519:
		return newECDH(ecdh.X25519())
	case DHModp2048:
		return newMODP()
	}
	return nil, fmt.Errorf("ike: DH group %d not supported", group)
}

func groupSupported(g uint16) bool {
	switch g {
	case DHECP256, DHECP384, DHECP521, DHCurve25519, DHModp2048:
		return true
	}
	return false
}

type ecdhKey struct {
	k *ecdh.PrivateKey
}

func newECDH(c ecdh.Curve) (dhKey, error) {
	k, err := c.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return ecdhKey{k}, nil
}

// public is x‖y without the 0x04 of SEC 1 for the NIST curves (RFC 5903 §7), the
// u-coordinate for Curve25519 (RFC 8031 §2).
func (e ecdhKey) public() []byte {
	b := e.k.PublicKey().Bytes()
	if e.k.Curve() != ecdh.X25519() {
		b = b[1:]
	}
	return b
}

func (e ecdhKey) shared(peer []byte) ([]byte, error) {
	if e.k.Curve() != ecdh.X25519() {
		if len(peer) != len(e.public()) {
			return nil, fmt.Errorf("%w: %d bytes for a %d-byte point", errBadKE, len(peer), len(e.public()))
		}
		peer = append([]byte{4}, peer...)
	}
	pub, err := e.k.Curve().NewPublicKey(peer) // checks the point is on the curve
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadKE, err)
	}
	s, err := e.k.ECDH(pub) // rejects the all-zero X25519 output (RFC 8031 §2.3)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadKE, err)
	}
	return s, nil
}

// modp2048P is the 2048-bit MODP group's prime, generator 2. RFC 3526 §3.
var modp2048P, _ = hex.DecodeString(
	"FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD" +
		"EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED" +
		"EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F" +
		"83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B" +
		"E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA0510" +
		"15728E5A8AACAA68FFFFFFFFFFFFFFFF")

// modpExponentLen is the private exponent's length: 512 bits, twice the strength asked of the
// group's symmetric keys (RFC 3526 §8 estimates 110–160 bits for MODP-2048).
const modpExponentLen = 64

// modpKey is a MODP-2048 key; exponentiation is constant time (filippo.io/bigmod).
type modpKey struct {
	m   *bigmod.Modulus
	x   []byte
	pub []byte
}

func newMODP() (dhKey, error) {
	m, err := bigmod.NewModulus(modp2048P)
	if err != nil {
		return nil, err
	}
	x := make([]byte, modpExponentLen)
	if _, err := rand.Read(x); err != nil {
		return nil, err
	}
	x[0] |= 0x80
	g := bigmod.NewNat().SetUint(2).ExpandFor(m)
	pub := bigmod.NewNat().Exp(g, x, m).Bytes(m)
	return &modpKey{m: m, x: x, pub: pub}, nil
}

func (k *modpKey) public() []byte { return k.pub }

// shared checks 1 < y < p-1 (RFC 7296 §5, NIST SP 800-56A §5.6.2.3.1) and returns y^x mod p
// in the prime's length.
func (k *modpKey) shared(peer []byte) ([]byte, error) {
	if len(peer) != len(modp2048P) {
		return nil, fmt.Errorf("%w: %d bytes for MODP-2048", errBadKE, len(peer))
	}
	y, err := bigmod.NewNat().SetBytes(peer, k.m)
	if err != nil {
		return nil, fmt.Errorf("%w: not below the prime", errBadKE)
	}
	if y.IsZero() == 1 || y.IsOne() == 1 || y.IsMinusOne(k.m) == 1 {
		return nil, fmt.Errorf("%w: 0, 1 or p-1", errBadKE)
	}
	z := bigmod.NewNat().Exp(y, k.x, k.m)
	if z.IsOne() == 1 {
		return nil, fmt.Errorf("%w: shared secret 1", errBadKE)
	}
	return z.Bytes(k.m), nil
}
