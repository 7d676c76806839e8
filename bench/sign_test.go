package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"testing"

	"tokenlab/emulator/yubikey"
	"tokenlab/middleware/pivclient"
)

var curves = []struct {
	name  string
	curve elliptic.Curve
	alg   byte
	hash  func([]byte) []byte
}{
	{"P-256", elliptic.P256(), pivclient.AlgECCP256, func(b []byte) []byte { h := sha256.Sum256(b); return h[:] }},
	{"P-384", elliptic.P384(), pivclient.AlgECCP384, func(b []byte) []byte { h := sha512.Sum384(b); return h[:] }},
}

// BenchmarkSign is the floor: crypto/ecdsa SignASN1 with a hedged nonce, as the card signs.
func BenchmarkSign(b *testing.B) {
	for _, c := range curves {
		b.Run("curve="+c.name, func(b *testing.B) {
			priv, err := ecdsa.GenerateKey(c.curve, rand.Reader)
			if err != nil {
				b.Fatal(err)
			}
			digest := c.hash([]byte("tokenlab"))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ecdsa.SignASN1(rand.Reader, priv, digest); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCardSign is the same signature made by the in-process card: the host encodes
// GENERAL AUTHENTICATE, the runtime parses it, the applet checks the PIN policy and signs, and
// the host decodes 7C { 82 signature }. The PIN is verified once (policy "once").
func BenchmarkCardSign(b *testing.B) {
	for _, c := range curves {
		b.Run("curve="+c.name, func(b *testing.B) {
			ctx := context.Background()
			d, err := yubikey.New(yubikey.Options{})
			if err != nil {
				b.Fatal(err)
			}
			cl := pivclient.New(d.Card)
			if _, err := cl.Select(ctx); err != nil {
				b.Fatal(err)
			}
			if err := cl.AuthenticateManagementKey(ctx, pivclient.AlgAES192, yubikeyDefaultKey); err != nil {
				b.Fatal(err)
			}
			pub, err := cl.GenerateKey(ctx, pivclient.SlotAuthentication, c.alg, pivclient.PINPolicyOnce, pivclient.TouchPolicyNever)
			if err != nil {
				b.Fatal(err)
			}
			if err := cl.VerifyPIN(ctx, []byte("123456")); err != nil {
				b.Fatal(err)
			}
			digest := c.hash([]byte("tokenlab"))
			sig, err := cl.Authenticate(ctx, pivclient.SlotAuthentication, c.alg, digest)
			if err != nil || !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), digest, sig) {
				b.Fatalf("card signature does not verify: %v", err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := cl.Authenticate(ctx, pivclient.SlotAuthentication, c.alg, digest); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

var yubikeyDefaultKey = []byte{1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8}

// BenchmarkCardAPDU is the card path without cryptography: GET SERIAL encoded, processed and
// decoded. It is the fixed cost every APDU adds, which the signature benchmarks hide in the noise.
func BenchmarkCardAPDU(b *testing.B) {
	ctx := context.Background()
	d, err := yubikey.New(yubikey.Options{})
	if err != nil {
		b.Fatal(err)
	}
	cl := pivclient.New(d.Card)
	if _, err := cl.Select(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := cl.Serial(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
