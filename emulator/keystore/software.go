package keystore

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"

	"filippo.io/bigmod"
)

// Software keeps keys in process memory and persists them as PKCS #8.
type Software struct{}

// Name implements Store.
func (Software) Name() string { return "software" }

// Generate implements Store.
func (s Software) Generate(alg Algorithm) (Key, error) {
	switch {
	case alg.IsEC():
		k, err := ecdsa.GenerateKey(curve(alg), rand.Reader)
		if err != nil {
			return nil, err
		}
		return newECKey(alg, k)
	case alg.IsRSA():
		k, err := rsa.GenerateKey(rand.Reader, alg.RSABits())
		if err != nil {
			return nil, err
		}
		return newRSAKey(alg, k)
	case alg == Ed25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		return edKey(k), nil
	case alg == X25519:
		k, err := ecdh.X25519().GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		return &xKey{k}, nil
	}
	return nil, fmt.Errorf("keystore: cannot generate %v", alg)
}

// Import implements Store. It checks that the key matches alg and is internally consistent.
func (s Software) Import(alg Algorithm, priv crypto.PrivateKey) (Key, error) {
	switch k := priv.(type) {
	case *ecdsa.PrivateKey:
		if !alg.IsEC() || k.Curve != curve(alg) {
			break
		}
		return newECKey(alg, k)
	case *rsa.PrivateKey:
		if !alg.IsRSA() || k.N.BitLen() != alg.RSABits() {
			break
		}
		return newRSAKey(alg, k)
	case ed25519.PrivateKey:
		if alg != Ed25519 || len(k) != ed25519.PrivateKeySize {
			break
		}
		return edKey(k), nil
	case *ecdh.PrivateKey:
		if alg != X25519 || k.Curve() != ecdh.X25519() {
			break
		}
		return &xKey{k}, nil
	}
	return nil, fmt.Errorf("%w: a %T is not a %v key", ErrInput, priv, alg)
}

// Marshal implements Store.
func (s Software) Marshal(k Key) ([]byte, error) {
	var priv any
	switch k := k.(type) {
	case *ecKey:
		priv = k.priv
	case *rsaKey:
		priv = k.priv
	case edKey:
		priv = ed25519.PrivateKey(k)
	case *xKey:
		priv = k.priv
	default:
		return nil, fmt.Errorf("keystore: %T is not a software key", k)
	}
	return x509.MarshalPKCS8PrivateKey(priv)
}

// Load implements Store.
func (s Software) Load(alg Algorithm, blob []byte) (Key, error) {
	priv, err := x509.ParsePKCS8PrivateKey(blob)
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	if k, ok := priv.(ed25519.PrivateKey); ok {
		return s.Import(alg, k)
	}
	return s.Import(alg, priv)
}

func curve(alg Algorithm) elliptic.Curve {
	switch alg {
	case ECCP256:
		return elliptic.P256()
	case ECCP384:
		return elliptic.P384()
	}
	return nil
}

// ecKey is a P-256 or P-384 key for ECDSA and ECDH.
type ecKey struct {
	alg  Algorithm
	priv *ecdsa.PrivateKey
	dh   *ecdh.PrivateKey
	n    int // order length in bytes
}

func newECKey(alg Algorithm, k *ecdsa.PrivateKey) (*ecKey, error) {
	dh, err := k.ECDH()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInput, err)
	}
	return &ecKey{alg: alg, priv: k, dh: dh, n: (k.Curve.Params().N.BitLen() + 7) / 8}, nil
}

func (k *ecKey) Algorithm() Algorithm     { return k.alg }
func (k *ecKey) Public() crypto.PublicKey { return &k.priv.PublicKey }
func (k *ecKey) RSA([]byte) ([]byte, error) {
	return nil, ErrUnsupported
}

func (k *ecKey) Sign(digest []byte) ([]byte, error) {
	if len(digest) == 0 || len(digest) > k.n {
		return nil, fmt.Errorf("%w: %d-byte digest for a %d-byte order", ErrInput, len(digest), k.n)
	}
	return ecdsa.SignASN1(rand.Reader, k.priv, digest)
}

func (k *ecKey) ECDH(peer []byte) ([]byte, error) {
	pub, err := k.dh.Curve().NewPublicKey(peer)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInput, err)
	}
	return k.dh.ECDH(pub)
}

type edKey ed25519.PrivateKey

func (k edKey) Algorithm() Algorithm     { return Ed25519 }
func (k edKey) Public() crypto.PublicKey { return ed25519.PrivateKey(k).Public() }
func (k edKey) Sign(msg []byte) ([]byte, error) {
	return ed25519.Sign(ed25519.PrivateKey(k), msg), nil
}
func (k edKey) RSA([]byte) ([]byte, error)  { return nil, ErrUnsupported }
func (k edKey) ECDH([]byte) ([]byte, error) { return nil, ErrUnsupported }

type xKey struct{ priv *ecdh.PrivateKey }

func (k *xKey) Algorithm() Algorithm        { return X25519 }
func (k *xKey) Public() crypto.PublicKey    { return k.priv.PublicKey() }
func (k *xKey) Sign([]byte) ([]byte, error) { return nil, ErrUnsupported }
func (k *xKey) RSA([]byte) ([]byte, error)  { return nil, ErrUnsupported }
func (k *xKey) ECDH(peer []byte) ([]byte, error) {
	pub, err := ecdh.X25519().NewPublicKey(peer)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInput, err)
	}
	return k.priv.ECDH(pub)
}

