package ike

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Responder accepts IKE SAs on one or more UDP sockets (the IKE port and the NAT-T port).
type Responder struct {
	cfg     *Config
	table   *sessionTable
	eps     []*endpoint
	cookies *cookieJar
	accept  chan *Session

	mu       sync.Mutex
	halfOpen map[halfOpenKey]*Session
	closed   bool

	stats struct {
		initRequests, cookiesSent, cookiesChecked, dropped, halfOpenMax atomic.Int64
	}
}

type halfOpenKey struct {
	spiI uint64
	peer netip.AddrPort
}

// Stats are a responder's counters.
type Stats struct {
	InitRequests int64 // IKE_SA_INIT requests received
	CookiesSent  int64 // answered with a COOKIE instead of state
	CookiesOK    int64 // requests that brought a valid cookie
	Dropped      int64 // dropped at the half-open limit
	HalfOpen     int   // half-open IKE SAs now
	HalfOpenMax  int64 // most half-open IKE SAs at once
	Sessions     int   // IKE SAs known (any state), by SPI
}

// Listen starts a responder on the given addresses: the IKE port first, then optionally the
// NAT-T port.
func Listen(cfg *Config, addrs ...netip.AddrPort) (*Responder, error) {
	if err := cfg.check(false); err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		return nil, errors.New("ike: Listen needs an address")
	}
	var conns []*conn
	for _, a := range addrs {
		c, err := listenUDP(a)
		if err != nil {
			for _, c := range conns {
				c.pc.Close()
			}
			return nil, err
		}
		conns = append(conns, c)
	}
	return newResponder(cfg, conns), nil
}

// newResponder serves IKE on sockets that are already open.
func newResponder(cfg *Config, conns []*conn) *Responder {
	r := &Responder{cfg: cfg, table: newSessionTable(), cookies: newCookieJar(cfg.clock()),
		accept: make(chan *Session, 64), halfOpen: map[halfOpenKey]*Session{}}
	for _, c := range conns {
		ep := newEndpoint(c, r.table, cfg)
		ep.onInit = r.saInit
		r.eps = append(r.eps, ep)
	}
	for _, ep := range r.eps {
		go ep.run()
	}
	return r
}

// Addrs are the addresses the responder listens on.
func (r *Responder) Addrs() []netip.AddrPort {
	var out []netip.AddrPort
	for _, ep := range r.eps {
		out = append(out, ep.c.local)
	}
	return out
}

