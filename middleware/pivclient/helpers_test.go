package pivclient

import (
	"crypto"
	"crypto/ecdh"
	"crypto/rsa"
	"crypto/x509"
	"math/big"
)

func x509ParsePKCS8(b []byte) (any, error) { return x509.ParsePKCS8PrivateKey(b) }

// rsaVerifyBlock returns the block whose raw private operation is sig: sig^e mod n.
func rsaVerifyBlock(k *rsa.PrivateKey, sig []byte) ([]byte, error) {
	m := new(big.Int).Exp(new(big.Int).SetBytes(sig), big.NewInt(int64(k.E)), k.N)
	return m.FillBytes(make([]byte, k.Size())), nil
}

func publicOf(k crypto.PrivateKey) crypto.PublicKey {
	if x, ok := k.(*ecdh.PrivateKey); ok {
		return x.PublicKey()
	}
	return k.(crypto.Signer).Public()
}
