package ike

import (
	"context"
	"crypto/elliptic"
	"crypto/x509"
	"log/slog"
	"net/netip"
	"os"
	"testing"
	"time"
)

var loopback = netip.MustParseAddrPort("127.0.0.1:0")

func testLog(t testing.TB) *slog.Logger {
	if os.Getenv("IKE_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

// pair is a responder and an initiator configuration with certificates from one CA.
func certPair(t testing.TB, curveI, curveR elliptic.Curve) (*Config, *Config) {
	p := newTestPKI(t)
	gk, gder := p.issue(t, curveR, "gw.test", "gw.test")
	ck, cder := p.issue(t, curveI, "client@test", "client@test")
	gwID, _ := ParseIdentity("gw.test")
	clID, _ := ParseIdentity("client@test")
	resp := &Config{Signer: gk, Certificates: [][]byte{gder}, CAs: []*x509.Certificate{p.ca}, LocalID: gwID, Log: testLog(t),
		LocalTS: mustSelectors("10.2.0.0/24")}
	init := &Config{Signer: ck, Certificates: [][]byte{cder}, CAs: []*x509.Certificate{p.ca}, LocalID: clID, RemoteID: &gwID,
		Log: testLog(t), LocalTS: mustSelectors("10.1.0.0/24"), RemoteTS: mustSelectors("10.2.0.0/24")}
	return init, resp
}

func mustSelectors(s string) []TrafficSelector {
	ts, err := ParseSelectors(s)
	if err != nil {
		panic(err)
	}
	return ts
}

func listen(t testing.TB, cfg *Config) *Responder {
	t.Helper()
	r, err := Listen(cfg, loopback)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func dial(t testing.TB, cfg *Config, r *Responder) *Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := Dial(ctx, cfg, loopback, r.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

func TestHandshakeCertificates(t *testing.T) {
	init, resp := certPair(t, elliptic.P384(), elliptic.P256())
	r := listen(t, resp)
	s := dial(t, init, r)
	if s.State() != StateEstablished {
		t.Fatalf("state %v", s.State())
	}
	if got := s.RemoteID().String(); got != "gw.test" {
		t.Errorf("remote ID %q", got)
	}
	rs, err := r.Accept(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := rs.RemoteID().String(); got != "client@test" {
		t.Errorf("responder sees %q", got)
	}
	cs, rcs := s.Children(), rs.Children()
	if len(cs) != 1 || len(rcs) != 1 {
		t.Fatalf("children %d and %d", len(cs), len(rcs))
	}
	oe, _ := cs[0].OutboundKeys()
	ie, _ := rcs[0].InboundKeys()
	if string(oe) != string(ie) || cs[0].OutSPI != rcs[0].InSPI {
		t.Errorf("child keys differ: %x vs %x", oe, ie)
	}
}
