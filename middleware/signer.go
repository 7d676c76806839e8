package middleware

import (
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"io"

	"tokenlab/internal/rsapad"
	"tokenlab/middleware/pivclient"
)

// Signer returns a crypto.Signer for the key in slot. Each signature goes through the token,
// so the PIN is asked for (or not) as the policy says; ctx bounds every signature.
//
// ECDSA signs a digest and returns an ASN.1 signature; Ed25519 signs a message
// (opts.HashFunc() == 0); RSA pads on the host (PKCS #1 v1.5, or PSS with *rsa.PSSOptions) and
// the card applies the raw private-key operation.
func (t *Token) Signer(ctx context.Context, slot byte) (crypto.Signer, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k, err := t.key(ctx, slot)
	if err != nil {
		return nil, err
	}
	if k.Algorithm == pivclient.AlgX25519 {
		return nil, fmt.Errorf("middleware: the X25519 key in %02x cannot sign", slot)
	}
	return &signer{t: t, ctx: ctx, k: k}, nil
}

type signer struct {
	t   *Token
	ctx context.Context
	k   Key
}

func (s *signer) Public() crypto.PublicKey { return s.k.Public }

func (s *signer) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if r == nil {
		r = rand.Reader
	}
	data := digest
	switch pub := s.k.Public.(type) {
	case *rsa.PublicKey:
		var err error
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			salt := pss.SaltLength
			switch salt {
			case rsa.PSSSaltLengthAuto:
				salt = (pub.N.BitLen()-1+7)/8 - 2 - pss.Hash.Size()
			case rsa.PSSSaltLengthEqualsHash:
				salt = pss.Hash.Size()
			}
			data, err = rsapad.PSSSign(r, pss.Hash, digest, salt, pub.N.BitLen())
		} else {
			data, err = rsapad.PKCS1v15Sign(opts.HashFunc(), digest, pub.Size())
		}
		if err != nil {
			return nil, err
		}
	case *ecdsa.PublicKey:
		// The card takes at most the order's length, as FIPS 186 truncation does.
		if n := (pub.Curve.Params().N.BitLen() + 7) / 8; len(data) > n {
			data = data[:n]
		}
	case ed25519.PublicKey:
		if opts.HashFunc() != 0 {
			return nil, fmt.Errorf("middleware: Ed25519 signs a message, not a %v digest", opts.HashFunc())
		}
	}
	return s.t.Sign(s.ctx, s.k.Slot, data)
}

// Decrypter returns a crypto.Decrypter for the RSA key in slot; opts nil or
// *rsa.PKCS1v15DecryptOptions removes PKCS #1 v1.5 padding, *rsa.OAEPOptions OAEP padding.
func (t *Token) Decrypter(ctx context.Context, slot byte) (crypto.Decrypter, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k, err := t.key(ctx, slot)
	if err != nil {
		return nil, err
	}
	if !isRSA(k.Algorithm) {
		return nil, fmt.Errorf("middleware: the key in %02x is not an RSA key", slot)
	}
	return &decrypter{t: t, ctx: ctx, k: k}, nil
}

type decrypter struct {
	t   *Token
	ctx context.Context
	k   Key
}

func (d *decrypter) Public() crypto.PublicKey { return d.k.Public }

func (d *decrypter) Decrypt(_ io.Reader, ct []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	size := d.k.Public.(*rsa.PublicKey).Size()
	if len(ct) > size {
		return nil, fmt.Errorf("middleware: %d-byte ciphertext for a %d-byte modulus", len(ct), size)
	}
	block := make([]byte, size)
	copy(block[size-len(ct):], ct)
	em, err := d.t.Decrypt(d.ctx, d.k.Slot, block)
	if err != nil {
		return nil, err
	}
	if o, ok := opts.(*rsa.OAEPOptions); ok {
		return rsapad.OAEPDecrypt(o.Hash, o.Label, em)
	}
	return rsapad.PKCS1v15Decrypt(em)
}

// algorithmOf returns the PIV algorithm of a public key, 0 for an unsupported one.
func algorithmOf(pub crypto.PublicKey) byte {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		switch k.N.BitLen() {
		case 1024:
			return pivclient.AlgRSA1024
		case 2048:
			return pivclient.AlgRSA2048
		case 3072:
			return pivclient.AlgRSA3072
		case 4096:
			return pivclient.AlgRSA4096
		}
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return pivclient.AlgECCP256
		case elliptic.P384():
			return pivclient.AlgECCP384
		}
	case ed25519.PublicKey:
		return pivclient.AlgEd25519
	case *ecdh.PublicKey:
		if k.Curve() == ecdh.X25519() {
			return pivclient.AlgX25519
		}
	}
	return 0
}
