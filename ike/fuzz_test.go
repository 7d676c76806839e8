package ike

import (
	"bytes"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"sync"
	"testing"
)

// Captured messages seed the fuzz targets: testdata/fuzz/captures holds messages tokenlab
// received from charon (interop.TestIKECaptures writes them) and from its own initiator
// (TestCaptures -update), each in plain form: protected messages decrypted and re-framed
// as unprotected ones (Config.Record).
const capturesDir = "testdata/fuzz/captures"

// capture is one stored message; its conversation is the name without the sequence number,
// exchange and direction (tokenlab-cert-r-02-IKE_AUTH-req.ike is of tokenlab-cert-r).
type capture struct {
	name, conversation string
	b                  []byte
}

var captureName = regexp.MustCompile(`^(.*)-\d+-[A-Z_]+-(req|resp)\.ike$`)

// readCaptures returns the stored captures in name order.
func readCaptures(t testing.TB) []capture {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(capturesDir, "*.ike"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	var out []capture
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		c := capture{name: filepath.Base(n), b: b}
		if m := captureName.FindStringSubmatch(c.name); m != nil {
			c.conversation = m[1]
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		t.Fatalf("no captures in %s", capturesDir)
	}
	return out
}

// checkRoundTrip is the decoder's oracle: a message that parses re-encodes to bytes that parse
// to the same message, and encoding is stable from then on.
func checkRoundTrip(t testing.TB, b []byte) {
	m, enc, err := ParseMessage(b)
	if err != nil {
		var syn *SyntaxError
		var crit *criticalPayloadError
		if !errors.As(err, &syn) && !errors.As(err, &crit) {
			t.Fatalf("ParseMessage error of an unexpected kind: %T %v", err, err)
		}
		return
	}
	if enc != nil {
		return // a protected message has nothing to re-encode without its keys
	}
	b1, err := m.Marshal()
	if err != nil {
		// Only a payload that grew past 65535 bytes cannot be re-encoded; nothing parsed does.
		t.Fatalf("re-encoding a parsed message: %v", err)
	}
	m1, enc1, err := ParseMessage(b1)
	if err != nil || enc1 != nil {
		t.Fatalf("re-encoded message does not parse: %v\n in: %x\nout: %x", err, b, b1)
	}
	b2, err := m1.Marshal()
	if err != nil || !bytes.Equal(b1, b2) {
		t.Fatalf("encoding is not stable: %v\n1st: %x\n2nd: %x", err, b1, b2)
	}
	if m1.Header != m.Header && (m1.SPIi != m.SPIi || m1.SPIr != m.SPIr || m1.Exchange != m.Exchange ||
		m1.Flags != m.Flags || m1.MessageID != m.MessageID) {
		t.Fatalf("header changed: %+v → %+v", m.Header, m1.Header)
	}
	if m.Summary() != m1.Summary() {
		t.Fatalf("payloads changed: %s → %s", m.Summary(), m1.Summary())
	}
}

// FuzzParseMessage: the message and payload decoder never panics, fails only with a syntax
// error, and what it parses survives decode→encode→decode.
func FuzzParseMessage(f *testing.F) {
	for _, c := range readCaptures(f) {
		f.Add(c.b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkRoundTrip(t, b)
	})
}

// FuzzParseEAP: the EAP packet decoder never panics and what it parses re-encodes as it came.
func FuzzParseEAP(f *testing.F) {
	for _, c := range readCaptures(f) {
		m, _, err := ParseMessage(c.b)
		if err != nil {
			continue
		}
		if e := getEAP(m); e != nil {
			f.Add(e.Data)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parseEAP(b)
		if err != nil {
			return
		}
		if out := p.marshal(); !bytes.Equal(out, b) {
			t.Fatalf("EAP packet re-encodes differently:\n in: %x\nout: %x", b, out)
		}
	})
}

// memConn is a socket whose datagrams stay in memory: the responder's answers are collected,
// and reads block until it is closed.
type memConn struct {
	mu     sync.Mutex
	out    [][]byte
	to     []netip.AddrPort // where each of out went
	closed chan struct{}
	once   sync.Once
}

func newMemConn() *memConn { return &memConn{closed: make(chan struct{})} }

func (c *memConn) ReadFromUDPAddrPort([]byte) (int, netip.AddrPort, error) {
	<-c.closed
	return 0, netip.AddrPort{}, net.ErrClosed
}

func (c *memConn) WriteToUDPAddrPort(b []byte, to netip.AddrPort) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.out = append(c.out, append([]byte(nil), b...))
	c.to = append(c.to, to)
	return len(b), nil
}

