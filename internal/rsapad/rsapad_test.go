package rsapad

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"os"
	"testing"
)

func testKey(t testing.TB) *rsa.PrivateKey {
	b, err := os.ReadFile("../../emulator/piv/testdata/rsa2048.pem")
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(*rsa.PrivateKey)
}

// raw applies the RSA private-key operation, as a card does.
func raw(k *rsa.PrivateKey, em []byte) []byte {
	m := new(big.Int).Exp(new(big.Int).SetBytes(em), k.D, k.N)
	return m.FillBytes(make([]byte, k.Size()))
}

func TestPKCS1v15Sign(t *testing.T) {
	k := testKey(t)
	d := sha256.Sum256([]byte("tokenlab"))
	em, err := PKCS1v15Sign(crypto.SHA256, d[:], k.Size())
	if err != nil {
		t.Fatal(err)
	}
	want, _ := rsa.SignPKCS1v15(nil, k, crypto.SHA256, d[:])
	if !bytes.Equal(raw(k, em), want) {
		t.Error("raw(EMSA-PKCS1-v1_5) differs from crypto/rsa's signature")
	}
	if _, err := PKCS1v15Sign(crypto.SHA256, d[:31], k.Size()); err == nil {
		t.Error("short digest encoded")
	}
	if _, err := PKCS1v15Sign(crypto.SHA512, make([]byte, 64), 64); err == nil {
		t.Error("encoded into a modulus too small")
	}
}

func TestPSSSign(t *testing.T) {
	k := testKey(t)
	d := sha256.Sum256([]byte("tokenlab"))
	for _, salt := range []int{0, 20, 32} {
		em, err := PSSSign(rand.Reader, crypto.SHA256, d[:], salt, k.N.BitLen())
		if err != nil {
			t.Fatal(err)
		}
		sig := raw(k, em)
		if err := rsa.VerifyPSS(&k.PublicKey, crypto.SHA256, d[:], sig, &rsa.PSSOptions{SaltLength: salt}); err != nil {
			t.Errorf("salt %d: crypto/rsa rejects the signature: %v", salt, err)
		}
	}
}

func TestDecrypt(t *testing.T) {
	k := testKey(t)
	msg := []byte("secret message")
	ct, _ := rsa.EncryptPKCS1v15(rand.Reader, &k.PublicKey, msg)
	got, err := PKCS1v15Decrypt(raw(k, ct))
	if err != nil || !bytes.Equal(got, msg) {
		t.Errorf("PKCS1v15Decrypt = %q, %v", got, err)
	}
	ct, _ = rsa.EncryptOAEP(sha256.New(), rand.Reader, &k.PublicKey, msg, []byte("label"))
	got, err = OAEPDecrypt(crypto.SHA256, []byte("label"), raw(k, ct))
	if err != nil || !bytes.Equal(got, msg) {
		t.Errorf("OAEPDecrypt = %q, %v", got, err)
	}
	if _, err := OAEPDecrypt(crypto.SHA256, []byte("other"), raw(k, ct)); err == nil {
		t.Error("OAEP accepted the wrong label")
	}
	bad := raw(k, ct)
	bad[0] = 1
	if _, err := PKCS1v15Decrypt(bad); err == nil {
		t.Error("bad PKCS#1 padding accepted")
	}
}

func FuzzDecrypt(f *testing.F) {
	f.Add(append([]byte{0, 2}, append(bytes.Repeat([]byte{7}, 20), 0, 'm')...))
	f.Add(make([]byte, 256))
	f.Fuzz(func(t *testing.T, em []byte) {
		if m, err := PKCS1v15Decrypt(em); err == nil && len(m) > len(em)-11 {
			t.Fatalf("message of %d bytes from a %d-byte block", len(m), len(em))
		}
		OAEPDecrypt(crypto.SHA256, nil, em)
	})
}

// PSSVerify takes exactly the salt length it is given, zero included, where crypto/rsa's 0
// means any length.
func TestPSSVerify(t *testing.T) {
	k := testKey(t)
	digest := sha256.Sum256([]byte("tokenlab"))
	bits := k.N.BitLen()
	for _, salt := range []int{0, 20, 32} {
		em, err := PSSSign(rand.Reader, crypto.SHA256, digest[:], salt, bits)
		if err != nil {
			t.Fatal(err)
		}
		sig := raw(k, em)
		pub := new(big.Int).Exp(new(big.Int).SetBytes(sig), big.NewInt(int64(k.E)), k.N).FillBytes(make([]byte, k.Size()))
		for _, want := range []int{0, 20, 32} {
			err := PSSVerify(crypto.SHA256, digest[:], pub, want, bits)
			if (err == nil) != (want == salt) {
				t.Errorf("salt %d verified with salt length %d: %v", salt, want, err)
			}
		}
		other := sha256.Sum256([]byte("other"))
		if PSSVerify(crypto.SHA256, other[:], pub, salt, bits) == nil {
			t.Errorf("salt %d: another digest verified", salt)
		}
	}
}

func FuzzPSSVerify(f *testing.F) {
	f.Add(make([]byte, 256), 32, 2048)
	f.Fuzz(func(t *testing.T, em []byte, salt, bits int) {
		if bits < 0 || bits > 8192 {
			return
		}
		digest := make([]byte, 32)
		PSSVerify(crypto.SHA256, digest, em, salt, bits) // must not panic
	})
}
