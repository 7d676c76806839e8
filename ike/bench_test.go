package ike

import (
	"context"
	"crypto/elliptic"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkHandshake is a full IKE_SA_INIT + IKE_AUTH with certificate authentication both
// ways (ECDSA, RFC 7427) and a Child SA, initiator and responder in one process over
// loopback UDP: ns and allocations per handshake, both sides together. Closing each IKE SA
// (an INFORMATIONAL exchange) is outside the timing.
func BenchmarkHandshake(b *testing.B) {
	for _, bc := range []struct {
		name     string
		proposal string
		curve    elliptic.Curve
	}{
		{"aes128gcm16-prfsha256-ecp256/P-256", "aes128gcm16-prfsha256-ecp256", elliptic.P256()},
		{"aes256gcm16-prfsha384-ecp384/P-384", "aes256gcm16-prfsha384-ecp384", elliptic.P384()},
		{"aes128-sha256-modp2048/P-256", "aes128-sha256-modp2048", elliptic.P256()},
		{"chacha20poly1305-prfsha256-curve25519/P-256", "chacha20poly1305-prfsha256-curve25519", elliptic.P256()},
	} {
		b.Run(bc.name, func(b *testing.B) {
			init, resp := certPair(b, bc.curve, bc.curve)
			p, err := ParseProposal(bc.proposal, false)
			if err != nil {
				b.Fatal(err)
			}
			init.Proposals = []Proposal{p}
			r := listen(b, resp)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				s, err := Dial(ctx, init, loopback, r.Addrs()[0])
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if _, err := r.Accept(ctx); err != nil {
					b.Fatal(err)
				}
				if err := s.Close(ctx); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkKeyDerivation is SKEYSEED and the seven IKE SA keys (RFC 7296 §2.14), then a
// Child SA's KEYMAT (§2.17), on HKDF.
func BenchmarkKeyDerivation(b *testing.B) {
	for _, name := range []string{"aes128gcm16-prfsha256-ecp256", "aes256-sha256-ecp384", "aes256gcm16-prfsha384-ecp384"} {
		b.Run(name, func(b *testing.B) {
			p, err := ParseProposal(name, false)
			if err != nil {
				b.Fatal(err)
			}
			suite, err := suiteOf(p.saProposal(1, ProtocolIKE, nil))
			if err != nil {
				b.Fatal(err)
			}
			esp, _ := ParseProposal("aes128gcm16", true)
			child, err := suiteOf(esp.saProposal(1, ProtocolESP, []byte{1, 2, 3, 4}))
			if err != nil {
				b.Fatal(err)
			}
			gir, ni, nr := make([]byte, 96), make([]byte, 32), make([]byte, 32)
			rand.Read(gir)
			rand.Read(ni)
			rand.Read(nr)
			pf := mustPRF(suite.PRF)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				seed, err := skeyseed(pf, gir, ni, nr)
				if err != nil {
					b.Fatal(err)
				}
				k, err := deriveIKEKeys(suite, pf, seed, ni, nr, 1, 2)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := deriveChildKeys(pf, k.d, child, nil, ni, nr); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPayloads encodes and decodes messages charon sent: its IKE_SA_INIT request and
// its IKE_AUTH request (IDi, CERT, AUTH, SA, TSi, TSr and notifications), decrypted.
func BenchmarkPayloads(b *testing.B) {
	for _, name := range []string{"charon-init-cert-01-IKE_SA_INIT-req.ike", "charon-init-cert-02-IKE_AUTH-req.ike"} {
		raw, err := os.ReadFile(filepath.Join(capturesDir, name))
		if err != nil {
			b.Fatal(err)
		}
		m, _, err := ParseMessage(raw)
		if err != nil {
			b.Fatal(err)
		}
		b.Run("decode/"+m.Exchange.String(), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for i := 0; i < b.N; i++ {
				if _, _, err := ParseMessage(raw); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("encode/"+m.Exchange.String(), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for i := 0; i < b.N; i++ {
				if _, err := m.Marshal(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