// rsaKey does the raw private-key operation with the Chinese remainder theorem on constant-time
// modular arithmetic (filippo.io/bigmod, the standard library's own, re-exported), and checks the
// result with the public exponent before releasing it.
type rsaKey struct {
	alg      Algorithm
	priv     *rsa.PrivateKey
	n, p, q  *bigmod.Modulus
	dP, dQ   []byte
	qInv     *bigmod.Nat // mod p
	qModN    *bigmod.Nat // q as an element mod n
	e        uint
	modBytes int
}

func newRSAKey(alg Algorithm, k *rsa.PrivateKey) (*rsaKey, error) {
	if len(k.Primes) != 2 {
		return nil, fmt.Errorf("%w: multi-prime RSA", ErrInput)
	}
	p, q := k.Primes[0], k.Primes[1]
	if p.Bit(0) == 0 || q.Bit(0) == 0 || k.E != 65537 {
		return nil, fmt.Errorf("%w: RSA primes must be odd and e 65537", ErrInput)
	}
	if err := k.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInput, err)
	}
	k.Precompute()
	r := &rsaKey{alg: alg, priv: k, e: uint(k.E), modBytes: (k.N.BitLen() + 7) / 8}
	var err error
	if r.n, err = bigmod.NewModulus(k.N.Bytes()); err != nil {
		return nil, err
	}
	if r.p, err = bigmod.NewModulus(p.Bytes()); err != nil {
		return nil, err
	}
	if r.q, err = bigmod.NewModulus(q.Bytes()); err != nil {
		return nil, err
	}
	r.dP = k.Precomputed.Dp.Bytes()
	r.dQ = k.Precomputed.Dq.Bytes()
	if r.qInv, err = bigmod.NewNat().SetBytes(k.Precomputed.Qinv.Bytes(), r.p); err != nil {
		return nil, err
	}
	if r.qModN, err = bigmod.NewNat().SetBytes(q.Bytes(), r.n); err != nil {
		return nil, err
	}
	return r, nil
}

// ImportRSA builds an RSA private key of the given size from the CRT parameters a PIV IMPORT
// carries (p, q, dP, dQ, qInv, with e = 65537) and checks them against each other. As on a
// YubiKey, the primes are distinct and each half the modulus size.
func ImportRSA(bits int, p, q, dP, dQ, qInv []byte) (*rsa.PrivateKey, error) {
	P, Q := new(big.Int).SetBytes(p), new(big.Int).SetBytes(q)
	if P.BitLen() != bits/2 || Q.BitLen() != bits/2 || P.Bit(0) == 0 || Q.Bit(0) == 0 || P.Cmp(Q) == 0 {
		return nil, fmt.Errorf("%w: RSA-%d needs two distinct odd %d-bit primes", ErrInput, bits, bits/2)
	}
	one := big.NewInt(1)
	pm1, qm1 := new(big.Int).Sub(P, one), new(big.Int).Sub(Q, one)
	g := new(big.Int).GCD(nil, nil, pm1, qm1) // not zero: both are at least 2
	lcm := new(big.Int).Div(new(big.Int).Mul(pm1, qm1), g)
	e := big.NewInt(65537)
	d := new(big.Int).ModInverse(e, lcm)
	if d == nil {
		return nil, fmt.Errorf("%w: 65537 is not invertible for these primes", ErrInput)
	}
	k := &rsa.PrivateKey{
		PublicKey: rsa.PublicKey{N: new(big.Int).Mul(P, Q), E: 65537},
		D:         d,
		Primes:    []*big.Int{P, Q},
	}
	if k.N.BitLen() != bits {
		return nil, fmt.Errorf("%w: the primes make a %d-bit modulus, not %d", ErrInput, k.N.BitLen(), bits)
	}
	if err := k.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInput, err)
	}
	k.Precompute()
	if k.Precomputed.Dp.Cmp(new(big.Int).SetBytes(dP)) != 0 ||
		k.Precomputed.Dq.Cmp(new(big.Int).SetBytes(dQ)) != 0 ||
		k.Precomputed.Qinv.Cmp(new(big.Int).SetBytes(qInv)) != 0 {
		return nil, fmt.Errorf("%w: RSA CRT parameters do not match the primes", ErrInput)
	}
	return k, nil
}

func (k *rsaKey) Algorithm() Algorithm        { return k.alg }
func (k *rsaKey) Public() crypto.PublicKey    { return &k.priv.PublicKey }
func (k *rsaKey) Sign([]byte) ([]byte, error) { return nil, ErrUnsupported }
func (k *rsaKey) ECDH([]byte) ([]byte, error) { return nil, ErrUnsupported }
func (k *rsaKey) RSA(block []byte) ([]byte, error) {
	if len(block) != k.modBytes {
		return nil, fmt.Errorf("%w: %d-byte block for a %d-byte modulus", ErrInput, len(block), k.modBytes)
	}
	c, err := bigmod.NewNat().SetBytes(block, k.n)
	if err != nil {
		return nil, fmt.Errorf("%w: block is not smaller than the modulus", ErrInput)
	}
	m1 := bigmod.NewNat().Exp(bigmod.NewNat().Mod(c, k.p), k.dP, k.p)
	m2 := bigmod.NewNat().Exp(bigmod.NewNat().Mod(c, k.q), k.dQ, k.q)
	// h = qInv·(m1 − m2) mod p;  m = m2 + h·q, which is < n without reduction.
	h := m1.Sub(bigmod.NewNat().Mod(m2, k.p), k.p).Mul(k.qInv, k.p)
	m := bigmod.NewNat().Mod(h, k.n).Mul(k.qModN, k.n)
	m.Add(bigmod.NewNat().Mod(m2, k.n), k.n)
	// A fault in the computation must not leak a factor of n.
	if bigmod.NewNat().ExpShortVarTime(m, k.e, k.n).Equal(c) != 1 {
		return nil, errors.New("keystore: RSA private operation failed its check")
	}
	return m.Bytes(k.n), nil
}
