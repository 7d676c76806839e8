package keystore

import (
	"crypto"
	"crypto/rsa"
	"fmt"
	"io"

	"tokenlab/internal/rsapad"
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
		em, err := rsapad.PKCS1v15Sign(opts.HashFunc(), digest, (alg.RSABits()+7)/8)
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