func (c *memConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

// take returns the datagrams written since the last call.
func (c *memConn) take() [][]byte {
	out, _ := c.takeTo()
	return out
}

// takeTo returns the datagrams written since the last call and where each went.
func (c *memConn) takeTo() ([][]byte, []netip.AddrPort) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out, to := c.out, c.to
	c.out, c.to = nil, nil
	return out, to
}

// Operations of a FuzzResponder input: one byte of operation, two of length, then that many
// bytes of argument.
const (
	opDatagram  = iota // the argument is a datagram, sent as it is
	opSAInit           // a valid IKE_SA_INIT from the harness, which then holds the IKE SA's keys
	opProtected        // exchange, first payload, message-ID choice, then payloads the harness encrypts
	opFragment         // as opProtected, as one SKF fragment: number and total come first
	numOps
)

const fuzzMaxHalfOpen = 4

// responderHarness drives a responder with datagrams from one peer address and plays the
// initiator's key exchange, so fuzzed payloads reach the responder under valid protection.
type responderHarness struct {
	t    *testing.T
	r    *Responder
	mc   *memConn
	ep   *endpoint
	from netip.AddrPort
	sa   *ikeSA   // the harness's side of the last IKE SA it set up
	out  [][]byte // everything the responder sent during the current operation
}

var (
	harnessOnce sync.Once
	harnessCfg  *Config
)

// fuzzResponderConfig authenticates itself with a certificate and initiators with a
// certificate of its CA or with EAP-MSCHAPv2: nothing the fuzzer can produce.
func fuzzResponderConfig(t testing.TB) *Config {
	harnessOnce.Do(func() {
		_, resp := certPair(t, elliptic.P256(), elliptic.P256())
		resp.CookieThreshold = 2
		resp.MaxHalfOpen = fuzzMaxHalfOpen
		resp.EAPServer = &EAPServer{Users: map[string]EAPUser{"alice": {Password: []byte("alice-password")}}}
		resp.Pool, _ = ParsePool("10.40.40.2-10.40.40.20")
		harnessCfg = resp
	})
	return harnessCfg
}

func newResponderHarness(t *testing.T) *responderHarness {
	mc := newMemConn()
	c := &conn{pc: mc, local: netip.MustParseAddrPort("127.0.0.1:500")}
	r := newResponder(fuzzResponderConfig(t), []*conn{c})
	return &responderHarness{t: t, r: r, mc: mc, ep: r.eps[0], from: netip.MustParseAddrPort("192.0.2.1:500")}
}

func (h *responderHarness) send(d []byte) [][]byte {
	h.ep.dispatch(append([]byte(nil), d...), h.from)
	out := h.mc.take()
	h.out = append(h.out, out...)
	return out
}

