package ssh

import (
	"context"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"net"
	"testing"

	gossh "golang.org/x/crypto/ssh"

	"tokenlab/middleware/pivclient"
)

// BenchmarkConnect is one connection per iteration: key exchange and publickey authentication
// with the card's 9A key through the middleware (PIN cached after the first), by the
// x/crypto/ssh client path (plain host key) and by tokenlab's own (RFC 6187 host key).
func BenchmarkConnect(b *testing.B) {
	l := newTokenLab(b)
	ctx := context.Background()
	tok := l.open("opensc-default")
	defer tok.Close(ctx)
	hostCA := newCA(b, "Hosts CA")
	x509Host := hostCert(b, hostCA, ecKey(b, elliptic.P256()), certOpts{ips: []net.IP{net.IPv4(127, 0, 0, 1)}})
	_, x509Addr := startServer(b, ServerConfig{HostKeys: []gossh.Signer{x509Host}, Auth: l.srv.cfg.Auth})
	for _, tc := range []struct {
		name, addr string
		x509User   bool
		cfg        ClientConfig
	}{
		{"host=plain/user=plain", l.addr, false, ClientConfig{User: "alice", HostKeyCallback: fixedHostKey(l.host.PublicKey())}},
		{"host=plain/user=x509", l.addr, true, ClientConfig{HostKeyCallback: fixedHostKey(l.host.PublicKey())}},
		{"host=x509/user=x509", x509Addr, true, ClientConfig{HostCAs: hostCA.pool}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s, err := TokenSigner(ctx, tok, pivclient.SlotAuthentication, tc.x509User)
			if err != nil {
				b.Fatal(err)
			}
			cfg := tc.cfg
			cfg.Signer = s
			b.ReportAllocs()
			for b.Loop() {
				c, err := Dial(ctx, tc.addr, &cfg)
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}

// BenchmarkSign is the signature path alone: the card's 9A key through the middleware as a
// plain key and as an RFC 6187 key, and a software key for comparison.
func BenchmarkSign(b *testing.B) {
	l := newTokenLab(b)
	ctx := context.Background()
	tok := l.open("opensc-default")
	defer tok.Close(ctx)
	soft := ecKey(b, elliptic.P256())
	softX509, err := NewX509Signer(soft, []*x509.Certificate{l.ca.issue(b, soft.Public(), certOpts{cn: "alice"})})
	if err != nil {
		b.Fatal(err)
	}
	plain, err := TokenSigner(ctx, tok, pivclient.SlotAuthentication, false)
	if err != nil {
		b.Fatal(err)
	}
	x509Card, err := TokenSigner(ctx, tok, pivclient.SlotAuthentication, true)
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 200)
	for _, tc := range []struct {
		name string
		s    gossh.Signer
	}{{"card/plain", plain}, {"card/x509", x509Card}, {"software/plain", plainSigner(b, soft)}, {"software/x509", softX509}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tc.s.Sign(rand.Reader, data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
