package ike

import (
	"crypto/des"
	"crypto/sha1"
	"encoding/hex"
	"strings"
	"unicode/utf16"

	"golang.org/x/crypto/md4"
)

// MS-CHAPv2 (RFC 2759) and its key derivation (RFC 3079 §3), as EAP-MSCHAPv2 uses them.

// Magic constants of RFC 2759 §8.7 and RFC 3079 §3.4.
var (
	mschapMagic1  = []byte("Magic server to client signing constant")
	mschapMagic2  = []byte("Pad to make it do more than one iteration")
	mppeMasterKey = []byte("This is the MPPE Master Key")
	mppeMagic2    = []byte("On the client side, this is the send key; on the server side, it is the receive key.")
	mppeMagic3    = []byte("On the client side, this is the receive key; on the server side, it is the send key.")
)

// ntPasswordHash is MD4 of the password in UTF-16LE. RFC 2759 §8.3.
func ntPasswordHash(password []byte) []byte {
	u := utf16.Encode([]rune(string(password)))
	b := make([]byte, 0, 2*len(u))
	for _, c := range u {
		b = append(b, byte(c), byte(c>>8))
	}
	h := md4.New()
	h.Write(b)
	return h.Sum(nil)
}

// mschapUser strips a Windows domain ("DOMAIN\user"). RFC 2759 §4.
func mschapUser(name string) string {
	if i := strings.LastIndexByte(name, '\\'); i >= 0 {
		return name[i+1:]
	}
	return name
}

// challengeHash is SHA-1(PeerChallenge | AuthenticatorChallenge | UserName)[:8]. RFC 2759 §8.2.
func challengeHash(peerChallenge, authChallenge []byte, user string) []byte {
	h := sha1.New()
	h.Write(peerChallenge)
	h.Write(authChallenge)
	h.Write([]byte(mschapUser(user)))
	return h.Sum(nil)[:8]
}

// desKey spreads 7 bytes over the 8 of a DES key (the parity bits are left to DES to ignore).
func desKey(k []byte) []byte {
	return []byte{
		k[0], k[0]<<7 | k[1]>>1, k[1]<<6 | k[2]>>2, k[2]<<5 | k[3]>>3,
		k[3]<<4 | k[4]>>4, k[4]<<3 | k[5]>>5, k[5]<<2 | k[6]>>6, k[6] << 1,
	}
}

// challengeResponse DES-encrypts the challenge under the three 7-byte thirds of the zero-padded
// password hash. RFC 2759 §8.5.
func challengeResponse(challenge, pwHash []byte) []byte {
	z := make([]byte, 21)
	copy(z, pwHash)
	out := make([]byte, 24)
	for i := 0; i < 3; i++ {
		c, _ := des.NewCipher(desKey(z[7*i : 7*i+7]))
		c.Encrypt(out[8*i:], challenge)
	}
	return out
}

// ntResponse is GenerateNTResponse. RFC 2759 §8.1.
func ntResponse(authChallenge, peerChallenge []byte, user string, password []byte) []byte {
	return challengeResponse(challengeHash(peerChallenge, authChallenge, user), ntPasswordHash(password))
}

// authenticatorResponse is GenerateAuthenticatorResponse, "S=" and 40 hex digits.
// RFC 2759 §8.7.
func authenticatorResponse(password, ntResp, peerChallenge, authChallenge []byte, user string) string {
	hh := md4.New()
	hh.Write(ntPasswordHash(password))
	h := sha1.New()
	h.Write(hh.Sum(nil))
	h.Write(ntResp)
	h.Write(mschapMagic1)
	digest := h.Sum(nil)
	h = sha1.New()
	h.Write(digest)
	h.Write(challengeHash(peerChallenge, authChallenge, user))
	h.Write(mschapMagic2)
	return "S=" + strings.ToUpper(hex.EncodeToString(h.Sum(nil)))
}

// mschapMSK is the EAP-MSCHAPv2 Master Session Key: the MPPE start keys of RFC 3079 §3.4,
// MasterReceiveKey | MasterSendKey as the authenticator sees them (the peer's send key, then
// its receive key), padded with 32 zero bytes to the 64 bytes of an MSK.
func mschapMSK(password, ntResp []byte) []byte {
	hh := md4.New()
	hh.Write(ntPasswordHash(password))
	h := sha1.New()
	h.Write(hh.Sum(nil))
	h.Write(ntResp)
	h.Write(mppeMasterKey)
	master := h.Sum(nil)[:16]
	startKey := func(magic []byte) []byte {
		h := sha1.New()
		h.Write(master)
		h.Write(make([]byte, 40))
		h.Write(magic)
		for i := 0; i < 40; i++ {
			h.Write([]byte{0xF2})
		}
		return h.Sum(nil)[:16]
	}
	msk := make([]byte, 0, 64)
	msk = append(msk, startKey(mppeMagic2)...)
	msk = append(msk, startKey(mppeMagic3)...)
	return append(msk, make([]byte, 32)...)
}
