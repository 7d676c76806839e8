package ike

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// State is where a Session is.
type State int

// Session states.
const (
	StateNegotiating State = iota // IKE_SA_INIT or IKE_AUTH under way
	StateEstablished              // authenticated; exchanges go on
	StateClosed                   // deleted, failed or timed out
)

func (s State) String() string {
	switch s {
	case StateNegotiating:
		return "negotiating"
	case StateEstablished:
		return "established"
	case StateClosed:
		return "closed"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// ErrClosed is returned by operations on a session that has ended.
var ErrClosed = errors.New("ike: IKE SA closed")

// ErrTimeout means a request went unanswered through every retransmission.
var ErrTimeout = errors.New("ike: no answer from the peer")

// NotifyError is an error notification the peer answered with.
type NotifyError struct {
	Notify NotifyType
	Data   []byte
}

func (e *NotifyError) Error() string { return "ike: the peer answered " + e.Notify.String() }

// sessionTable maps our SPIs to sessions; the sockets of one responder share one.
type sessionTable struct {
	mu sync.Mutex
	m  map[uint64]*Session
}

func newSessionTable() *sessionTable { return &sessionTable{m: map[uint64]*Session{}} }

func (t *sessionTable) get(spi uint64) *Session {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[spi]
}

func (t *sessionTable) put(spi uint64, s *Session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.m[spi] = s
}

func (t *sessionTable) del(spi uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, spi)
}

func (t *sessionTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// endpoint reads one UDP socket and hands each message to its session, or IKE_SA_INIT
// requests to onInit (the responder's).
type endpoint struct {
	c      *conn
	table  *sessionTable
	log    *slog.Logger
	record func([]byte)
	onInit func(ep *endpoint, raw []byte, m *Message, from netip.AddrPort)
	done   chan struct{}
}

func newEndpoint(c *conn, table *sessionTable, cfg *Config) *endpoint {
	return &endpoint{c: c, table: table, log: cfg.log(), record: cfg.Record, done: make(chan struct{})}
}

func (e *endpoint) run() {
	defer close(e.done)
	buf := make([]byte, maxMessageLen+8)
	for {
		n, from, err := e.c.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		d, err := unframe(e.c.local.Port(), from.Port(), buf[:n])
		if err != nil {
			continue
		}
		e.dispatch(append([]byte(nil), d...), from)
	}
}

// dispatch routes one message. Errors in unauthenticated messages are dropped (RFC 7296
// §2.21.1: an attacker could forge them).
func (e *endpoint) dispatch(raw []byte, from netip.AddrPort) {
	m, enc, err := ParseMessage(raw)
	if err != nil {
		e.log.Debug("dropping malformed message", "from", from, "err", err)
		return
	}
	if enc == nil && e.record != nil {
		e.record(raw)
	}
	if m.Exchange == ExchangeIKESAInit && !m.IsResponse() && m.SPIr == 0 {
		if e.onInit != nil {
			e.onInit(e, raw, m, from)
		}
		return
	}
	ours := m.SPIi
	if m.FromInitiator() {
		ours = m.SPIr
	}
	s := e.table.get(ours)
	if s == nil {
		e.log.Debug("dropping message for an unknown IKE SA", "from", from, "spi", fmt.Sprintf("%016x", ours))
		return
	}
	s.receive(e, raw, m, enc, from)
}

// Session is an IKE SA and its Child SAs, made by Dial (initiator) or accepted by a
// Responder. Its methods are safe for concurrent use.
type Session struct {
	cfg       *Config
	log       *slog.Logger
	table     *sessionTable
	initiator bool      // we initiated the original IKE SA
	ownConn   *endpoint // the initiator's own socket, closed with the session

	reqMu sync.Mutex // one request of ours at a time (window size 1)

	mu          sync.Mutex
	ep          *endpoint // the socket we answer on
	peer        netip.AddrPort
	sa          *ikeSA
	old         []*ikeSA  // replaced by a rekey, waiting for their deletion
	rekey       *ikeRekey // our IKE SA rekey, while it is under way
	state       State
	hs          *responderHandshake // responder, until established
	children    []*ChildSA
	pending     *pending
	localID     Identity
	remoteID    Identity
	peerCert    *x509.Certificate
	conf        Configuration
	eapIdentity string
	lease       string // identity holding an address of the pool
	authMethod  AuthMethod
	natSupport  bool
	natLocal    bool
	natRemote   bool
	closeErr    error
	done        chan struct{}
	finished    bool
}

// ikeRekey is our IKE SA rekey under way, which a rekey of the peer's may cross
// (RFC 7296 §2.8.2).
type ikeRekey struct {
	old        *ikeSA // the IKE SA being replaced
	crossed    *ikeSA // the peer's new IKE SA from its rekey of old, kept among s.old meanwhile
	oldDeleted bool   // the peer deleted old: its rekey won
}

// adoptCrossed makes the peer's new IKE SA of a crossed rekey the current one, if old still
// is; callers hold mu.
func (s *Session) adoptCrossed(r *ikeRekey) {
	if r.crossed == nil || s.sa != r.old {
		return
	}
	s.old = slices.DeleteFunc(s.old, func(o *ikeSA) bool { return o == r.crossed })
	s.old = append(s.old, r.old)
	s.sa = r.crossed
	s.log.Info("IKE SA rekeyed by the peer", "old", r.old, "new", r.crossed, "crossed", true)
	s.cfg.emit(Event{Kind: EventIKERekeyed, Session: s})
}

// pending is our outstanding request.
type pending struct {
	sa    *ikeSA
	id    uint32
	exch  ExchangeType
	plain bool // IKE_SA_INIT: no keys yet
	ch    chan *Message
}

func newSession(cfg *Config, table *sessionTable, ep *endpoint, peer netip.AddrPort, initiator bool) *Session {
	return &Session{cfg: cfg, log: cfg.log(), table: table, ep: ep, peer: peer, initiator: initiator, done: make(chan struct{})}
}

// Done is closed when the IKE SA has ended (and, for an initiator with a token, the token is
// logged out).
func (s *Session) Done() <-chan struct{} { return s.done }

// Err says why the session ended; nil while it lives or after an orderly delete.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeErr
}

// State returns where the session is.
func (s *Session) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// Initiator reports whether we initiated the IKE SA.
func (s *Session) Initiator() bool { return s.initiator }

// RemoteAddr is the peer's address and port.
func (s *Session) RemoteAddr() netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peer
}