// saInit sets up an IKE SA with the responder as a well-behaved initiator would, following a
// COOKIE; arg picks the proposal and the group.
func (h *responderHarness) saInit(arg []byte) {
	props := DefaultProposals()
	var pick, gpick int
	if len(arg) > 0 {
		pick, gpick = int(arg[0]%uint8(len(props))), int(arg[0]>>4)
	}
	p := props[pick]
	group := p.Groups[gpick%len(p.Groups)]
	k, err := generateDH(group)
	if err != nil {
		h.t.Fatal(err)
	}
	spi := newSPI()
	ni := make([]byte, 32)
	rand.Read(ni)
	var cookie []byte
	for try := 0; try < 2; try++ {
		var ps []Payload
		if cookie != nil {
			ps = append(ps, &NotifyPayload{Notify: NotifyCookie, Data: cookie})
		}
		ps = append(ps, &SAPayload{Proposals: []SAProposal{p.saProposal(1, ProtocolIKE, nil)}},
			&KEPayload{Group: group, Data: k.public()}, &NoncePayload{Data: ni},
			&NotifyPayload{Notify: NotifyIKEv2FragmentationSupported})
		req := &Message{Header: Header{SPIi: spi, Exchange: ExchangeIKESAInit, Flags: flagInitiator}, Payloads: ps}
		raw, err := req.Marshal()
		if err != nil {
			h.t.Fatal(err)
		}
		out := h.send(raw)
		if len(out) == 0 {
			return // dropped at the half-open limit
		}
		resp, _, err := ParseMessage(out[0])
		if err != nil {
			h.t.Fatalf("IKE_SA_INIT answer does not parse: %v", err)
		}
		if n := resp.Notify(NotifyCookie); n != nil {
			cookie = n.Data
			continue
		}
		sap, ke, nr := getSA(resp), getKE(resp), getNonce(resp)
		if sap == nil || ke == nil || nr == nil {
			h.t.Fatalf("valid IKE_SA_INIT answered with %s", resp.Summary())
		}
		suite, err := suiteOf(sap.Proposals[0])
		if err != nil {
			h.t.Fatalf("the responder chose %v: %v", sap.Proposals[0], err)
		}
		gir, err := k.shared(ke.Data)
		if err != nil {
			h.t.Fatalf("the responder's KE: %v", err)
		}
		sa := &ikeSA{spiI: spi, spiR: resp.SPIr, initiator: true, suite: suite, ni: ni, nr: nr.Data}
		seed, err := skeyseed(mustPRF(suite.PRF), gir, ni, nr.Data)
		if err == nil {
			err = sa.install(seed)
		}
		if err != nil {
			h.t.Fatal(err)
		}
		h.sa = sa
		return
	}
	h.t.Fatal("a second COOKIE answered a request that brought one")
}

var fuzzExchanges = []ExchangeType{ExchangeIKEAuth, ExchangeInformational, ExchangeCreateChildSA, ExchangeIKESAInit}

// protected sends arg's payloads under the harness's IKE SA and checks the answer: a new
// request in the window of a live IKE SA is answered, and one whose payloads do not parse is
// answered INVALID_SYNTAX (RFC 7296 §2.21.1: it is authenticated).
func (h *responderHarness) protected(arg []byte, fragment bool) {
	if h.sa == nil || len(arg) < 3 {
		return
	}
	exch := fuzzExchanges[int(arg[0])%len(fuzzExchanges)]
	if arg[0] >= 0x80 {
		exch = ExchangeType(arg[0])
	}
	first := PayloadType(arg[1])
	s := h.r.table.get(h.sa.spiR)
	var id uint32
	live := false
	if s != nil {
		s.mu.Lock()
		id = s.sa.win.nextIn
		live = s.state != StateClosed
		s.mu.Unlock()
	}
	switch arg[2] % 4 {
	case 1:
		id-- // a retransmission or, before any answer, outside the window
		live = false
	case 2:
		id += uint32(arg[2]) // outside the window
		live = false
	}
	plain := arg[3:]
	hdr := h.sa.header(exch, false, id)
	var msg []byte
	var err error
	if fragment {
		if len(plain) < 2 {
			return
		}
		number, total := uint16(plain[0]%8), uint16(plain[1]%8)
		msg, err = h.sa.seal(hdr, PayloadSKF, first, number, total, plain[2:])
		live = false
	} else {
		msg, err = h.sa.seal(hdr, PayloadSK, first, 0, 0, plain)
	}
	if err != nil {
		return
	}
	out := h.send(msg)
	if !live {
		return
	}
	_, nested, perr := unmarshalPayloads(plain, first)
	if perr == nil && nested != nil {
		perr = syntaxErr("nested SK")
	}
	if len(out) == 0 {
		h.t.Fatalf("%v request %d on a live IKE SA went unanswered (payloads: %v)", exch, id, perr)
	}
	var syn *SyntaxError
	if !errors.As(perr, &syn) {
		return
	}
	// The answer decrypts under the IKE SA's keys and says INVALID_SYNTAX.
	resp, enc, err := ParseMessage(out[0])
	if err != nil || enc == nil || !resp.IsResponse() || resp.MessageID != id {
		h.t.Fatalf("answer to a malformed request: %v %+v", err, resp)
	}
	if enc.fragment {
		return // INVALID_SYNTAX alone is never fragmented; a fragmented answer is wrong anyway
	}
	if _, err := h.sa.open(out[0], resp, enc); err != nil {
		h.t.Fatalf("answer to a malformed request does not decrypt: %v", err)
	}
	if n := resp.Notify(NotifyInvalidSyntax); n == nil {
		h.t.Fatalf("malformed %v request (%v) answered with %s", exch, perr, resp.Summary())
	}
}

