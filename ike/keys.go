package ike

import (
	"crypto/hkdf"
	"encoding/binary"
	"fmt"
	"hash"
)

// ikeKeys are the keys of an IKE SA: {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr}.
// RFC 7296 §2.14.
type ikeKeys struct {
	d, ai, ar, ei, er, pi, pr []byte
}

// skeyseed is SKEYSEED = prf(Ni | Nr, g^ir), which for an HMAC PRF is HKDF-Extract with salt
// Ni | Nr and input g^ir (RFC 5869 §2.2 is HMAC(salt, IKM)). RFC 7296 §2.14.
func skeyseed(p prf, gir, ni, nr []byte) ([]byte, error) {
	return hkdf.Extract(p.hash, gir, append(append([]byte(nil), ni...), nr...))
}

// rekeySKEYSEED is SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr) of an IKE SA rekey.
// RFC 7296 §2.18.
func rekeySKEYSEED(p prf, oldD, gir, ni, nr []byte) ([]byte, error) {
	ikm := append(append(append([]byte(nil), gir...), ni...), nr...)
	return hkdf.Extract(p.hash, ikm, oldD)
}

// prfPlus is prf+(K, S) = T1 | T2 | ..., T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n):
// exactly HKDF-Expand with info S (RFC 5869 §2.3), up to 255 blocks. RFC 7296 §2.13.
func prfPlus(p prf, key, seed []byte, n int) ([]byte, error) {
	out, err := hkdf.Expand(func() hash.Hash { return p.hash() }, key, string(seed), n)
	if err != nil {
		return nil, fmt.Errorf("ike: prf+ of %d bytes: %w", n, err)
	}
	return out, nil
}

// deriveIKEKeys expands SKEYSEED into the IKE SA's keys, sized for suite s.
func deriveIKEKeys(s Suite, p prf, seed, ni, nr []byte, spiI, spiR uint64) (*ikeKeys, error) {
	integLen := 0
	if s.Integ != IntegNone {
		integLen = integ{s.Integ, hashFor(TransformINTEG, s.Integ)}.keyLen()
	}
	encLen, prfLen := s.Cipher.keyLen(), p.size()
	S := append(append(append([]byte(nil), ni...), nr...), make([]byte, 16)...)
	binary.BigEndian.PutUint64(S[len(S)-16:], spiI)
	binary.BigEndian.PutUint64(S[len(S)-8:], spiR)
	km, err := prfPlus(p, seed, S, prfLen*3+integLen*2+encLen*2)
	if err != nil {
		return nil, err
	}
	take := func(n int) []byte {
		b := km[:n:n]
		km = km[n:]
		return b
	}
	k := &ikeKeys{}
	k.d = take(prfLen)
	k.ai, k.ar = take(integLen), take(integLen)
	k.ei, k.er = take(encLen), take(encLen)
	k.pi, k.pr = take(prfLen), take(prfLen)
	return k, nil
}

// ChildKeys is the keying material of a Child SA (KEYMAT, RFC 7296 §2.17), split as ESP takes
// it: first the encryption and integrity keys for initiator-to-responder traffic, then those
// for the other direction. AEAD keys include their 4-byte salt.
type ChildKeys struct {
	EncrI, IntegI []byte // initiator to responder
	EncrR, IntegR []byte // responder to initiator
}

// deriveChildKeys is KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr).
func deriveChildKeys(p prf, skd []byte, s Suite, gir, ni, nr []byte) (ChildKeys, error) {
	integLen := 0
	if s.Integ != IntegNone {
		integLen = integ{s.Integ, hashFor(TransformINTEG, s.Integ)}.keyLen()
	}
	encLen := s.Cipher.keyLen()
	seed := append(append(append([]byte(nil), gir...), ni...), nr...)
	km, err := prfPlus(p, skd, seed, 2*(encLen+integLen))
	if err != nil {
		return ChildKeys{}, err
	}
	return ChildKeys{
		EncrI: km[:encLen], IntegI: km[encLen : encLen+integLen],
		EncrR: km[encLen+integLen : 2*encLen+integLen], IntegR: km[2*encLen+integLen:],
	}, nil
}