// LocalID and RemoteID are the identities the two sides authenticated.
func (s *Session) LocalID() Identity {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.localID
}

// RemoteID is the peer's authenticated identity.
func (s *Session) RemoteID() Identity {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.remoteID
}

// EAPIdentity is the EAP identity that authenticated the initiator, "" without EAP.
func (s *Session) EAPIdentity() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.eapIdentity
}

// PeerAuthMethod is how the peer's AUTH payload was made (for EAP: PSK, keyed by the MSK).
func (s *Session) PeerAuthMethod() AuthMethod {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authMethod
}

// PeerCertificate is the peer's validated certificate, nil when it did not use one.
func (s *Session) PeerCertificate() *x509.Certificate {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peerCert
}

// Configuration is what the configuration payload assigned (initiator: received; responder:
// given).
func (s *Session) Configuration() Configuration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conf
}

// Suite is the IKE SA's negotiated algorithms.
func (s *Session) Suite() Suite {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sa.suite
}

// SPIs are the current IKE SA's initiator and responder SPIs.
func (s *Session) SPIs() (spiI, spiR uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sa.spiI, s.sa.spiR
}

// NAT reports whether NAT detection ran, and whether it found us or the peer behind a NAT.
func (s *Session) NAT() (supported, local, remote bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.natSupport, s.natLocal, s.natRemote
}

// FragmentSize is the size above which messages are fragmented, 0 when fragmentation was not
// negotiated.
func (s *Session) FragmentSize() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sa.fragSize
}

// Children returns the Child SAs.
func (s *Session) Children() []*ChildSA {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.children)
}

func (s *Session) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("IKE SA %v %v[%v] %v", s.sa, s.peer, s.remoteID, s.state)
}

// ourSPI is the SPI that identifies sa to us.
func ourSPI(sa *ikeSA) uint64 {
	if sa.initiator {
		return sa.spiI
	}
	return sa.spiR
}

// saFor returns the current or an old IKE SA that our SPI names; callers hold mu.
func (s *Session) saFor(spi uint64) *ikeSA {
	if s.sa != nil && ourSPI(s.sa) == spi {
		return s.sa
	}
	for _, o := range s.old {
		if ourSPI(o) == spi {
			return o
		}
	}
	return nil
}