// check holds after every operation.
func (h *responderHarness) check(sent []byte, op int) {
	out := h.out
	h.out = nil
	if op == opDatagram {
		if _, _, err := ParseMessage(sent); err != nil && len(out) > 0 {
			h.t.Fatalf("a datagram that does not parse (%v) was answered", err)
		}
	}
	for _, d := range out {
		if _, _, err := ParseMessage(d); err != nil {
			h.t.Fatalf("the responder sent a message that does not parse: %v\n%x", err, d)
		}
	}
	st := h.r.Stats()
	if st.HalfOpen > fuzzMaxHalfOpen || st.Sessions > fuzzMaxHalfOpen+1 {
		h.t.Fatalf("state unbounded: %d half-open, %d IKE SAs (limit %d)", st.HalfOpen, st.Sessions, fuzzMaxHalfOpen)
	}
	h.r.table.mu.Lock()
	for _, s := range h.r.table.m {
		if s.state == StateEstablished {
			h.r.table.mu.Unlock()
			h.t.Fatalf("an IKE SA was established without valid authentication: %v", s.remoteID)
		}
	}
	h.r.table.mu.Unlock()
	select {
	case s := <-h.r.accept:
		h.t.Fatalf("the responder accepted %v", s)
	default:
	}
}

// encodeOps is the FuzzResponder input of a sequence of operations.
func encodeOps(ops ...[]byte) []byte {
	var b []byte
	for _, op := range ops {
		b = append(b, op[0])
		b = binary.BigEndian.AppendUint16(b, uint16(len(op)-1))
		b = append(b, op[1:]...)
	}
	return b
}

// protectedOp is an opProtected of a captured request's payloads.
func protectedOp(m []byte) []byte {
	h, err := ParseHeader(m)
	if err != nil {
		return nil
	}
	x := byte(0)
	for i, e := range fuzzExchanges {
		if e == h.Exchange {
			x = byte(i)
		}
	}
	return append([]byte{opProtected, x, byte(h.NextPayload), 0}, m[headerLen:]...)
}

