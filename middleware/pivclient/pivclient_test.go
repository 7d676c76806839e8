package pivclient

import (
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"os"
	"strings"
	"testing"

	"tokenlab/apdu"
	"tokenlab/emulator/yubikey"
)

func unhex(t testing.TB, s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseMetadata(t *testing.T) {
	m, err := ParseMetadata(unhex(t, "01 01 FF 05 01 01 06 02 03 02"))
	if err != nil || m.Algorithm != 0xFF || !m.IsDefault || m.MaxRetries != 3 || m.Retries != 2 {
		t.Errorf("PIN metadata = %+v, %v", m, err)
	}
	// Tag 04 before 01 still decodes, with the algorithm from 01.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	point, _ := key.PublicKey.Bytes()
	pub := append([]byte{0x86, 0x41}, point...)
	b := append([]byte{0x04, byte(len(pub))}, pub...)
	b = append(b, 0x01, 0x01, AlgECCP256, 0x02, 0x02, 0x02, 0x01, 0x03, 0x01, 0x01, 0x07, 0x01, 0x00)
	m, err = ParseMetadata(b)
	if err != nil || !m.PublicKey.(*ecdsa.PublicKey).Equal(&key.PublicKey) || m.PINPolicy != 2 || m.Origin != 1 {
		t.Errorf("slot metadata = %+v, %v", m, err)
	}
	for name, in := range map[string]string{
		"short policy":   "01 01 11 02 01 02",
		"duplicate":      "01 01 11 01 01 14",
		"truncated":      "01 05 11",
		"bad public key": "01 01 11 04 03 86 01 04",
		"wrong key tag":  "01 01 11 04 03 81 01 04",
	} {
		if _, err := ParseMetadata(unhex(t, in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestParsePublicKey(t *testing.T) {
	for name, tc := range map[string]struct {
		alg byte
		in  string
	}{
		"RSA exponent 1":   {AlgRSA1024, "81 02 C0 01 82 01 01"},
		"RSA empty":        {AlgRSA2048, "81 00 82 03 01 00 01"},
		"RSA no exponent":  {AlgRSA2048, "81 01 01"},
		"Ed25519 short":    {AlgEd25519, "86 02 01 02"},
		"EC off curve":     {AlgECCP256, "86 41 04" + strings.Repeat("00", 64)},
		"unknown alg":      {0x42, "86 01 00"},
		"X25519 extra tag": {AlgX25519, "86 20 " + strings.Repeat("09", 32) + " 87 00"},
	} {
		if _, err := ParsePublicKey(tc.alg, unhex(t, tc.in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// The client against the in-process card: every instruction it has, end to end.
func TestClient(t *testing.T) {
	ctx := context.Background()
	d, err := yubikey.New(yubikey.Options{Serial: 777})
	if err != nil {
		t.Fatal(err)
	}
	c := New(d.Card)
	if _, err := c.Select(ctx); err != nil {
		t.Fatal(err)
	}
	if s, err := c.Serial(ctx); err != nil || s != 777 {
		t.Errorf("Serial = %d, %v", s, err)
	}
	if v, err := c.Version(ctx); err != nil || v != [3]byte{5, 7, 1} {
		t.Errorf("Version = %v, %v", v, err)
	}
	var ae *AuthError
	if err := c.VerifyPIN(ctx, []byte("999999")); !errors.As(err, &ae) || ae.Retries != 2 || !errors.Is(err, apdu.ErrVerifyFailed) {
		t.Errorf("wrong PIN: %v", err)
	}
	if ok, n, err := c.PINStatus(ctx); ok || n != 2 || err != nil {
		t.Errorf("PINStatus = %v %d %v", ok, n, err)
	}
	if err := c.VerifyPIN(ctx, []byte("123456")); err != nil {
		t.Fatal(err)
	}
	if ok, _, _ := c.PINStatus(ctx); !ok {
		t.Error("not verified after VERIFY")
	}
	if err := c.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GenerateKey(ctx, SlotAuthentication, AlgECCP256, 0, 0); !errors.Is(err, apdu.ErrSecurityStatus) {
		t.Errorf("GENERATE without the management key: %v", err)
	}
	if err := c.AuthenticateManagementKey(ctx, AlgAES192, []byte("010203040506070801020304")); err == nil {
		t.Error("authenticated with a wrong key")
	}
	key := []byte{1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8}
	if err := c.AuthenticateManagementKey(ctx, AlgAES192, key); err != nil {
		t.Fatal(err)
	}

	// Import and use every key type the card has.
	b, _ := os.ReadFile("../../emulator/piv/testdata/rsa2048.pem")
	blk, _ := pem.Decode(b)
	rsaKey, _ := x509ParsePKCS8(blk.Bytes)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	xKey, _ := ecdh.X25519().GenerateKey(rand.Reader)
	digest := sha256.Sum256([]byte("pivclient"))
	for slot, k := range map[byte]crypto.PrivateKey{0x82: rsaKey, 0x83: ecKey, 0x84: edKey, 0x85: xKey} {
		if err := c.ImportKey(ctx, slot, k, PINPolicyNever, TouchPolicyNever); err != nil {
			t.Fatalf("import %T: %v", k, err)
		}
		m, err := c.GetMetadata(ctx, slot)
		if err != nil || m.Origin != 2 || !m.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(publicOf(k)) {
			t.Errorf("metadata of imported %T: %+v, %v", k, m, err)
		}
	}
	sig, err := c.Authenticate(ctx, 0x83, AlgECCP384, digest[:])
	if err != nil || !ecdsa.VerifyASN1(&ecKey.PublicKey, digest[:], sig) {
		t.Errorf("P-384 signature: %v", err)
	}
	em, _ := rsa.SignPKCS1v15(nil, rsaKey.(*rsa.PrivateKey), crypto.SHA256, digest[:])
	raw, err := rsaVerifyBlock(rsaKey.(*rsa.PrivateKey), em)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.Authenticate(ctx, 0x82, AlgRSA2048, raw); err != nil || string(got) != string(em) {
		t.Errorf("raw RSA: %v", err)
	}
	peer, _ := ecdh.X25519().GenerateKey(rand.Reader)
	shared, err := c.ECDH(ctx, 0x85, AlgX25519, peer.PublicKey().Bytes())
	want, _ := peer.ECDH(xKey.PublicKey())
	if err != nil || string(shared) != string(want) {
		t.Errorf("X25519: %v", err)
	}
	// RSA with primes of unequal size is refused on the host.
	odd, _ := rsa.GenerateMultiPrimeKey(rand.Reader, 3, 1024) //nolint:staticcheck // a deliberately unsupported key
	if err := c.ImportKey(ctx, 0x86, odd, 0, 0); err == nil {
		t.Error("three-prime RSA key imported")
	}
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if err := c.ImportKey(ctx, 0x86, p521, 0, 0); err == nil {
		t.Error("P-521 key imported")
	}
	if err := c.SetCertificate(ctx, 0x82, []byte{0x30, 0x00}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Certificate(ctx, 0x82); err == nil {
		t.Error("parsed a malformed certificate")
	}
	if err := c.MoveKey(ctx, 0x82, 0x8A); err != nil {
		t.Error(err)
	}
	if err := c.DeleteKey(ctx, 0x8A); err != nil {
		t.Error(err)
	}
	if _, err := c.GetMetadata(ctx, 0x8A); !errors.Is(err, apdu.ErrNotFound) {
		t.Errorf("deleted key: %v", err)
	}
}

// FuzzParseMetadata: a card's GET METADATA answer is either decoded or an error; never a panic.
func FuzzParseMetadata(f *testing.F) {
	for _, s := range []string{
		"0101FF05010106020303",           // PIN (YubiKey 5.7)
		"01010A020200010501 01",          // management key
		"010111020202010301010403860104", // slot, cut short
		"0101FF0202000005010106020303",   // ykman's expected PIN form
	} {
		f.Add(unhex(f, strings.ReplaceAll(s, " ", "")))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMetadata(b)
		if err == nil && m == nil {
			t.Fatal("nil metadata without error")
		}
	})
}
