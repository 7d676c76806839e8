package ike

import (
	"bytes"
	"context"
	"crypto/elliptic"
	"net"
	"net/netip"
	"strings"
	"testing"
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
	r       *Responder
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
	sa := c.r.table.get(m.SPIr).saFor(m.SPIr)
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
	rc.r = r
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