// receive handles one message for this session, on the endpoint's goroutine.
func (s *Session) receive(ep *endpoint, raw []byte, m *Message, enc *encrypted, from netip.AddrPort) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == StateClosed {
		return
	}
	spi := m.SPIi
	if m.FromInitiator() {
		spi = m.SPIr
	}
	sa := s.saFor(spi)
	if sa == nil {
		return
	}
	if m.IsResponse() {
		s.receiveResponse(sa, raw, m, enc)
		return
	}
	if m.FromInitiator() == sa.initiator {
		return // a "request" with our own role's flag: not from the peer
	}
	switch sa.win.classify(m.MessageID) {
	case requestRetransmit:
		// RFC 7383 §2.6.1: answer a fragmented retransmission once, on its first fragment.
		if enc != nil && enc.fragment && enc.number != 1 {
			return
		}
		// Only the very request we answered gets the answer again, and only at the peer's
		// address: anything else with its message ID, or from elsewhere, would turn us into a
		// reflector (strongSwan compares a hash of the request too).
		if !sa.win.isRetransmit(raw) {
			s.log.Debug("dropping a request with the last message ID that is not the last request", "exchange", m.Exchange, "id", m.MessageID, "from", from)
			return
		}
		if from != s.peer {
			s.log.Debug("retransmitted request from another address; answering the peer", "from", from, "peer", s.peer)
		}
		s.log.Debug("retransmitting response", "exchange", m.Exchange, "id", m.MessageID)
		s.ep.c.send(s.peer, sa.win.lastResp)
		return
	case requestOutOfWindow:
		s.log.Debug("dropping request outside the window", "exchange", m.Exchange, "id", m.MessageID, "want", sa.win.nextIn)
		return
	}
	if enc == nil {
		// Every request after IKE_SA_INIT is protected; an unprotected one is not from the peer.
		return
	}
	req := sha256.Sum256(raw)
	done, err := sa.open(raw, m, enc)
	if enc.fragment {
		if enc.number == 1 && err == nil {
			sa.win.firstFragment = req
		}
		req = sa.win.firstFragment
	}
	if err != nil {
		var syn *SyntaxError
		var crit *criticalPayloadError
		switch {
		case errors.As(err, &crit):
			s.respond(ep, sa, m, req, from, []Payload{&NotifyPayload{Notify: NotifyUnsupportedCriticalPayload, Data: []byte{byte(crit.typ)}}})
		case errors.As(err, &syn):
			// Authenticated but malformed: INVALID_SYNTAX (RFC 7296 §2.21.1), and a handshake
			// cannot go on.
			s.log.Info("invalid syntax in an authenticated request", "exchange", m.Exchange, "err", err)
			s.respond(ep, sa, m, req, from, []Payload{&NotifyPayload{Notify: NotifyInvalidSyntax}})
			if s.state != StateEstablished {
				s.terminate(fmt.Errorf("ike: %w", err))
			}
		default:
			s.log.Debug("dropping request that does not decrypt", "exchange", m.Exchange, "err", err)
		}
		return
	}
	if !done {
		return // more fragments to come
	}
	if ep.record != nil {
		ep.record(m.plainForm())
	}
	// The peer may have moved (NAT-T port float): answer where authenticated requests come
	// from (RFC 7296 §2.11).
	s.peer, s.ep = from, ep
	var resp []Payload
	var after func()
	switch {
	case s.hs != nil && m.Exchange == ExchangeIKEAuth:
		resp, after = s.hs.handle(s, sa, m)
	case s.state != StateEstablished:
		resp = []Payload{&NotifyPayload{Notify: NotifyInvalidSyntax}}
	case m.Exchange == ExchangeInformational:
		resp, after = s.informational(sa, m)
	case m.Exchange == ExchangeCreateChildSA:
		resp = s.createChildSA(sa, m)
	default:
		resp = []Payload{&NotifyPayload{Notify: NotifyInvalidSyntax}}
	}
	s.respond(ep, sa, m, req, from, resp)
	if after != nil {
		after()
	}
}

// respond protects and sends our answer to request m, whose hash is req, keeping it for
// retransmissions.
func (s *Session) respond(ep *endpoint, sa *ikeSA, m *Message, req [sha256.Size]byte, from netip.AddrPort, resp []Payload) {
	msgs, err := sa.protect(m.Exchange, true, m.MessageID, resp)
	if err != nil {
		s.log.Error("encoding response", "exchange", m.Exchange, "err", err)
		return
	}
	sa.win.answer(msgs, req)
	if err := ep.c.send(from, msgs); err != nil {
		s.log.Debug("sending response", "err", err)
	}
}

// receiveResponse hands an answer to the request waiting for it; callers hold mu.
func (s *Session) receiveResponse(sa *ikeSA, raw []byte, m *Message, enc *encrypted) {
	p := s.pending
	if p == nil || p.sa != sa || p.id != m.MessageID || p.exch != m.Exchange {
		return
	}
	if p.plain {
		if enc != nil {
			return
		}
		s.pending = nil
		p.ch <- m
		return
	}
	if enc == nil {
		return
	}
	done, err := sa.open(raw, m, enc)
	if err != nil {
		s.log.Debug("dropping response that does not decrypt", "exchange", m.Exchange, "err", err)
		return
	}
	if done {
		if s.ep.record != nil {
			s.ep.record(m.plainForm())
		}
		s.pending = nil
		p.ch <- m
	}
}

// send makes a request on sa and waits for its answer, retransmitting on the schedule until
// ctx ends. plain requests (IKE_SA_INIT) are sent as they are.
func (s *Session) roundTrip(ctx context.Context, sa *ikeSA, exch ExchangeType, ps []Payload) (*Message, error) {
	s.reqMu.Lock()
	defer s.reqMu.Unlock()
	s.mu.Lock()
	if s.state == StateClosed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	id := sa.win.request()
	msgs, err := sa.protect(exch, false, id, ps)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	p := &pending{sa: sa, id: id, exch: exch, ch: make(chan *Message, 1)}
	s.pending = p
	s.mu.Unlock()
	return s.await(ctx, p, msgs)
}

// await sends a request's datagrams and waits for the answer.
func (s *Session) await(ctx context.Context, p *pending, msgs [][]byte) (*Message, error) {
	r := s.cfg.retransmission()
	defer func() {
		s.mu.Lock()
		if s.pending == p {
			s.pending = nil
		}
		s.mu.Unlock()
	}()
	for n := 0; ; n++ {
		wait, ok := r.timeout(n)
		if !ok {
			return nil, fmt.Errorf("%w: %v request %d sent %d times", ErrTimeout, p.exch, p.id, n)
		}
		s.mu.Lock()
		ep, peer := s.ep, s.peer
		s.mu.Unlock()
		if err := ep.c.send(peer, msgs); err != nil {
			return nil, err
		}
		t := time.NewTimer(wait)
		select {
		case m := <-p.ch:
			t.Stop()
			return m, nil
		case <-t.C:
			s.log.Debug("retransmitting request", "exchange", p.exch, "id", p.id, "try", n+1)
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("ike: %v request %d: %w", p.exch, p.id, ctx.Err())
		case <-s.done:
			t.Stop()
			return nil, ErrClosed
		}
	}
}

