package ike

import (
	"crypto/ecdh"
	"crypto/elliptic"
	"crypto/rand"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"tokenlab/middleware"
)

func TestCookieJar(t *testing.T) {
	clock := middleware.NewFakeClock(time.Unix(1_700_000_000, 0))
	j := newCookieJar(clock)
	ni := []byte("nonce of the initiator, 32 bytes")
	ip := netip.MustParseAddr("192.0.2.1")
	c := j.make(ni, ip, 42)
	if len(c) != cookieLen || !j.check(c, ni, ip, 42) {
		t.Fatal("a fresh cookie does not check")
	}
	for _, bad := range []struct {
		name string
		ok   bool
	}{
		{"other SPI", j.check(c, ni, ip, 43)},
		{"other address", j.check(c, ni, netip.MustParseAddr("192.0.2.2"), 42)},
		{"other nonce", j.check(c, []byte("another nonce"), ip, 42)},
		{"truncated", j.check(c[:10], ni, ip, 42)},
	} {
		if bad.ok {
			t.Errorf("cookie accepted with %s", bad.name)
		}
	}
	clock.Advance(cookieSecretLifetime)
	if !j.check(c, ni, ip, 42) {
		t.Error("a cookie of the previous secret is refused")
	}
	clock.Advance(cookieSecretLifetime)
	if j.check(c, ni, ip, 42) {
		t.Error("a cookie two secrets old is accepted")
	}
}

// TestCookieRotation: a cookie lives less than two secret lifetimes, also when nobody asked
// for a cookie in between (the secrets rotate on use).
func TestCookieRotation(t *testing.T) {
	clock := middleware.NewFakeClock(time.Unix(1_700_000_000, 0))
	j := newCookieJar(clock)
	ni := []byte("nonce of the initiator, 32 bytes")
	ip := netip.MustParseAddr("2001:db8::1")

	// Idle for ten lifetimes: both secrets are replaced at once.
	c := j.make(ni, ip, 7)
	clock.Advance(10 * cookieSecretLifetime)
	if j.check(c, ni, ip, 7) {
		t.Error("a cookie ten lifetimes old is accepted")
	}

	// Made at the end of a secret's lifetime: accepted through the next lifetime, refused after.
	clock.Advance(cookieSecretLifetime - time.Second)
	c = j.make(ni, ip, 7)
	clock.Advance(cookieSecretLifetime)
	if !j.check(c, ni, ip, 7) {
		t.Error("a cookie one lifetime old is refused")
	}
	clock.Advance(time.Second)
	if j.check(c, ni, ip, 7) {
		t.Error("a cookie of a secret two lifetimes old is accepted")
	}

	// A fresh cookie after the rotations checks, and a forged version byte does not.
	c = j.make(ni, ip, 7)
	if !j.check(c, ni, ip, 7) {
		t.Error("a fresh cookie is refused after rotations")
	}
	c[0] += 2
	if j.check(c, ni, ip, 7) {
		t.Error("a cookie with another version byte is accepted")
	}
}

// flood sends n IKE_SA_INIT requests with fresh SPIs and nonces from socket c, in batches,
// reading an answer to each, and returns how many answers carried a COOKIE and the last
// request sent.
func flood(t testing.TB, c *net.UDPConn, to netip.AddrPort, n int) (cookies, answers int, last []byte) {
	t.Helper()
	buf := make([]byte, 2048)
	const batch = 64
	for sent := 0; sent < n; {
		m := min(batch, n-sent)
		for i := 0; i < m; i++ {
			last = initRequest(newSPI())
			c.WriteToUDPAddrPort(frame(1, 1, last), to)
		}
		sent += m
		for i := 0; i < m; i++ {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			l, _, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("flood: %d answers to %d requests: %v", answers, sent, err)
			}
			answers++
			if r, _, err := ParseMessage(buf[4:l]); err == nil && r.Notify(NotifyCookie) != nil {
				cookies++
			}
		}
	}
	return cookies, answers, last
}

