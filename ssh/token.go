package ssh

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"fmt"

	gossh "golang.org/x/crypto/ssh"

	"tokenlab/middleware"
)

// TokenSigner returns the SSH signer of the key in slot of a token: each signature goes
// through the middleware, so the PIN is asked for as the token's policy says (per signature
// for a PIN-always key). With x509 the slot's certificate makes it an RFC 6187 key;
// otherwise it is a plain key, RSA limited to rsa-sha2-256 and rsa-sha2-512.
func TokenSigner(ctx context.Context, tok *middleware.Token, slot byte, x509 bool) (gossh.Signer, error) {
	keys, err := tok.Keys(ctx)
	if err != nil {
		return nil, err
	}
	var key *middleware.Key
	for i := range keys {
		if keys[i].Slot == slot {
			key = &keys[i]
		}
	}
	if key == nil {
		return nil, fmt.Errorf("%w %02x", middleware.ErrNoKey, slot)
	}
	cs, err := tok.Signer(ctx, slot)
	if err != nil {
		return nil, err
	}
	if x509 {
		if key.Certificate == nil {
			return nil, fmt.Errorf("ssh: slot %02x holds no certificate", slot)
		}
		return NewX509Signer(cs, chainOf(key.Certificate))
	}
	return PlainSigner(cs)
}

func chainOf(c *x509.Certificate) []*x509.Certificate { return []*x509.Certificate{c} }

// PlainSigner wraps a crypto.Signer as a plain SSH key (ECDSA, Ed25519, RSA); RSA signs with
// rsa-sha2-512 and rsa-sha2-256 only, never SHA-1 ssh-rsa.
func PlainSigner(cs crypto.Signer) (gossh.Signer, error) {
	s, err := gossh.NewSignerFromSigner(cs)
	if err != nil {
		return nil, err
	}
	if _, ok := cs.Public().(*rsa.PublicKey); ok {
		return gossh.NewSignerWithAlgorithms(s.(gossh.AlgorithmSigner), []string{gossh.KeyAlgoRSASHA512, gossh.KeyAlgoRSASHA256})
	}
	return s, nil
}
