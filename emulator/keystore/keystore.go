// Package keystore holds the private keys of a virtual card behind an interface of operations, so
// the applet never handles private key bytes and a TPM-backed store can replace the software one.
package keystore

import (
	"crypto"
	"errors"
	"fmt"
)

// Algorithm is an asymmetric key type a card slot can hold.
type Algorithm int

// Key types of PIV (SP 800-78-4 Table 6-2) and the YubiKey 5.7 extensions.
const (
	RSA1024 Algorithm = iota + 1
	RSA2048
	RSA3072
	RSA4096
	ECCP256
	ECCP384
	Ed25519
	X25519
)

var algNames = [...]string{"", "rsa1024", "rsa2048", "rsa3072", "rsa4096", "eccp256", "eccp384", "ed25519", "x25519"}

func (a Algorithm) String() string {
	if a > 0 && int(a) < len(algNames) {
		return algNames[a]
	}
	return fmt.Sprintf("Algorithm(%d)", int(a))
}

// ParseAlgorithm is the inverse of Algorithm.String.
func ParseAlgorithm(s string) (Algorithm, error) {
	for i, n := range algNames {
		if i > 0 && n == s {
			return Algorithm(i), nil
		}
	}
	return 0, fmt.Errorf("%q is not a key algorithm", s)
}

// IsRSA reports whether a is an RSA key type.
func (a Algorithm) IsRSA() bool { return a >= RSA1024 && a <= RSA4096 }

// IsEC reports whether a is a NIST curve key type.
func (a Algorithm) IsEC() bool { return a == ECCP256 || a == ECCP384 }

// RSABits returns the modulus size of an RSA key type.
func (a Algorithm) RSABits() int {
	switch a {
	case RSA1024:
		return 1024
	case RSA2048:
		return 2048
	case RSA3072:
		return 3072
	case RSA4096:
		return 4096
	}
	return 0
}

// ErrUnsupported is returned for an operation the key type cannot do (ECDH with an RSA key).
var ErrUnsupported = errors.New("keystore: operation not supported by this key type")

// ErrInput is returned for input the operation rejects: a digest longer than the curve order,
// an RSA block not smaller than the modulus, a point not on the curve.
var ErrInput = errors.New("keystore: invalid input")

// Key is a private key held by a Store. Its methods are the card's private-key operations.
type Key interface {
	Algorithm() Algorithm
	Public() crypto.PublicKey
	// Sign signs a digest with ECDSA (returning an ASN.1 ECDSA-Sig-Value; the digest is at most
	// the order's length) or a message with Ed25519.
	Sign(digest []byte) ([]byte, error)
	// RSA performs the raw RSA private-key operation on a block exactly as long as the modulus;
	// padding is the host's business, as on a PIV card.
	RSA(block []byte) ([]byte, error)
	// ECDH returns the shared secret with a peer's public key: an uncompressed point for P-256
	// and P-384, 32 bytes for X25519.
	ECDH(peer []byte) ([]byte, error)
}

// Store creates, imports and reloads keys.
type Store interface {
	// Name identifies the store in persisted state ("software", "tpm").
	Name() string
	Generate(alg Algorithm) (Key, error)
	// Import takes a private key of the crypto package types (*ecdsa.PrivateKey,
	// ed25519.PrivateKey, *ecdh.PrivateKey for X25519, *rsa.PrivateKey).
	Import(alg Algorithm, priv crypto.PrivateKey) (Key, error)
	// Marshal returns the store's persistent encoding of a key it made.
	Marshal(k Key) ([]byte, error)
	// Load is the inverse of Marshal.
	Load(alg Algorithm, blob []byte) (Key, error)
}