func udpSender(t testing.TB) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(loopback))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// initRequest is an IKE_SA_INIT request offering aes128-sha256-ecp256.
func initRequest(spi uint64) []byte {
	k, _ := ecdh.P256().GenerateKey(rand.Reader)
	p := DefaultProposals()[0]
	p.Groups = []uint16{DHECP256}
	ni := make([]byte, 32)
	rand.Read(ni)
	msg := &Message{Header: Header{SPIi: spi, Exchange: ExchangeIKESAInit, Flags: flagInitiator},
		Payloads: []Payload{&SAPayload{Proposals: []SAProposal{p.saProposal(1, ProtocolIKE, nil)}},
			&KEPayload{Group: DHECP256, Data: k.PublicKey().Bytes()[1:]}, &NoncePayload{Data: ni}}}
	raw, _ := msg.Marshal()
	return raw
}

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestCookieFlood: a flood of half-open IKE_SA_INIT requests turns cookies on after the
// threshold; the responder keeps at most the threshold's worth of half-open state, and a
// legitimate initiator still gets through (it repeats its request with the cookie).
func TestCookieFlood(t *testing.T) {
	init, resp := certPair(t, elliptic.P256(), elliptic.P256())
	resp.CookieThreshold = 10
	r := listen(t, resp)
	before := heap()
	const n = 5000
	cookies, answers, _ := flood(t, udpSender(t), r.Addrs()[0], n)
	after := heap()
	st := r.Stats()
	t.Logf("flood of %d IKE_SA_INIT: %d answers, %d cookies, half-open now %d (max %d), heap %+d bytes",
		n, answers, cookies, st.HalfOpen, st.HalfOpenMax, int64(after)-int64(before))
	if st.HalfOpenMax > 10 || st.HalfOpen > 10 {
		t.Errorf("half-open SAs reached %d (now %d), the cookie threshold is 10", st.HalfOpenMax, st.HalfOpen)
	}
	if cookies != n-10 {
		t.Errorf("%d cookies for %d requests past the threshold", cookies, n-10)
	}
	if grown := int64(after) - int64(before); grown > 1<<20 {
		t.Errorf("heap grew by %d bytes under a cookie flood", grown)
	}
	s := dial(t, init, r)
	if s.State() != StateEstablished || r.Stats().CookiesOK != 1 {
		t.Errorf("legitimate initiator: %v, cookies checked %d", s.State(), r.Stats().CookiesOK)
	}
}

// TestHalfOpenLimit: with cookies off, the half-open table stops at MaxHalfOpen and further
// requests are dropped; the memory per half-open IKE SA is reported.
func TestHalfOpenLimit(t *testing.T) {
	_, resp := certPair(t, elliptic.P256(), elliptic.P256())
	resp.CookieThreshold = 1 << 30
	resp.MaxHalfOpen = 500
	r := listen(t, resp)
	before := heap()
	c := udpSender(t)
	_, answers, last := flood(t, c, r.Addrs()[0], 500)
	after := heap()
	st := r.Stats()
	per := (int64(after) - int64(before)) / 500
	t.Logf("500 half-open IKE SAs: heap %+d bytes, %d bytes each", int64(after)-int64(before), per)
	if st.HalfOpen != 500 || answers != 500 {
		t.Fatalf("half-open %d, answers %d", st.HalfOpen, answers)
	}
	// Past the limit a request is dropped, unanswered. A retransmission sent after it, from the
	// same address, is answered from the half-open table; its answer shows the drop was
	// processed (one socket, one reader, in order).
	c.WriteToUDPAddrPort(frame(1, 1, initRequest(newSPI())), r.Addrs()[0])
	c.WriteToUDPAddrPort(frame(1, 1, last), r.Addrs()[0])
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := ParseMessage(buf[4:n])
	want, _, _ := ParseMessage(last)
	if err != nil || got.SPIi != want.SPIi {
		t.Errorf("the first answer is not the retransmission's: %v", err)
	}
	if st := r.Stats(); st.Dropped != 1 || st.HalfOpen != 500 {
		t.Errorf("past the limit: dropped %d, half-open %d", st.Dropped, st.HalfOpen)
	}
	if per > 16<<10 {
		t.Errorf("%d bytes per half-open IKE SA", per)
	}
}

// TestHalfOpenExpiry: half-open IKE SAs that never authenticate are forgotten after the
// negotiate timeout, and the responder's tables are empty again.
func TestHalfOpenExpiry(t *testing.T) {
	_, resp := certPair(t, elliptic.P256(), elliptic.P256())
	resp.CookieThreshold = 1 << 30
	resp.NegotiateTimeout = MinNegotiateTimeout
	r := listen(t, resp)
	if _, answers, _ := flood(t, udpSender(t), r.Addrs()[0], 50); answers != 50 {
		t.Fatalf("%d answers to 50 requests", answers)
	}
	if st := r.Stats(); st.HalfOpen != 50 || st.Sessions != 50 {
		t.Fatalf("after 50 requests: half-open %d, sessions %d", st.HalfOpen, st.Sessions)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := r.Stats()
		if st.HalfOpen == 0 && st.Sessions == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("5 s after a 1 s negotiate timeout: half-open %d, sessions %d", st.HalfOpen, st.Sessions)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
