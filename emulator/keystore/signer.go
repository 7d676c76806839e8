package keystore

import (
	"crypto"
	"crypto/rsa"
	"fmt"
	"io"
)

// Signer adapts a Key to crypto.Signer for signatures the card makes itself (attestation
// certificates): ECDSA over a digest, Ed25519 over a message, RSA PKCS #1 v1.5 by padding the
// digest and applying the raw private-key operation.
func Signer(k Key) crypto.Signer { return keySigner{k} }

type keySigner struct{ k Key }

func (s keySigner) Public() crypto.PublicKey { return s.k.Public() }

func (s keySigner) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	alg := s.k.Algorithm()
	switch {
	case alg.IsRSA():
		if _, pss := opts.(*rsa.PSSOptions); pss {
			return nil, fmt.Errorf("keystore: RSA-PSS is not supported for card-internal signatures")
		}
		em, err := pkcs1v15(opts.HashFunc(), digest, (alg.RSABits()+7)/8)
		if err != nil {
			return nil, err
		}
		return s.k.RSA(em)
	case alg == Ed25519:
		if opts.HashFunc() != 0 {
			return nil, fmt.Errorf("keystore: Ed25519 signs messages, not %v digests", opts.HashFunc())
		}
	}
	return s.k.Sign(digest)
}

// digestInfo holds the DER prefix of DigestInfo for each hash (RFC 8017 §9.2, note 1).
var digestInfo = map[crypto.Hash][]byte{
	crypto.SHA256: {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20},
	crypto.SHA384: {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30},
	crypto.SHA512: {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40},
}

// pkcs1v15 returns EMSA-PKCS1-v1_5(digest) = 00 01 FF..FF 00 DigestInfo, k bytes long.
func pkcs1v15(h crypto.Hash, digest []byte, k int) ([]byte, error) {
	prefix, ok := digestInfo[h]
	if !ok || len(digest) != h.Size() {
		return nil, fmt.Errorf("keystore: cannot pad a %d-byte %v digest for PKCS #1 v1.5", len(digest), h)
	}
	t := len(prefix) + len(digest)
	if k < t+11 {
		return nil, fmt.Errorf("keystore: modulus too short for a %v DigestInfo", h)
	}
	em := make([]byte, k)
	em[1] = 0x01
	for i := 2; i < k-t-1; i++ {
		em[i] = 0xFF
	}
	copy(em[k-t:], prefix)
	copy(em[k-len(digest):], digest)
	return em, nil
}
