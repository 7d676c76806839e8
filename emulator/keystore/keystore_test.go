package keystore

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"testing"
)

var rsaAlgs = map[int]Algorithm{1024: RSA1024, 2048: RSA2048, 3072: RSA3072, 4096: RSA4096}

// testRSA loads a fixed test key; generating RSA keys would make the tests slow.
func testRSA(t *testing.T, bits int) *rsa.PrivateKey {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("../piv/testdata/rsa%d.pem", bits))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	k, err := Software{}.Load(rsaAlgs[bits], blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(*rsaKey).priv
}

func TestRSARaw(t *testing.T) {
	for _, bits := range []int{1024, 2048, 3072, 4096} {
		priv := testRSA(t, bits)
		k, err := Software{}.Import(rsaAlgs[bits], priv)
		if err != nil {
			t.Fatal(err)
		}
		digest := sha256.Sum256([]byte("raw RSA"))
		// The raw operation on a PKCS #1 v1.5 block is the PKCS #1 v1.5 signature.
		sig, err := Signer(k).Sign(nil, digest[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := rsa.SignPKCS1v15(nil, priv, crypto.SHA256, digest[:])
		if !bytes.Equal(sig, want) {
			t.Errorf("RSA-%d: raw operation differs from crypto/rsa", bits)
		}
		// And it decrypts.
		msg := []byte("secret")
		ct, _ := rsa.EncryptPKCS1v15(rand.Reader, &priv.PublicKey, msg)
		block, err := k.RSA(ct)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasSuffix(block, append([]byte{0}, msg...)) || block[0] != 0 || block[1] != 2 {
			t.Errorf("RSA-%d decryption block % X", bits, block[:4])
		}
		n := priv.N.FillBytes(make([]byte, bits/8))
		if _, err := k.RSA(n); !errors.Is(err, ErrInput) {
			t.Errorf("block equal to the modulus: %v", err)
		}
		if _, err := k.RSA(n[1:]); !errors.Is(err, ErrInput) {
			t.Errorf("short block: %v", err)
		}
	}
}

func TestImportRSA(t *testing.T) {
	priv := testRSA(t, 2048)
	priv.Precompute()
	p, q := priv.Primes[0].Bytes(), priv.Primes[1].Bytes()
	dp, dq, qi := priv.Precomputed.Dp.Bytes(), priv.Precomputed.Dq.Bytes(), priv.Precomputed.Qinv.Bytes()
	k, err := ImportRSA(2048, p, q, dp, dq, qi)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("imported"))
	sig, _ := rsa.SignPKCS1v15(nil, k, crypto.SHA256, digest[:])
	if k.N.Cmp(priv.N) != 0 || rsa.VerifyPKCS1v15(&priv.PublicKey, crypto.SHA256, digest[:], sig) != nil {
		t.Fatal("imported key is not the original")
	}
	bad := append([]byte(nil), dp...)
	bad[len(bad)-1] ^= 1
	for name, args := range map[string][5][]byte{
		"wrong dP":   {p, q, bad, dq, qi},
		"even prime": {append(p[:len(p)-1:len(p)-1], p[len(p)-1]&^1), q, dp, dq, qi},
		"zero prime": {{0}, q, dp, dq, qi},
		"swapped":    {q, p, dp, dq, qi},
	} {
		if _, err := ImportRSA(2048, args[0], args[1], args[2], args[3], args[4]); !errors.Is(err, ErrInput) {
			t.Errorf("%s: %v, want ErrInput", name, err)
		}
	}
}

func TestECDSAAndECDH(t *testing.T) {
	for _, alg := range []Algorithm{ECCP256, ECCP384} {
		k, err := Software{}.Generate(alg)
		if err != nil {
			t.Fatal(err)
		}
		pub := k.Public().(*ecdsa.PublicKey)
		n := (pub.Curve.Params().N.BitLen() + 7) / 8
		digest := bytes.Repeat([]byte{0x42}, n)
		sig, err := k.Sign(digest)
		if err != nil || !ecdsa.VerifyASN1(pub, digest, sig) {
			t.Errorf("%v: signature %v", alg, err)
		}
		if _, err := k.Sign(append(digest, 0)); !errors.Is(err, ErrInput) {
			t.Errorf("%v: digest longer than the order: %v", alg, err)
		}
		if _, err := k.Sign(nil); !errors.Is(err, ErrInput) {
			t.Errorf("%v: empty digest: %v", alg, err)
		}
		peer, _ := ecdsa.GenerateKey(pub.Curve, rand.Reader)
		peerPoint, _ := peer.PublicKey.Bytes()
		secret, err := k.ECDH(peerPoint)
		if err != nil {
			t.Fatal(err)
		}
		pe, _ := peer.ECDH()
		cardPub, _ := pub.ECDH()
		want, _ := pe.ECDH(cardPub)
		if !bytes.Equal(secret, want) {
			t.Errorf("%v: shared secrets differ", alg)
		}
		if _, err := k.ECDH(peerPoint[:10]); !errors.Is(err, ErrInput) {
			t.Errorf("%v: point off the curve: %v", alg, err)
		}
		if _, err := k.RSA(digest); !errors.Is(err, ErrUnsupported) {
			t.Errorf("%v: RSA on an EC key: %v", alg, err)
		}
	}
}

func Test25519(t *testing.T) {
	ed, _ := Software{}.Generate(Ed25519)
	sig, err := ed.Sign([]byte("message"))
	if err != nil || !ed25519.Verify(ed.Public().(ed25519.PublicKey), []byte("message"), sig) {
		t.Errorf("Ed25519: %v", err)
	}
	x, _ := Software{}.Generate(X25519)
	peer, _ := ecdh.X25519().GenerateKey(rand.Reader)
	secret, err := x.ECDH(peer.PublicKey().Bytes())
	want, _ := peer.ECDH(x.Public().(*ecdh.PublicKey))
	if err != nil || !bytes.Equal(secret, want) {
		t.Errorf("X25519: %v", err)
	}
	if _, err := x.Sign([]byte("m")); !errors.Is(err, ErrUnsupported) {
		t.Errorf("X25519 signing: %v", err)
	}
}

func TestMarshalLoad(t *testing.T) {
	for _, alg := range []Algorithm{ECCP256, ECCP384, Ed25519, X25519} {
		k, _ := Software{}.Generate(alg)
		blob, err := Software{}.Marshal(k)
		if err != nil {
			t.Fatal(err)
		}
		back, err := Software{}.Load(alg, blob)
		if err != nil {
			t.Fatalf("%v: %v", alg, err)
		}
		if !back.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(k.Public()) {
			t.Errorf("%v: public key changed across Marshal/Load", alg)
		}
		other := ECCP384
		if alg == ECCP384 {
			other = ECCP256
		}
		if _, err := (Software{}).Load(other, blob); err == nil {
			t.Errorf("%v blob loaded as %v", alg, other)
		}
	}
	if _, err := (Software{}).Load(ECCP256, []byte("junk")); err == nil {
		t.Error("junk loaded")
	}
	if a, err := ParseAlgorithm("eccp384"); err != nil || a != ECCP384 || a.String() != "eccp384" {
		t.Errorf("ParseAlgorithm: %v %v", a, err)
	}
}