// request sends a protected request on the current IKE SA.
func (s *Session) request(ctx context.Context, exch ExchangeType, ps []Payload) (*ikeSA, *Message, error) {
	s.mu.Lock()
	sa := s.sa
	s.mu.Unlock()
	m, err := s.roundTrip(ctx, sa, exch, ps)
	return sa, m, err
}

// terminate ends the session; callers hold mu. The token's logout and the closing of Done
// happen on their own goroutine.
func (s *Session) terminate(err error) {
	if s.state == StateClosed {
		return
	}
	failed := s.state != StateEstablished
	s.state = StateClosed
	s.closeErr = err
	for _, sa := range append([]*ikeSA{s.sa}, s.old...) {
		if sa != nil {
			s.table.del(ourSPI(sa))
		}
	}
	if s.lease != "" && s.cfg.Pool != nil {
		s.cfg.Pool.release(s.lease)
	}
	if s.hs != nil {
		s.hs.stop()
	}
	s.log.Info("IKE SA closed", "sa", s.sa, "err", err)
	go s.finish(failed, err)
}

// finish logs the token out (initiator), closes the initiator's socket and Done.
func (s *Session) finish(failed bool, err error) {
	if s.cfg.Token != nil && s.initiator {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if lerr := s.cfg.Token.Logout(ctx); lerr != nil {
			s.log.Warn("token logout", "err", lerr)
		}
		cancel()
	}
	if s.ownConn != nil {
		s.ownConn.c.pc.Close()
		<-s.ownConn.done
	}
	s.mu.Lock()
	if !s.finished {
		s.finished = true
		close(s.done)
	}
	s.mu.Unlock()
	if failed {
		s.cfg.emit(Event{Kind: EventHandshakeFailed, Session: s, Err: err})
	}
	s.cfg.emit(Event{Kind: EventClosed, Session: s, Err: err})
}

