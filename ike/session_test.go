package ike

import (
	"bytes"
	"context"
	"crypto/elliptic"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// sendFrom hands the responder one datagram from an address and returns what it sent, and where.
func (h *responderHarness) sendFrom(d []byte, from netip.AddrPort) ([][]byte, []netip.AddrPort) {
	h.ep.dispatch(append([]byte(nil), d...), from)
	return h.mc.takeTo()
}

// TestRetransmittedRequest: the cached answer to the last request goes out again only for that
// very request, and only to the IKE SA's peer: another request with its message ID, or the
// same request from another address, makes no datagram to anyone else (no reflection or
// amplification towards a forged source). IKE_SA_INIT alike.
func TestRetransmittedRequest(t *testing.T) {
	h := newResponderHarness(t)
	defer h.r.Close()
	victim := netip.MustParseAddrPort("198.51.100.7:500")

	// IKE_SA_INIT: a request with the SPI and address of a half-open IKE SA, but other content,
	// is not a retransmission.
	init := func(nonce byte) []byte {
		k, _ := generateDH(19)
		m := &Message{Header: Header{SPIi: 0x0102030405060708, Exchange: ExchangeIKESAInit, Flags: flagInitiator}, Payloads: []Payload{
			&SAPayload{Proposals: []SAProposal{DefaultProposals()[0].saProposal(1, ProtocolIKE, nil)}},
			&KEPayload{Group: 19, Data: k.public()}, &NoncePayload{Data: bytes.Repeat([]byte{nonce}, 32)}}}
		b, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	first := init(1)
	out, _ := h.sendFrom(first, h.from)
	if len(out) != 1 {
		t.Fatalf("%d answers to IKE_SA_INIT", len(out))
	}
	if again, _ := h.sendFrom(first, h.from); len(again) != 1 || !bytes.Equal(again[0], out[0]) {
		t.Errorf("a retransmitted IKE_SA_INIT is not answered the same: %d datagrams", len(again))
	}
	if other, _ := h.sendFrom(init(2), h.from); len(other) != 0 {
		t.Errorf("another IKE_SA_INIT with the SPI of a half-open IKE SA got %d datagrams", len(other))
	}

	// IKE_AUTH on a fresh IKE SA: IDi and no AUTH, so the responder answers with EAP.
	h.saInit([]byte{0x12})
	h.mc.take()
	alice, _ := ParseIdentity("alice")
	req := func() []byte {
		msgs, err := h.sa.protect(ExchangeIKEAuth, false, 1, []Payload{&IDPayload{ID: alice}})
		if err != nil || len(msgs) != 1 {
			t.Fatalf("protect: %v", err)
		}
		return msgs[0]
	}
	r1 := req()
	out, to := h.sendFrom(r1, h.from)
	if len(out) != 1 || to[0] != h.from {
		t.Fatalf("IKE_AUTH answered with %d datagrams to %v", len(out), to)
	}
	for _, tc := range []struct {
		name string
		d    []byte
		from netip.AddrPort
		want int // datagrams to h.from
	}{
		{"the same request", r1, h.from, 1},
		{"the same request from elsewhere", r1, victim, 1},
		{"another request with the same message ID", req(), h.from, 0},
		{"another request with the same message ID from elsewhere", req(), victim, 0},
	} {
		got, to := h.sendFrom(tc.d, tc.from)
		for i, a := range to {
			if a != h.from {
				t.Errorf("%s: a datagram went to %v", tc.name, a)
			} else if !bytes.Equal(got[i], out[0]) {
				t.Errorf("%s: not the cached answer", tc.name)
			}
		}
		if len(got) != tc.want {
			t.Errorf("%s: %d datagrams, want %d", tc.name, len(got), tc.want)
		}
	}
}

// rewriteConn is a responder socket that replaces the payloads of protected responses: rewrite
// returns the new payloads, or nil to send the response as it is. It runs on the endpoint's
// goroutine inside receive, which holds the session's lock.
type rewriteConn struct {
	*net.UDPConn
	r       atomic.Pointer[Responder] // set once newResponder returns, before any datagram
	rewrite func(m *Message) []Payload
}

func (c *rewriteConn) WriteToUDPAddrPort(b []byte, to netip.AddrPort) (int, error) {
	pre := 0
	if len(b) >= 4 && b[0]|b[1]|b[2]|b[3] == 0 {
		pre = 4
	}
	m, enc, err := ParseMessage(b[pre:])
	if err != nil || enc == nil || !m.IsResponse() {
		return c.UDPConn.WriteToUDPAddrPort(b, to)
	}
	ps := c.rewrite(m)
	if ps == nil {
		return c.UDPConn.WriteToUDPAddrPort(b, to)
	}
	sa := c.r.Load().table.get(m.SPIr).saFor(m.SPIr)
	msgs, err := sa.protect(m.Exchange, true, m.MessageID, ps)
	if err != nil {
		return 0, err
	}
	return c.UDPConn.WriteToUDPAddrPort(append(b[:pre:pre], msgs[0]...), to)
}

// listenRewriting is listen with a rewriteConn.
func listenRewriting(t *testing.T, cfg *Config, rewrite func(m *Message) []Payload) *Responder {
	t.Helper()
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	rc := &rewriteConn{UDPConn: pc, rewrite: rewrite}
	r := newResponder(cfg, []*conn{{pc: rc, local: pc.LocalAddr().(*net.UDPAddr).AddrPort()}})
	rc.r.Store(r)
	t.Cleanup(func() { r.Close() })
	return r
}

// TestRekeyIKEInvalidKE: an IKE SA rekey follows INVALID_KE_PAYLOAD only to a DH group of our
// proposals, as IKE_SA_INIT does: a peer cannot talk it down to a group we did not configure.
func TestRekeyIKEInvalidKE(t *testing.T) {
	init, resp := certPair(t, elliptic.P256(), elliptic.P256())
	var err error
	if init.Proposals, err = ParseProposals("aes128-sha256-ecp384", false); err != nil {
		t.Fatal(err)
	}
	if resp.Proposals, err = ParseProposals("aes128-sha256-ecp384-modp2048", false); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		group uint16
	}{{"a group we did not offer", 14}, {"the group we sent", 20}} {
		t.Run(tc.name, func(t *testing.T) {
			once := false
			r := listenRewriting(t, resp, func(m *Message) []Payload {
				if m.Exchange != ExchangeCreateChildSA || once {
					return nil
				}
				once = true
				return []Payload{&NotifyPayload{Notify: NotifyInvalidKEPayload, Data: []byte{byte(tc.group >> 8), byte(tc.group)}}}
			})
			s := dial(t, init, r)
			if err := s.RekeyIKE(context.Background()); err == nil || !strings.Contains(err.Error(), "did not offer") {
				t.Errorf("rekey after INVALID_KE_PAYLOAD for group %d: %v", tc.group, err)
			}
			if g := s.Suite().Group; g != 20 {
				t.Errorf("the IKE SA's group is %d", g)
			}
		})
	}
}

// crossingConn is a responder socket that makes two IKE SA rekeys cross (RFC 7296 §2.8.2): it
// holds the responder's first CREATE_CHILD_SA request, and sends it just before the responder's
// answer to the initiator's CREATE_CHILD_SA request, so each side gets the other's request
// while its own is out.
type crossingConn struct {
	*net.UDPConn
	mu      sync.Mutex
	held    []byte
	heldTo  netip.AddrPort
	holding bool
}

func (c *crossingConn) WriteToUDPAddrPort(b []byte, to netip.AddrPort) (int, error) {
	h, err := ParseHeader(b[nonESPMarkerLen(b):])
	if err != nil || h.Exchange != ExchangeCreateChildSA {
		return c.UDPConn.WriteToUDPAddrPort(b, to)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !h.IsResponse() && c.holding {
		if c.held == nil {
			c.held, c.heldTo = append([]byte(nil), b...), to
		}
		return len(b), nil
	}
	if h.IsResponse() && c.held != nil {
		c.UDPConn.WriteToUDPAddrPort(c.held, c.heldTo)
		c.held, c.holding = nil, false
	}
	return c.UDPConn.WriteToUDPAddrPort(b, to)
}

func (c *crossingConn) isHolding() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.held != nil
}

func nonESPMarkerLen(b []byte) int {
	if len(b) >= 4 && b[0]|b[1]|b[2]|b[3] == 0 {
		return 4
	}
	return 0
}

// TestSimultaneousIKERekey: both ends rekey the IKE SA at once. The new IKE SA with the lowest
// of the four nonces is deleted by the end that made it, the other survives on both ends, the
// old one is deleted once, and the IKE SA works both ways afterwards.
func TestSimultaneousIKERekey(t *testing.T) {
	won := map[bool]int{}                                // by whether the initiator's rekey won
	for i := 0; i < 30 && (i < 4 || len(won) < 2); i++ { // the nonces decide: both outcomes come up
		init, resp := certPair(t, elliptic.P256(), elliptic.P256())
		pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
		if err != nil {
			t.Fatal(err)
		}
		cc := &crossingConn{UDPConn: pc}
		r := newResponder(resp, []*conn{{pc: cc, local: pc.LocalAddr().(*net.UDPAddr).AddrPort()}})
		s := dial(t, init, r)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		rs, err := r.Accept(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cc.mu.Lock()
		cc.holding = true
		cc.mu.Unlock()
		errs := make(chan error, 2)
		go func() { errs <- rs.RekeyIKE(ctx) }()
		for !cc.isHolding() {
			time.Sleep(time.Millisecond)
		}
		go func() { errs <- s.RekeyIKE(ctx) }()
		for range 2 {
			if err := <-errs; err != nil {
				t.Errorf("rekey: %v", err)
			}
		}
		i1, r1 := s.SPIs()
		i2, r2 := rs.SPIs()
		if i1 != i2 || r1 != r2 {
			t.Errorf("the ends disagree on the IKE SA: %016x_%016x and %016x_%016x", i1, r1, i2, r2)
		}
		if err := s.Ping(ctx); err != nil {
			t.Errorf("initiator's ping: %v", err)
		}
		if err := rs.Ping(ctx); err != nil {
			t.Errorf("responder's ping: %v", err)
		}
		s.mu.Lock()
		won[s.sa.initiator]++
		s.mu.Unlock()
		for _, x := range []*Session{s, rs} {
			x.mu.Lock()
			if n, m := len(x.old), x.table.len(); n != 0 || m != 1 {
				t.Errorf("%d old IKE SAs and %d SPIs left", n, m)
			}
			x.mu.Unlock()
		}
		cancel()
		s.Close(context.Background())
		r.Close()
	}
	if len(won) < 2 {
		t.Errorf("one side won every time: %v", won)
	}
}