// FuzzResponder feeds a responder datagram sequences: raw datagrams, and payloads protected
// under a key exchange the harness completed. Oracles: no panic; a malformed unauthenticated
// datagram is dropped and a malformed authenticated request answered INVALID_SYNTAX (RFC 7296
// §2.21); no IKE SA is established without valid authentication; half-open state is bounded.
func FuzzResponder(f *testing.F) {
	// Each captured request alone, and each conversation's requests in a row after a key
	// exchange, as charon or tokenlab sent them.
	conversations := map[string][][]byte{}
	var order []string
	for i, c := range readCaptures(f) {
		h, err := ParseHeader(c.b)
		if err != nil || h.IsResponse() {
			continue
		}
		f.Add(encodeOps(append([]byte{opDatagram}, c.b...)))
		if h.Exchange == ExchangeIKESAInit {
			continue
		}
		f.Add(encodeOps([]byte{opSAInit, byte(i)}, protectedOp(c.b)))
		if conversations[c.conversation] == nil {
			order = append(order, c.conversation)
			conversations[c.conversation] = [][]byte{{opSAInit, byte(len(order))}}
		}
		conversations[c.conversation] = append(conversations[c.conversation], protectedOp(c.b))
	}
	for _, k := range order {
		f.Add(encodeOps(conversations[k]...))
	}
	f.Add(encodeOps([]byte{opSAInit, 1}, []byte{opSAInit, 2}, []byte{opSAInit, 3}, []byte{opSAInit, 4},
		[]byte{opSAInit, 5}, []byte{opSAInit, 6}))
	f.Add(encodeOps([]byte{opSAInit, 0x12}, []byte{opProtected, 0, byte(PayloadIDi), 0, 0, 0, 0, 3, 1}))
	f.Add(encodeOps([]byte{opSAInit, 0x12}, []byte{opFragment, 0, byte(PayloadIDi), 0, 1, 2, 0, 0, 0, 5, 1, 0, 0, 0}))

	f.Fuzz(func(t *testing.T, in []byte) {
		h := newResponderHarness(t)
		defer h.r.Close()
		for n := 0; len(in) >= 3 && n < 16; n++ {
			op := int(in[0]) % numOps
			l := min(int(binary.BigEndian.Uint16(in[1:3])), len(in)-3)
			arg := in[3 : 3+l]
			in = in[3+l:]
			switch op {
			case opDatagram:
				h.send(arg)
			case opSAInit:
				h.saInit(arg)
			case opProtected:
				h.protected(arg, false)
			case opFragment:
				h.protected(arg, true)
			}
			h.check(arg, op)
		}
	})
}

// TestResponderHarness: the harness reaches the responder's protected path, so that
// FuzzResponder's oracles are not vacuous: a key exchange completes, a malformed protected
// IKE_AUTH is answered INVALID_SYNTAX and ends the negotiation, and captured IKE_AUTH
// requests (AUTH over another key exchange) are refused.
func TestResponderHarness(t *testing.T) {
	h := newResponderHarness(t)
	defer h.r.Close()
	h.saInit([]byte{0x12})
	h.check(nil, opSAInit)
	if h.sa == nil {
		t.Fatal("the harness did not complete IKE_SA_INIT")
	}
	// An IDi payload whose header gives a length of 3: truncated.
	h.protected([]byte{0, byte(PayloadIDi), 0, 0, 0, 0, 3, 1}, false)
	if len(h.out) != 1 {
		t.Fatalf("%d answers to a malformed IKE_AUTH", len(h.out))
	}
	h.check(nil, opProtected)
	if s := h.r.table.get(h.sa.spiR); s != nil {
		t.Errorf("the IKE SA outlived INVALID_SYNTAX in IKE_AUTH: %v", s)
	}

	refused := 0
	for _, c := range readCaptures(t) {
		hd, err := ParseHeader(c.b)
		if err != nil || hd.IsResponse() || hd.Exchange != ExchangeIKEAuth || hd.MessageID != 1 {
			continue
		}
		h.saInit([]byte{0x12})
		h.out = nil
		h.protected(protectedOp(c.b)[1:], false)
		var answer *Message
		for _, d := range h.out {
			m, enc, err := ParseMessage(d)
			if err != nil || enc == nil {
				t.Fatalf("%s: answer does not parse: %v", c.name, err)
			}
			if done, err := h.sa.open(d, m, enc); err != nil {
				t.Fatalf("%s: answer does not decrypt: %v", c.name, err)
			} else if done {
				answer = m
			}
		}
		h.check(nil, opProtected)
		if answer == nil {
			t.Fatalf("%s: no answer", c.name)
		}
		if answer.Notify(NotifyAuthenticationFailed) == nil && getEAP(answer) == nil {
			t.Errorf("%s: a replayed IKE_AUTH answered %s", c.name, answer.Summary())
		}
		refused++
	}
	if refused == 0 {
		t.Error("no captured IKE_AUTH request")
	}
}