// Close deletes the IKE SA (an INFORMATIONAL exchange with a Delete payload), which takes its
// Child SAs with it, and waits until the session is done. A peer that does not answer within
// ctx does not stop the close.
func (s *Session) Close(ctx context.Context) error {
	if s.State() == StateEstablished {
		dctx, cancel := context.WithTimeout(ctx, s.cfg.retransmission().base*2)
		_, _, err := s.request(dctx, ExchangeInformational, []Payload{&DeletePayload{Protocol: ProtocolIKE}})
		cancel()
		if err != nil {
			s.log.Debug("delete was not answered", "err", err)
		}
	}
	s.mu.Lock()
	s.terminate(nil)
	s.mu.Unlock()
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Ping checks that the peer is alive with an empty INFORMATIONAL request (RFC 7296 §1.4).
// A peer that does not answer through the retransmissions is dead, and the session ends.
func (s *Session) Ping(ctx context.Context) error {
	_, m, err := s.request(ctx, ExchangeInformational, nil)
	if errors.Is(err, ErrTimeout) {
		s.mu.Lock()
		s.terminate(fmt.Errorf("ike: dead peer: %w", err))
		s.mu.Unlock()
	}
	if err != nil {
		return err
	}
	if n := m.ErrorNotify(); n != nil {
		return &NotifyError{n.Notify, n.Data}
	}
	return nil
}

// informational handles a peer's INFORMATIONAL request: deletions, notifications, liveness.
func (s *Session) informational(sa *ikeSA, m *Message) ([]Payload, func()) {
	var resp []Payload
	var after func()
	if len(m.Payloads) == 0 {
		s.cfg.emit(Event{Kind: EventLiveness, Session: s})
	}
	for _, p := range m.Payloads {
		d, ok := p.(*DeletePayload)
		if !ok {
			continue
		}
		switch d.Protocol {
		case ProtocolIKE:
			if r := s.rekey; r != nil && sa == r.old && r.crossed != nil && sa == s.sa {
				// The peer's rekey crossed ours and won: its new IKE SA goes on. Old stays
				// until our request on it is answered.
				after = func() {
					s.adoptCrossed(r)
					r.oldDeleted = true
				}
			} else if sa == s.sa {
				after = func() { s.terminate(nil) }
			} else {
				// The old IKE SA of a rekey: gone, the session goes on with the new one.
				after = func() { s.dropOld(sa) }
			}
		case ProtocolESP:
			var ours [][]byte
			for _, spi := range d.SPIs {
				if len(spi) != 4 {
					continue
				}
				out := binary.BigEndian.Uint32(spi)
				for i, c := range s.children {
					if c.OutSPI == out {
						ours = append(ours, spi32(c.InSPI))
						s.children = slices.Delete(s.children, i, i+1)
						s.cfg.emit(Event{Kind: EventChildDown, Session: s, Child: c})
						break
					}
				}
			}
			if len(ours) > 0 {
				resp = append(resp, &DeletePayload{Protocol: ProtocolESP, SPIs: ours})
			}
		}
	}
	return resp, after
}

// dropOld forgets an IKE SA replaced by a rekey; callers hold mu.
func (s *Session) dropOld(sa *ikeSA) {
	for i, o := range s.old {
		if o == sa {
			s.old = slices.Delete(s.old, i, i+1)
			s.table.del(ourSPI(sa))
			return
		}
	}
}

// createChildSA handles a peer's CREATE_CHILD_SA request: an IKE SA rekey or a Child SA.
func (s *Session) createChildSA(sa *ikeSA, m *Message) []Payload {
	sap := getSA(m)
	if sap == nil || getNonce(m) == nil {
		return []Payload{&NotifyPayload{Notify: NotifyInvalidSyntax}}
	}
	if sa != s.sa {
		return []Payload{&NotifyPayload{Notify: NotifyTemporaryFailure}}
	}
	if sap.Proposals[0].Protocol == ProtocolIKE {
		return s.rekeyIKEResponder(sa, m, sap)
	}
	var old *ChildSA
	if n := m.Notify(NotifyRekeySA); n != nil && len(n.SPI) == 4 {
		spi := binary.BigEndian.Uint32(n.SPI)
		for _, c := range s.children {
			if c.InSPI == spi || c.OutSPI == spi {
				old = c
			}
		}
		if old == nil {
			return []Payload{&NotifyPayload{Protocol: ProtocolESP, SPI: n.SPI, Notify: NotifyChildSANotFound}}
		}
	}
	localTS, remoteTS := s.cfg.LocalTS, s.cfg.RemoteTS
	if old != nil {
		localTS, remoteTS = old.LocalTS(), old.RemoteTS()
	}
	child, resp := s.respondChild(sa, m, nil, getNonce(m).Data, nil, localTS, remoteTS, true)
	if child != nil {
		s.children = append(s.children, child)
		s.log.Info("CHILD_SA established", "child", child, "rekey", old != nil)
		s.cfg.emit(Event{Kind: EventChildUp, Session: s, Child: child})
	}
	return resp
}

// respondChild creates a Child SA from a request's SA, TSi and TSr (IKE_AUTH or
// CREATE_CHILD_SA) and returns the payloads of the answer, or an error notification.
// nonces nil means new ones are exchanged (CREATE_CHILD_SA); in IKE_AUTH the IKE SA's are used.
func (s *Session) respondChild(sa *ikeSA, m *Message, ni0, ni, nr0 []byte, localTS, remoteTS []TrafficSelector, exchangeNonces bool) (*ChildSA, []Payload) {
	sap := getSA(m)
	tsi, tsr := getTS(m, false), getTS(m, true)
	if sap == nil || tsi == nil || tsr == nil {
		return nil, []Payload{&NotifyPayload{Notify: NotifyInvalidSyntax}}
	}
	suite, chosen, ok := choose(s.cfg.childProposals(), sap.Proposals, ProtocolESP)
	if !ok || len(chosen.SPI) != 4 {
		return nil, []Payload{&NotifyPayload{Notify: NotifyNoProposalChosen}}
	}
	nr := nr0
	var ke *KEPayload
	var gir []byte
	if exchangeNonces {
		nr = make([]byte, 32)
		rand.Read(nr)
		if suite.Group != 0 {
			peer := getKE(m)
			if peer == nil || peer.Group != suite.Group {
				return nil, []Payload{&NotifyPayload{Notify: NotifyInvalidKEPayload, Data: []byte{byte(suite.Group >> 8), byte(suite.Group)}}}
			}
			k, err := generateDH(suite.Group)
			if err != nil {
				return nil, []Payload{&NotifyPayload{Notify: NotifyNoProposalChosen}}
			}
			if gir, err = k.shared(peer.Data); err != nil {
				return nil, []Payload{&NotifyPayload{Notify: NotifyInvalidSyntax}}
			}
			ke = &KEPayload{Group: suite.Group, Data: k.public()}
		}
	}
	iSel, rSel := narrow(tsi.Selectors, remoteTS), narrow(tsr.Selectors, localTS)
	if len(iSel) == 0 || len(rSel) == 0 {
		return nil, []Payload{&NotifyPayload{Notify: NotifyTSUnacceptable}}
	}
	keys, err := deriveChildKeys(sa.prf, sa.keys.d, suite, gir, ni, nr)
	if err != nil {
		return nil, []Payload{&NotifyPayload{Notify: NotifyNoProposalChosen}}
	}
	child := &ChildSA{Initiator: false, InSPI: newESPSPI(), OutSPI: binary.BigEndian.Uint32(chosen.SPI),
		Suite: suite, TSi: iSel, TSr: rSel, Keys: keys}
	chosen.SPI = spi32(child.InSPI)
	resp := []Payload{&SAPayload{Proposals: []SAProposal{chosen}}}
	if exchangeNonces {
		resp = append(resp, &NoncePayload{Data: nr})
		if ke != nil {
			resp = append(resp, ke)
		}
	}
	resp = append(resp, &TSPayload{Selectors: iSel}, &TSPayload{Responder: true, Selectors: rSel})
	return child, resp
}

// rekeyIKEResponder answers an IKE SA rekey (RFC 7296 §1.3.2): the new SA takes over at once;
// the old one stays until the peer deletes it.
func (s *Session) rekeyIKEResponder(sa *ikeSA, m *Message, sap *SAPayload) []Payload {
	ke := getKE(m)
	suite, chosen, ok := chooseIKE(s.cfg.proposals(), sap.Proposals, ke)
	if !ok || len(chosen.SPI) != 8 {
		return []Payload{&NotifyPayload{Notify: NotifyNoProposalChosen}}
	}
	if ke == nil || ke.Group != suite.Group {
		return []Payload{&NotifyPayload{Notify: NotifyInvalidKEPayload, Data: []byte{byte(suite.Group >> 8), byte(suite.Group)}}}
	}
	k, err := generateDH(suite.Group)
	if err != nil {
		return []Payload{&NotifyPayload{Notify: NotifyNoProposalChosen}}
	}
	gir, err := k.shared(ke.Data)
	if err != nil {
		return []Payload{&NotifyPayload{Notify: NotifyInvalidSyntax}}
	}
	nr := make([]byte, 32)
	rand.Read(nr)
	n := &ikeSA{spiI: binary.BigEndian.Uint64(chosen.SPI), spiR: newSPI(), suite: suite,
		ni: getNonce(m).Data, nr: nr, fragSize: sa.fragSize}
	seed, err := rekeySKEYSEED(sa.prf, sa.keys.d, gir, n.ni, nr)
	if err == nil {
		err = n.install(seed)
	}
	if err != nil {
		return []Payload{&NotifyPayload{Notify: NotifyNoProposalChosen}}
	}
	chosen.SPI = spiBytes(n.spiR)
	s.table.put(n.spiR, s)
	if r := s.rekey; r != nil && r.old == sa && r.crossed == nil {
		// Our rekey of the same IKE SA is out: which new one stands is settled when its
		// answer comes (RFC 7296 §2.8.2).
		r.crossed = n
		s.old = append(s.old, n)
		s.log.Info("IKE SA rekey crossed ours", "old", sa, "new", n)
		return []Payload{&SAPayload{Proposals: []SAProposal{chosen}}, &NoncePayload{Data: nr}, &KEPayload{Group: suite.Group, Data: k.public()}}
	}
	s.old = append(s.old, s.sa)
	s.sa = n
	s.log.Info("IKE SA rekeyed by the peer", "old", sa, "new", n)
	s.cfg.emit(Event{Kind: EventIKERekeyed, Session: s})
	return []Payload{&SAPayload{Proposals: []SAProposal{chosen}}, &NoncePayload{Data: nr}, &KEPayload{Group: suite.Group, Data: k.public()}}
}

// chooseIKE picks an IKE proposal, preferring the DH group of the peer's KE payload when the
// chosen proposal allows it (saving an INVALID_KE_PAYLOAD round trip, as charon does).
func chooseIKE(ours []Proposal, theirs []SAProposal, ke *KEPayload) (Suite, SAProposal, bool) {
	suite, chosen, ok := choose(ours, theirs, ProtocolIKE)
	if !ok || ke == nil || ke.Group == suite.Group {
		return suite, chosen, ok
	}
	for _, p := range ours {
		for _, sp := range theirs {
			if sp.Number != chosen.Number || !slices.Contains(p.Groups, ke.Group) {
				continue
			}
			q := p
			q.Groups = []uint16{ke.Group}
			if s2, ok2 := match(q, sp, ProtocolIKE); ok2 && s2.Cipher == suite.Cipher && s2.PRF == suite.PRF && s2.Integ == suite.Integ {
				return s2, s2.saProposal(sp.Number, ProtocolIKE, sp.SPI), true
			}
		}
	}
	return suite, chosen, ok
}

// RekeyIKE replaces the IKE SA with a new one (CREATE_CHILD_SA with an IKE proposal, RFC 7296
// §1.3.2), then deletes the old one. The Child SAs move to the new IKE SA.
func (s *Session) RekeyIKE(ctx context.Context) error {
	s.mu.Lock()
	if s.state != StateEstablished {
		s.mu.Unlock()
		return ErrClosed
	}
	if s.rekey != nil {
		s.mu.Unlock()
		return errors.New("ike: an IKE SA rekey is under way")
	}
	old := s.sa
	group := old.suite.Group
	s.rekey = &ikeRekey{old: old}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		r := s.rekey
		s.rekey = nil
		// Ours failed and the peer's crossed it: the peer's stands.
		s.adoptCrossed(r)
		if r.oldDeleted {
			s.dropOld(r.old)
		}
	}()
	for attempt := 0; attempt < 2; attempt++ {
		k, err := generateDH(group)
		if err != nil {
			return err
		}
		ni := make([]byte, 32)
		rand.Read(ni)
		spi := newSPI()
		var props []SAProposal
		for i, p := range s.cfg.proposals() {
			p.Groups = moveFirst(p.Groups, group)
			props = append(props, p.saProposal(uint8(i+1), ProtocolIKE, spiBytes(spi)))
		}
		m, err := s.roundTrip(ctx, old, ExchangeCreateChildSA, []Payload{
			&SAPayload{Proposals: props}, &NoncePayload{Data: ni}, &KEPayload{Group: group, Data: k.public()},
		})
		if err != nil {
			return fmt.Errorf("ike: IKE SA rekey: %w", err)
		}
		if n := m.Notify(NotifyInvalidKEPayload); n != nil && len(n.Data) == 2 && attempt == 0 {
			g := binary.BigEndian.Uint16(n.Data)
			if g == group || !slices.ContainsFunc(s.cfg.proposals(), func(p Proposal) bool { return slices.Contains(p.Groups, g) }) {
				return fmt.Errorf("ike: IKE SA rekey: the peer wants DH group %d, which we did not offer", g)
			}
			group = g
			continue
		}
		if n := m.ErrorNotify(); n != nil {
			return fmt.Errorf("ike: IKE SA rekey: %w", &NotifyError{n.Notify, n.Data})
		}
		sap, nr, ke := getSA(m), getNonce(m), getKE(m)
		if sap == nil || nr == nil || ke == nil || len(sap.Proposals) != 1 || len(sap.Proposals[0].SPI) != 8 {
			return fmt.Errorf("ike: IKE SA rekey: %w", syntaxErr("answer lacks SA, Nr or KE"))
		}
		suite, err := suiteOf(sap.Proposals[0])
		if _, _, ok := choose(s.cfg.proposals(), sap.Proposals, ProtocolIKE); err != nil || !ok || suite.Group != group || ke.Group != group {
			return fmt.Errorf("ike: IKE SA rekey: the peer chose %v, not one of ours", suite)
		}
		gir, err := k.shared(ke.Data)
		if err != nil {
			return err
		}
		n := &ikeSA{spiI: spi, spiR: binary.BigEndian.Uint64(sap.Proposals[0].SPI), initiator: true, suite: suite,
			ni: ni, nr: nr.Data, fragSize: old.fragSize}
		seed, err := rekeySKEYSEED(old.prf, old.keys.d, gir, ni, nr.Data)
		if err != nil {
			return err
		}
		if err := n.install(seed); err != nil {
			return err
		}
		s.mu.Lock()
		s.table.put(spi, s)
		r := s.rekey
		// A rekey of the peer's crossed ours (RFC 7296 §2.8.2): the new IKE SA with the lowest
		// of the four nonces goes, deleted by the end that made it; the end that made the
		// other deletes the old one. A peer that already deleted the old one has won.
		lost := r.crossed != nil && (s.sa != old || hasLowestNonce(n, r.crossed))
		if lost {
			s.old = append(s.old, n)
			s.adoptCrossed(r)
		} else {
			s.old = append(s.old, old)
			s.sa = n
			r.crossed = nil // if there was one, it stays among the old ones until the peer deletes it
		}
		s.mu.Unlock()
		if lost {
			s.log.Info("simultaneous IKE SA rekey lost", "old", old, "ours", n)
			_, derr := s.roundTrip(ctx, n, ExchangeInformational, []Payload{&DeletePayload{Protocol: ProtocolIKE}})
			s.mu.Lock()
			s.dropOld(n)
			s.mu.Unlock()
			if derr != nil {
				return fmt.Errorf("ike: deleting the redundant IKE SA of a simultaneous rekey: %w", derr)
			}
			return nil
		}
		s.log.Info("IKE SA rekeyed", "old", old, "new", n)
		s.cfg.emit(Event{Kind: EventIKERekeyed, Session: s})
		// Delete the old IKE SA on itself.
		_, derr := s.roundTrip(ctx, old, ExchangeInformational, []Payload{&DeletePayload{Protocol: ProtocolIKE}})
		s.mu.Lock()
		s.dropOld(old)
		s.mu.Unlock()
		if derr != nil {
			return fmt.Errorf("ike: deleting the rekeyed IKE SA: %w", derr)
		}
		return nil
	}
	return errors.New("ike: IKE SA rekey: the peer asked for a DH group twice")
}

// hasLowestNonce reports whether a holds the lowest of the four nonces of two IKE SAs that
// rekeyed the same one at once: a is the redundant one (RFC 7296 §2.8.2).
func hasLowestNonce(a, b *ikeSA) bool {
	lowest := func(x *ikeSA) []byte {
		if bytes.Compare(x.ni, x.nr) < 0 {
			return x.ni
		}
		return x.nr
	}
	return bytes.Compare(lowest(a), lowest(b)) < 0
}

func moveFirst(gs []uint16, g uint16) []uint16 {
	out := []uint16{g}
	for _, x := range gs {
		if x != g {
			out = append(out, x)
		}
	}
	return out
}

// childRequest is the SA, Ni, [KEi], TSi, TSr of a Child SA request of ours.
type childRequest struct {
	spi uint32
	ni  []byte
	dh  dhKey
	tsi []TrafficSelector
	tsr []TrafficSelector
}

func (s *Session) newChildRequest(localTS, remoteTS []TrafficSelector, group uint16) (*childRequest, []Payload, error) {
	r := &childRequest{spi: newESPSPI(), tsi: localTS, tsr: remoteTS}
	if len(r.tsi) == 0 {
		r.tsi = []TrafficSelector{SelectorFromPrefix(netip.MustParsePrefix("0.0.0.0/0"))}
	}
	if len(r.tsr) == 0 {
		r.tsr = []TrafficSelector{SelectorFromPrefix(netip.MustParsePrefix("0.0.0.0/0"))}
	}
	var props []SAProposal
	for i, p := range s.cfg.childProposals() {
		if group != 0 {
			p.Groups = []uint16{group}
		}
		props = append(props, p.saProposal(uint8(i+1), ProtocolESP, spi32(r.spi)))
	}
	ps := []Payload{&SAPayload{Proposals: props}}
	if group != 0 {
		r.ni = make([]byte, 32)
		rand.Read(r.ni)
		k, err := generateDH(group)
		if err != nil {
			return nil, nil, err
		}
		r.dh = k
		ps = append(ps, &NoncePayload{Data: r.ni}, &KEPayload{Group: group, Data: k.public()})
	}
	ps = append(ps, &TSPayload{Selectors: r.tsi}, &TSPayload{Responder: true, Selectors: r.tsr})
	return r, ps, nil
}

// childFromAnswer completes a Child SA we asked for from the peer's answer.
func (s *Session) childFromAnswer(sa *ikeSA, r *childRequest, m *Message, ni, nr []byte) (*ChildSA, error) {
	if n := m.ErrorNotify(); n != nil {
		return nil, &NotifyError{n.Notify, n.Data}
	}
	sap, tsi, tsr := getSA(m), getTS(m, false), getTS(m, true)
	if sap == nil || tsi == nil || tsr == nil || len(sap.Proposals) != 1 || len(sap.Proposals[0].SPI) != 4 {
		return nil, syntaxErr("Child SA answer lacks SA, TSi or TSr")
	}
	suite, err := suiteOf(sap.Proposals[0])
	if err != nil {
		return nil, err
	}
	if !slices.ContainsFunc(s.cfg.childProposals(), func(p Proposal) bool {
		q := p
		q.Groups = nil
		if suite.Group != 0 {
			q.Groups = []uint16{suite.Group}
		}
		_, ok := match(q, sap.Proposals[0], ProtocolESP)
		return ok
	}) {
		return nil, fmt.Errorf("ike: the peer chose ESP %v, which we did not offer", suite)
	}
	var gir []byte
	if r.dh != nil {
		ke := getKE(m)
		if ke == nil {
			return nil, syntaxErr("Child SA answer lacks KE")
		}
		if gir, err = r.dh.shared(ke.Data); err != nil {
			return nil, err
		}
	}
	keys, err := deriveChildKeys(sa.prf, sa.keys.d, suite, gir, ni, nr)
	if err != nil {
		return nil, err
	}
	return &ChildSA{Initiator: true, InSPI: r.spi, OutSPI: binary.BigEndian.Uint32(sap.Proposals[0].SPI),
		Suite: suite, TSi: tsi.Selectors, TSr: tsr.Selectors, Keys: keys}, nil
}