// Accept returns the next established session.
func (r *Responder) Accept(ctx context.Context) (*Session, error) {
	select {
	case s := <-r.accept:
		return s, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Stats returns the responder's counters.
func (r *Responder) Stats() Stats {
	r.mu.Lock()
	n := len(r.halfOpen)
	r.mu.Unlock()
	return Stats{InitRequests: r.stats.initRequests.Load(), CookiesSent: r.stats.cookiesSent.Load(),
		CookiesOK: r.stats.cookiesChecked.Load(), Dropped: r.stats.dropped.Load(), HalfOpen: n,
		HalfOpenMax: r.stats.halfOpenMax.Load(), Sessions: r.table.len()}
}

// Close stops listening and ends every session without telling the peers.
func (r *Responder) Close() error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	for _, ep := range r.eps {
		ep.c.pc.Close()
		<-ep.done
	}
	r.table.mu.Lock()
	var all []*Session
	for _, s := range r.table.m {
		all = append(all, s)
	}
	r.table.mu.Unlock()
	for _, s := range all {
		s.mu.Lock()
		s.terminate(errors.New("ike: responder closed"))
		s.mu.Unlock()
	}
	return nil
}

func (r *Responder) cookieThreshold() int {
	switch {
	case r.cfg.CookieThreshold < 0:
		return 0
	case r.cfg.CookieThreshold == 0:
		return 10
	}
	return r.cfg.CookieThreshold
}

func (r *Responder) maxHalfOpen() int {
	if r.cfg.MaxHalfOpen == 0 {
		return 1000
	}
	return r.cfg.MaxHalfOpen
}

// sendPlain answers an IKE_SA_INIT request without state: a COOKIE, or an error notification.
func sendPlain(ep *endpoint, req *Message, to netip.AddrPort, n *NotifyPayload) {
	m := &Message{Header: Header{SPIi: req.SPIi, Exchange: ExchangeIKESAInit, Flags: flagResponse}, Payloads: []Payload{n}}
	if raw, err := m.Marshal(); err == nil {
		ep.c.send(to, [][]byte{raw})
	}
}

// saInit handles an IKE_SA_INIT request on an endpoint's goroutine.
func (r *Responder) saInit(ep *endpoint, raw []byte, m *Message, from netip.AddrPort) {
	r.stats.initRequests.Add(1)
	key := halfOpenKey{m.SPIi, from}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	if s := r.halfOpen[key]; s != nil {
		r.mu.Unlock()
		s.mu.Lock()
		var resp []byte
		if s.hs != nil && bytes.Equal(s.hs.initReq, raw) {
			resp = s.hs.initResp
		}
		s.mu.Unlock()
		if resp != nil {
			ep.c.send(from, [][]byte{resp}) // a retransmission: the same answer
		}
		return
	}
	n := len(r.halfOpen)
	r.mu.Unlock()

	ni := getNonce(m)
	if getSA(m) == nil || getKE(m) == nil || ni == nil {
		return // RFC 7296 §2.21.1: an unauthenticated malformed request is dropped
	}
	if n >= r.cookieThreshold() {
		c := m.Notify(NotifyCookie)
		if c == nil || !r.cookies.check(c.Data, ni.Data, from.Addr(), m.SPIi) {
			r.stats.cookiesSent.Add(1)
			sendPlain(ep, m, from, &NotifyPayload{Notify: NotifyCookie, Data: r.cookies.make(ni.Data, from.Addr(), m.SPIi)})
			return
		}
		r.stats.cookiesChecked.Add(1)
	}
	if n >= r.maxHalfOpen() {
		r.stats.dropped.Add(1)
		return
	}
	s, resp, errN := r.newHalfOpen(ep, raw, m, from)
	if errN != nil {
		sendPlain(ep, m, from, errN)
		return
	}
	r.mu.Lock()
	if r.closed || len(r.halfOpen) >= r.maxHalfOpen() {
		// Closed, or the other socket filled the table meanwhile: the limit holds.
		closed := r.closed
		r.mu.Unlock()
		if !closed {
			r.stats.dropped.Add(1)
		}
		s.hs.timer.Stop() // never published: nothing else refers to s
		return
	}
	r.halfOpen[key] = s
	if l := int64(len(r.halfOpen)); l > r.stats.halfOpenMax.Load() {
		r.stats.halfOpenMax.Store(l)
	}
	r.mu.Unlock()
	r.table.put(s.sa.spiR, s)
	ep.c.send(from, [][]byte{resp})
}

// newHalfOpen chooses a proposal, computes the keys and makes the IKE_SA_INIT answer.
func (r *Responder) newHalfOpen(ep *endpoint, raw []byte, m *Message, from netip.AddrPort) (*Session, []byte, *NotifyPayload) {
	cfg := r.cfg
	ke, ni := getKE(m), getNonce(m)
	suite, chosen, ok := chooseIKE(cfg.proposals(), getSA(m).Proposals, ke)
	if !ok {
		return nil, nil, &NotifyPayload{Notify: NotifyNoProposalChosen}
	}
	if ke.Group != suite.Group {
		return nil, nil, &NotifyPayload{Notify: NotifyInvalidKEPayload, Data: []byte{byte(suite.Group >> 8), byte(suite.Group)}}
	}
	k, err := generateDH(suite.Group)
	if err != nil {
		return nil, nil, &NotifyPayload{Notify: NotifyNoProposalChosen}
	}
	gir, err := k.shared(ke.Data)
	if err != nil {
		return nil, nil, &NotifyPayload{Notify: NotifyInvalidSyntax}
	}
	sa := &ikeSA{spiI: m.SPIi, spiR: newSPI(), suite: suite, ni: ni.Data, nr: make([]byte, 32)}
	rand.Read(sa.nr)
	seed, err := skeyseed(mustPRF(suite.PRF), gir, sa.ni, sa.nr)
	if err == nil {
		err = sa.install(seed)
	}
	if err != nil {
		return nil, nil, &NotifyPayload{Notify: NotifyNoProposalChosen}
	}
	sa.win.nextIn = 1
	s := newSession(cfg, r.table, ep, from, false)
	s.sa = sa
	hs := &responderHandshake{r: r, key: halfOpenKey{m.SPIi, from}, initReq: raw}
	if n := m.Notify(NotifySignatureHashAlgorithms); n != nil {
		hs.peerHashes = parseHashAlgorithms(n.Data)
	}
	ps := []Payload{&SAPayload{Proposals: []SAProposal{chosen}}, &KEPayload{Group: suite.Group, Data: k.public()},
		&NoncePayload{Data: sa.nr}}
	ps = append(ps, natNotifies(sa.spiI, sa.spiR, ep.c.local, from)...)
	if len(cfg.CAs) > 0 {
		ps = append(ps, &CertReqPayload{Encoding: certX509Signature, Data: certReqData(cfg.CAs)})
	}
	if m.Notify(NotifyIKEv2FragmentationSupported) != nil && cfg.fragmentSize() > 0 {
		sa.fragSize = cfg.fragmentSize()
		ps = append(ps, &NotifyPayload{Notify: NotifyIKEv2FragmentationSupported})
	}
	if cfg.SignatureMode != SignatureRFC4754 {
		ps = append(ps, &NotifyPayload{Notify: NotifySignatureHashAlgorithms, Data: hashAlgorithmsData()})
	}
	ps = append(ps, &NotifyPayload{Notify: NotifyChildlessIKEv2Supported})
	resp := &Message{Header: Header{SPIi: sa.spiI, SPIr: sa.spiR, Exchange: ExchangeIKESAInit, Flags: flagResponse}, Payloads: ps}
	b, err := resp.Marshal()
	if err != nil {
		return nil, nil, &NotifyPayload{Notify: NotifyNoProposalChosen}
	}
	hs.initResp = b
	s.natSupport, s.natLocal, s.natRemote = detectNAT(m, sa.spiI, sa.spiR, ep.c.local, from)
	s.hs = hs
	// A negotiation that does not finish in time is dropped (the negotiate timeout).
	hs.timer = time.AfterFunc(cfg.negotiateTimeout(), func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.state == StateNegotiating {
			s.terminate(errors.New("ike: negotiation timed out"))
		}
	})
	s.log.Debug("IKE_SA_INIT answered", "sa", sa, "suite", suite, "peer", from)
	return s, b, nil
}

