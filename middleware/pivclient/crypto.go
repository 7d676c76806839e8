package pivclient

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/rand"
	"crypto/subtle"
	"fmt"
)

func newBlock(alg byte, key []byte) (cipher.Block, error) {
	switch alg {
	case AlgTDES:
		return des.NewTripleDESCipher(key)
	case AlgAES128, AlgAES192, AlgAES256:
		want := map[byte]int{AlgAES128: 16, AlgAES192: 24, AlgAES256: 32}[alg]
		if len(key) != want {
			return nil, fmt.Errorf("management key: %d bytes for an AES key of %d", len(key), want)
		}
		return aes.NewCipher(key)
	}
	return nil, fmt.Errorf("management key: unknown algorithm 0x%02X", alg)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func equal(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }
