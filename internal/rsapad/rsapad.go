// Package rsapad encodes and decodes the RSA message formats of RFC 8017 for code that applies
// the raw RSA private-key operation separately, as a PIV card does.
package rsapad

import (
	"bytes"
	"crypto"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
)

// digestInfo holds the DER prefix of DigestInfo for each hash (RFC 8017 §9.2, note 1).
var digestInfo = map[crypto.Hash][]byte{
	crypto.SHA1:   {0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14},
	crypto.SHA224: {0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04, 0x05, 0x00, 0x04, 0x1c},
	crypto.SHA256: {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20},
	crypto.SHA384: {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30},
	crypto.SHA512: {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40},
}

// ErrInput is returned for input that cannot be encoded (a digest of the wrong length, a
// modulus too small) or that does not decode (bad padding).
var ErrInput = errors.New("rsapad: invalid input")

// PKCS1v15Sign returns EMSA-PKCS1-v1_5 (RFC 8017 §9.2) of a digest, k bytes long:
// 00 01 FF..FF 00 DigestInfo. A zero hash signs the digest bytes as they are, without
// DigestInfo (what CKM_RSA_PKCS does with a DigestInfo the caller built).
func PKCS1v15Sign(h crypto.Hash, digest []byte, k int) ([]byte, error) {
	var prefix []byte
	if h != 0 {
		var ok bool
		if prefix, ok = digestInfo[h]; !ok || len(digest) != h.Size() {
			return nil, fmt.Errorf("%w: %d-byte %v digest", ErrInput, len(digest), h)
		}
	}
	t := len(prefix) + len(digest)
	if k < t+11 {
		return nil, fmt.Errorf("%w: %d-byte modulus too short for %d bytes of DigestInfo", ErrInput, k, t)
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

// PSSSign returns EMSA-PSS-ENCODE (RFC 8017 §9.1.1) of a digest for a modulus of modBits bits,
// with MGF1 over the same hash and a salt of saltLen bytes from rand, left-padded with zeros to
// the modulus length in bytes, ready for the raw private-key operation.
func PSSSign(rand io.Reader, h crypto.Hash, digest []byte, saltLen, modBits int) ([]byte, error) {
	hLen := h.Size()
	if !h.Available() || len(digest) != hLen || saltLen < 0 {
		return nil, fmt.Errorf("%w: %d-byte %v digest, salt %d", ErrInput, len(digest), h, saltLen)
	}
	emBits := modBits - 1
	emLen := (emBits + 7) / 8
	if emLen < hLen+saltLen+2 {
		return nil, fmt.Errorf("%w: %d-bit modulus too short for PSS with %v and a %d-byte salt", ErrInput, modBits, h, saltLen)
	}
	salt := make([]byte, saltLen)
	if _, err := io.ReadFull(rand, salt); err != nil {
		return nil, err
	}
	// M' = 8 zero bytes || mHash || salt;  H = Hash(M')
	hh := h.New()
	hh.Write(make([]byte, 8))
	hh.Write(digest)
	hh.Write(salt)
	H := hh.Sum(nil)
	// DB = PS || 0x01 || salt;  maskedDB = DB xor MGF1(H, emLen - hLen - 1)
	db := make([]byte, emLen-hLen-1)
	db[len(db)-saltLen-1] = 0x01
	copy(db[len(db)-saltLen:], salt)
	mgf1XOR(db, h, H)
	db[0] &= 0xFF >> (8*emLen - emBits)
	em := make([]byte, 0, (modBits+7)/8)
	if (modBits+7)/8 > emLen {
		em = append(em, 0) // modBits-1 is a multiple of 8: one more leading zero byte
	}
	em = append(em, db...)
	em = append(em, H...)
	return append(em, 0xBC), nil
}

// PSSVerify checks an EMSA-PSS encoding (RFC 8017 §9.1.2) of digest with a salt of exactly
// saltLen bytes. em is the signature raised to the public exponent, as (modBits+7)/8 bytes.
// crypto/rsa cannot check for a salt of exactly zero bytes (0 means "any length" there), which
// PKCS #11's CK_RSA_PKCS_PSS_PARAMS can ask for.
func PSSVerify(h crypto.Hash, digest, em []byte, saltLen, modBits int) error {
	hLen := h.Size()
	emBits := modBits - 1
	emLen := (emBits + 7) / 8
	if !h.Available() || len(digest) != hLen || saltLen < 0 || len(em) != (modBits+7)/8 {
		return ErrInput
	}
	if len(em) > emLen {
		if em[0] != 0 {
			return ErrInput
		}
		em = em[1:]
	}
	if emLen < hLen+saltLen+2 || em[emLen-1] != 0xBC {
		return ErrInput
	}
	db := append([]byte(nil), em[:emLen-hLen-1]...)
	H := em[emLen-hLen-1 : emLen-1]
	if db[0]&^(0xFF>>(8*emLen-emBits)) != 0 {
		return ErrInput
	}
	mgf1XOR(db, h, H)
	db[0] &= 0xFF >> (8*emLen - emBits)
	ps := len(db) - saltLen - 1
	for _, b := range db[:ps] {
		if b != 0 {
			return ErrInput
		}
	}
	if db[ps] != 0x01 {
		return ErrInput
	}
	hh := h.New()
	hh.Write(make([]byte, 8))
	hh.Write(digest)
	hh.Write(db[ps+1:])
	if !bytes.Equal(hh.Sum(nil), H) {
		return ErrInput
	}
	return nil
}

// mgf1XOR xors out with MGF1(seed) (RFC 8017 §B.2.1).
func mgf1XOR(out []byte, h crypto.Hash, seed []byte) {
	var counter [4]byte
	for done := 0; done < len(out); {
		hh := h.New()
		hh.Write(seed)
		hh.Write(counter[:])
		for _, b := range hh.Sum(nil) {
			if done == len(out) {
				break
			}
			out[done] ^= b
			done++
		}
		for i := 3; i >= 0; i-- {
			counter[i]++
			if counter[i] != 0 {
				break
			}
		}
	}
}

// PKCS1v15Decrypt removes EME-PKCS1-v1_5 padding (RFC 8017 §7.2.2) from a decrypted block
// 00 02 PS 00 M, PS at least 8 non-zero bytes. The checks run in constant time; the error says
// only that the padding is wrong.
func PKCS1v15Decrypt(em []byte) ([]byte, error) {
	if len(em) < 11 {
		return nil, ErrInput
	}
	good := subtle.ConstantTimeByteEq(em[0], 0) & subtle.ConstantTimeByteEq(em[1], 2)
	// Find the first zero after the padding string, looking at every byte.
	lookingForZero := 1
	index := 0
	for i := 2; i < len(em); i++ {
		isZero := subtle.ConstantTimeByteEq(em[i], 0)
		index = subtle.ConstantTimeSelect(lookingForZero&isZero, i, index)
		lookingForZero = subtle.ConstantTimeSelect(isZero, 0, lookingForZero)
	}
	good &= subtle.ConstantTimeLessOrEq(2+8, index)
	good &= 1 - lookingForZero
	if good != 1 {
		return nil, ErrInput
	}
	return append([]byte(nil), em[index+1:]...), nil
}

// OAEPDecrypt removes EME-OAEP padding (RFC 8017 §7.1.2) with MGF1 over h and the given label
// from a decrypted block as long as the modulus. The checks run in constant time.
func OAEPDecrypt(h crypto.Hash, label, em []byte) ([]byte, error) {
	hLen := h.Size()
	if !h.Available() || len(em) < 2*hLen+2 {
		return nil, ErrInput
	}
	lh := h.New()
	lh.Write(label)
	lHash := lh.Sum(nil)

	y := em[0]
	seed := append([]byte(nil), em[1:1+hLen]...)
	db := append([]byte(nil), em[1+hLen:]...)
	mgf1XOR(seed, h, db)
	mgf1XOR(db, h, seed)

	good := subtle.ConstantTimeByteEq(y, 0)
	good &= subtle.ConstantTimeCompare(db[:hLen], lHash)
	// db = lHash' || PS (zeros) || 0x01 || M
	lookingForOne := 1
	index := 0
	invalid := 0
	for i := hLen; i < len(db); i++ {
		isZero := subtle.ConstantTimeByteEq(db[i], 0)
		isOne := subtle.ConstantTimeByteEq(db[i], 1)
		index = subtle.ConstantTimeSelect(lookingForOne&isOne, i, index)
		lookingForOne = subtle.ConstantTimeSelect(isOne, 0, lookingForOne)
		invalid = subtle.ConstantTimeSelect(lookingForOne&^isZero, 1, invalid)
	}
	if good&^invalid&^lookingForOne != 1 {
		return nil, ErrInput
	}
	return db[index+1:], nil
}