// forget removes a negotiation from the half-open table.
func (r *Responder) forget(key halfOpenKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.halfOpen, key)
}

// responderState is where the responder's handshake is.
type responderState int

const (
	respInitDone    responderState = iota // IKE_SA_INIT answered; IKE_AUTH awaited
	respEAP                               // EAP conversation under way
	respEAPAuth                           // EAP succeeded; the initiator's MSK-keyed AUTH awaited
	respEstablished                       // done
	respFailed
)

func (s responderState) String() string {
	return [...]string{"init-done", "eap", "eap-auth", "established", "failed"}[s]
}

// responderHandshake is the responder's side of IKE_AUTH, driven by the initiator's requests
// (RFC 7296 §1.2, §2.16).
type responderHandshake struct {
	r          *Responder
	key        halfOpenKey
	state      responderState
	initReq    []byte // the initiator's IKE_SA_INIT request as received
	initResp   []byte // our answer as sent
	peerHashes []uint16
	timer      *time.Timer

	first *Message // the first IKE_AUTH request, whose SA, TS and CP are answered at the end
	idi   Identity
	idr   Identity
	eap   *eapAuthenticator
}

func (hs *responderHandshake) stop() {
	if hs.timer != nil {
		hs.timer.Stop()
	}
	hs.r.forget(hs.key)
}

