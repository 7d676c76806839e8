package piv

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"fmt"
)

// ManagementKeyAlgorithm is the block cipher of the card management key (9B).
type ManagementKeyAlgorithm byte

// Management key algorithms; AES needs firmware 5.4.
const (
	TDES   ManagementKeyAlgorithm = algTDES
	AES128 ManagementKeyAlgorithm = algAES128
	AES192 ManagementKeyAlgorithm = algAES192
	AES256 ManagementKeyAlgorithm = algAES256
)

// DefaultManagementKey is the factory management key of every YubiKey: 0102030405060708 three times.
var DefaultManagementKey = []byte{
	1, 2, 3, 4, 5, 6, 7, 8,
	1, 2, 3, 4, 5, 6, 7, 8,
	1, 2, 3, 4, 5, 6, 7, 8,
}

func (a ManagementKeyAlgorithm) String() string {
	switch a {
	case TDES:
		return "3des"
	case AES128:
		return "aes128"
	case AES192:
		return "aes192"
	case AES256:
		return "aes256"
	}
	return fmt.Sprintf("ManagementKeyAlgorithm(0x%02x)", byte(a))
}

// ParseManagementKeyAlgorithm parses "3des", "aes128", "aes192" or "aes256".
func ParseManagementKeyAlgorithm(s string) (ManagementKeyAlgorithm, error) {
	for _, a := range []ManagementKeyAlgorithm{TDES, AES128, AES192, AES256} {
		if a.String() == s {
			return a, nil
		}
	}
	return 0, fmt.Errorf("%q is not a management key algorithm (3des, aes128, aes192, aes256)", s)
}

// KeyLen returns the key length in bytes, 0 for an unknown algorithm.
func (a ManagementKeyAlgorithm) KeyLen() int {
	switch a {
	case TDES, AES192:
		return 24
	case AES128:
		return 16
	case AES256:
		return 32
	}
	return 0
}

func (a ManagementKeyAlgorithm) isAES() bool { return a == AES128 || a == AES192 || a == AES256 }

// newBlock returns the block cipher for a management key of algorithm a.
func (a ManagementKeyAlgorithm) newBlock(key []byte) (cipher.Block, error) {
	if len(key) != a.KeyLen() {
		return nil, fmt.Errorf("a %v key is %d bytes, not %d", a, a.KeyLen(), len(key))
	}
	if a == TDES {
		return des.NewTripleDESCipher(key)
	}
	return aes.NewCipher(key)
}