// RekeyChild replaces a Child SA with a new one (CREATE_CHILD_SA with REKEY_SA, RFC 7296
// §2.8), then deletes the old one.
func (s *Session) RekeyChild(ctx context.Context, old *ChildSA) (*ChildSA, error) {
	r, ps, err := s.newChildRequest(old.LocalTS(), old.RemoteTS(), 0)
	if err != nil {
		return nil, err
	}
	r.ni = make([]byte, 32)
	rand.Read(r.ni)
	// SA, Ni, TSi, TSr: the nonce goes after the SA payload.
	ps = append([]Payload{&NotifyPayload{Protocol: ProtocolESP, SPI: spi32(old.InSPI), Notify: NotifyRekeySA}, ps[0],
		&NoncePayload{Data: r.ni}}, ps[1:]...)
	sa, m, err := s.request(ctx, ExchangeCreateChildSA, ps)
	if err != nil {
		return nil, fmt.Errorf("ike: Child SA rekey: %w", err)
	}
	nr := getNonce(m)
	if nr == nil && m.ErrorNotify() == nil {
		return nil, fmt.Errorf("ike: Child SA rekey: %w", syntaxErr("answer lacks Nr"))
	}
	var nrData []byte
	if nr != nil {
		nrData = nr.Data
	}
	c, err := s.childFromAnswer(sa, r, m, r.ni, nrData)
	if err != nil {
		return nil, fmt.Errorf("ike: Child SA rekey: %w", err)
	}
	s.mu.Lock()
	s.children = append(s.children, c)
	s.mu.Unlock()
	s.log.Info("CHILD_SA rekeyed", "old", old, "new", c)
	s.cfg.emit(Event{Kind: EventChildUp, Session: s, Child: c})
	if err := s.DeleteChild(ctx, old); err != nil {
		return c, err
	}
	return c, nil
}

// DeleteChild deletes a Child SA (INFORMATIONAL with a Delete payload of its inbound SPI).
func (s *Session) DeleteChild(ctx context.Context, c *ChildSA) error {
	_, m, err := s.request(ctx, ExchangeInformational, []Payload{&DeletePayload{Protocol: ProtocolESP, SPIs: [][]byte{spi32(c.InSPI)}}})
	s.mu.Lock()
	for i, x := range s.children {
		if x == c {
			s.children = slices.Delete(s.children, i, i+1)
			break
		}
	}
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("ike: deleting Child SA %08x: %w", c.InSPI, err)
	}
	s.cfg.emit(Event{Kind: EventChildDown, Session: s, Child: c})
	if n := m.ErrorNotify(); n != nil {
		return &NotifyError{n.Notify, n.Data}
	}
	return nil
}