// handle answers one IKE_AUTH request; callers hold s.mu. The returned function runs after
// the answer was sent.
func (hs *responderHandshake) handle(s *Session, sa *ikeSA, m *Message) ([]Payload, func()) {
	cfg := s.cfg
	failWith := func(n NotifyType, err error) ([]Payload, func()) {
		hs.state = respFailed
		s.log.Info("IKE_AUTH failed", "sa", sa, "peer", s.peer, "err", err)
		return []Payload{&NotifyPayload{Notify: n}}, func() { s.terminate(err) }
	}
	switch hs.state {
	case respInitDone:
		idp := getID(m, false)
		if idp == nil {
			return failWith(NotifyInvalidSyntax, syntaxErr("IKE_AUTH without IDi"))
		}
		hs.idi, hs.first = idp.ID, m
		hs.idr = cfg.localID(s.ep.c.local)
		if want := getID(m, true); want != nil && cfg.LocalID.Type != 0 && !want.ID.Equal(cfg.LocalID) {
			s.log.Debug("initiator asks for another identity", "want", want.ID, "we are", cfg.LocalID)
		}
		our, err := hs.ourAuthPayloads(s, sa)
		if err != nil {
			return failWith(NotifyAuthenticationFailed, err)
		}
		// The identity is checked before EAP too: there it is all RemoteID can constrain.
		if cfg.RemoteID != nil && !cfg.RemoteID.Equal(hs.idi) {
			return failWith(NotifyAuthenticationFailed, fmt.Errorf("%w: the initiator is %v, not %v", ErrAuthentication, hs.idi, *cfg.RemoteID))
		}
		a := getAuth(m)
		allowed := cfg.peerAuth(false)
		if a == nil {
			if allowed&AuthClassEAP == 0 {
				return failWith(NotifyAuthenticationFailed, fmt.Errorf("%w: the initiator sent no AUTH and we do no EAP", ErrAuthentication))
			}
			var req eapPacket
			hs.eap, req = newEAPAuthenticator(cfg.EAPServer)
			hs.state = respEAP
			return append(our, &EAPPayload{Data: req.marshal()}), nil
		}
		octets := signedOctets(sa.prf, hs.initReq, sa.nr, sa.keys.pi, hs.idi)
		cert, method, err := checkPeerAuth(cfg, allowed, sa.prf, a, certs(m), hs.idi, octets)
		if err != nil {
			return failWith(NotifyAuthenticationFailed, err)
		}
		s.peerCert, s.authMethod = cert, method
		return hs.establish(s, sa, our)
	case respEAP:
		e := getEAP(m)
		if e == nil {
			return failWith(NotifyInvalidSyntax, syntaxErr("IKE_AUTH without EAP during EAP"))
		}
		pkt, err := parseEAP(e.Data)
		if err != nil {
			return failWith(NotifyInvalidSyntax, err)
		}
		next, res, err := hs.eap.step(pkt)
		switch res {
		case eapOK:
			hs.state = respEAPAuth
		case eapFail:
			s.log.Info("EAP failed", "identity", hs.eap.identity, "err", err)
			if next.Code == eapFailure {
				hs.state = respFailed
				return []Payload{&EAPPayload{Data: next.marshal()}}, func() { s.terminate(err) }
			}
			// An MS-CHAPv2 failure request: the peer acknowledges it, then gets EAP-Failure.
		}
		return []Payload{&EAPPayload{Data: next.marshal()}}, nil
	case respEAPAuth:
		a := getAuth(m)
		if a == nil || a.Method != AuthPSK {
			return failWith(NotifyAuthenticationFailed, fmt.Errorf("%w: no MSK-keyed AUTH after EAP", ErrAuthentication))
		}
		if hs.eap.msk == nil {
			return failWith(NotifyAuthenticationFailed, fmt.Errorf("%w: EAP ended without an MSK", ErrAuthentication))
		}
		octets := signedOctets(sa.prf, hs.initReq, sa.nr, sa.keys.pi, hs.idi)
		if err := checkPSK(sa.prf, hs.eap.msk, octets, a.Data); err != nil {
			return failWith(NotifyAuthenticationFailed, err)
		}
		ours := signedOctets(sa.prf, hs.initResp, sa.ni, sa.keys.pr, hs.idr)
		s.eapIdentity, s.authMethod = hs.eap.identity, AuthPSK
		return hs.establish(s, sa, []Payload{&AuthPayload{Method: AuthPSK, Data: sharedKeyAuth(sa.prf, hs.eap.msk, ours)}})
	}
	return failWith(NotifyInvalidSyntax, fmt.Errorf("ike: IKE_AUTH in state %v", hs.state))
}

// ourAuthPayloads are IDr, our certificates and our AUTH.
func (hs *responderHandshake) ourAuthPayloads(s *Session, sa *ikeSA) ([]Payload, error) {
	cfg := s.cfg
	ps := []Payload{&IDPayload{Responder: true, ID: hs.idr}}
	if cfg.Signer != nil {
		for _, c := range cfg.Certificates {
			ps = append(ps, &CertPayload{Encoding: certX509Signature, Data: c})
		}
	}
	octets := signedOctets(sa.prf, hs.initResp, sa.ni, sa.keys.pr, hs.idr)
	a, err := ourAuth(cfg, hs.peerHashes, sa.prf, octets)
	if err != nil {
		return nil, err
	}
	return append(ps, a), nil
}

// establish completes the IKE SA: configuration, the Child SA asked for in the first IKE_AUTH
// request, and the session is handed to Accept.
func (hs *responderHandshake) establish(s *Session, sa *ikeSA, ps []Payload) ([]Payload, func()) {
	cfg := s.cfg
	s.localID, s.remoteID = hs.idr, hs.idi
	remoteTS := cfg.RemoteTS
	if cp := getCP(hs.first); wantsAddress(cp) {
		conf := Configuration{DNS: cfg.DNS, Subnets: cfg.SplitInclude}
		if cfg.Pool != nil {
			who := hs.idi.String()
			if s.eapIdentity != "" {
				who = s.eapIdentity
			}
			a, ok := cfg.Pool.acquire(who)
			if !ok {
				ps = append(ps, &NotifyPayload{Notify: NotifyInternalAddressFailure})
				hs.first = nil
			} else {
				conf.Address, s.lease = a, who
				remoteTS = []TrafficSelector{SelectorFromPrefix(netip.PrefixFrom(a, 32))}
			}
		}
		if hs.first != nil {
			s.conf = conf
			ps = append(ps, cpReply(conf))
		}
	}
	var child *ChildSA
	if hs.first != nil && getSA(hs.first) != nil {
		var cps []Payload
		localTS := cfg.LocalTS
		if len(localTS) == 0 && len(cfg.SplitInclude) > 0 {
			for _, p := range cfg.SplitInclude {
				localTS = append(localTS, SelectorFromPrefix(p))
			}
		}
		child, cps = s.respondChild(sa, hs.first, nil, sa.ni, sa.nr, localTS, remoteTS, false)
		ps = append(ps, cps...)
	}
	hs.state = respEstablished
	s.state = StateEstablished
	s.hs = nil
	hs.stop()
	if child != nil {
		s.children = append(s.children, child)
	}
	s.log.Info("IKE SA established", "sa", sa, "peer", s.remoteID, "eap", s.eapIdentity, "child", child)
	return ps, func() {
		select {
		case hs.r.accept <- s:
		default:
		}
		cfg.emit(Event{Kind: EventEstablished, Session: s})
		if child != nil {
			cfg.emit(Event{Kind: EventChildUp, Session: s, Child: child})
		}
	}
}
