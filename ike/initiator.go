package ike

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// initiatorState is where the initiator's handshake is.
type initiatorState int

const (
	initStart       initiatorState = iota
	initSAInitSent                 // IKE_SA_INIT request sent
	initAuthSent                   // first IKE_AUTH request sent
	initEAP                        // EAP conversation under way
	initEAPAuthSent                // AUTH keyed with the MSK sent
	initEstablished
	initFailed
)

func (s initiatorState) String() string {
	return [...]string{"start", "sa-init-sent", "auth-sent", "eap", "eap-auth-sent", "established", "failed"}[s]
}

// initiatorHandshake is the initiator's side of IKE_SA_INIT and IKE_AUTH (RFC 7296 §1.2,
// §2.16 with EAP), written as straight-line code like crypto/tls's client handshake, with its
// state recorded as it goes.
type initiatorHandshake struct {
	s     *Session
	cfg   *Config
	local netip.AddrPort
	state initiatorState

	sa         *ikeSA
	group      uint16
	dh         dhKey
	cookie     []byte
	initReq    []byte // our IKE_SA_INIT request as sent
	initResp   []byte // the responder's answer as received
	peerHashes []uint16
	childless  bool // the responder supports childless IKE SAs (RFC 6023)
}

// Dial opens a UDP socket on local (port 0: any), negotiates an IKE SA with the responder at
// remote, and returns the established session. The negotiation is bounded by ctx and by the
// configured negotiate timeout. A Child SA is created too unless cfg.Childless; its failure
// leaves the IKE SA up (RFC 7296 §1.2) and is logged.
func Dial(ctx context.Context, cfg *Config, local, remote netip.AddrPort) (*Session, error) {
	if err := cfg.check(true); err != nil {
		return nil, err
	}
	c, err := listenUDP(local)
	if err != nil {
		return nil, err
	}
	table := newSessionTable()
	ep := newEndpoint(c, table, cfg)
	go ep.run()
	s := newSession(cfg, table, ep, remote, true)
	s.ownConn = ep
	hs := &initiatorHandshake{s: s, cfg: cfg, local: c.local}
	hctx, cancel := context.WithTimeout(ctx, cfg.negotiateTimeout())
	defer cancel()
	if err := hs.run(hctx); err != nil {
		if ctx.Err() == nil && hctx.Err() != nil {
			err = fmt.Errorf("ike: negotiation with %v not done within the negotiate timeout (%v): %w", remote, cfg.negotiateTimeout(), err)
		}
		hs.state = initFailed
		s.mu.Lock()
		s.terminate(err)
		s.mu.Unlock()
		<-s.done
		return nil, err
	}
	return s, nil
}

func (hs *initiatorHandshake) run(ctx context.Context) error {
	s, cfg := hs.s, hs.cfg
	hs.sa = &ikeSA{spiI: newSPI(), initiator: true}
	s.mu.Lock()
	s.sa = hs.sa
	s.mu.Unlock()
	s.table.put(hs.sa.spiI, s)
	hs.sa.ni = make([]byte, 32)
	rand.Read(hs.sa.ni)
	hs.group = cfg.proposals()[0].Groups[0]

	resp, err := hs.saInit(ctx)
	if err != nil {
		return err
	}
	if err := hs.processSAInit(resp); err != nil {
		return err
	}
	return hs.auth(ctx)
}

// saInit sends IKE_SA_INIT until the responder answers with an SA, following COOKIE and
// INVALID_KE_PAYLOAD answers (RFC 7296 §2.6, §1.2).
func (hs *initiatorHandshake) saInit(ctx context.Context) (*Message, error) {
	s, cfg, sa := hs.s, hs.cfg, hs.sa
	for attempt := 0; attempt < 4; attempt++ {
		if hs.dh == nil {
			var err error
			if hs.dh, err = generateDH(hs.group); err != nil {
				return nil, err
			}
		}
		var ps []Payload
		if hs.cookie != nil {
			ps = append(ps, &NotifyPayload{Notify: NotifyCookie, Data: hs.cookie})
		}
		var props []SAProposal
		for i, p := range cfg.proposals() {
			props = append(props, p.saProposal(uint8(i+1), ProtocolIKE, nil))
		}
		ps = append(ps, &SAPayload{Proposals: props}, &KEPayload{Group: hs.group, Data: hs.dh.public()},
			&NoncePayload{Data: sa.ni})
		ps = append(ps, natNotifies(sa.spiI, 0, hs.local, s.peer)...)
		if cfg.fragmentSize() > 0 {
			ps = append(ps, &NotifyPayload{Notify: NotifyIKEv2FragmentationSupported})
		}
		if cfg.SignatureMode != SignatureRFC4754 {
			// Without it, the peer signs with RFC 4754 (or RFC 7296's RSA) too.
			ps = append(ps, &NotifyPayload{Notify: NotifySignatureHashAlgorithms, Data: hashAlgorithmsData()})
		}
		msg := &Message{Header: Header{SPIi: sa.spiI, Exchange: ExchangeIKESAInit, Flags: flagInitiator}, Payloads: ps}
		raw, err := msg.Marshal()
		if err != nil {
			return nil, err
		}
		hs.initReq = raw
		hs.state = initSAInitSent
		p := &pending{sa: sa, id: 0, exch: ExchangeIKESAInit, plain: true, ch: make(chan *Message, 1)}
		s.mu.Lock()
		s.pending = p
		s.mu.Unlock()
		resp, err := s.await(ctx, p, [][]byte{raw})
		if err != nil {
			return nil, fmt.Errorf("ike: IKE_SA_INIT with %v: %w", s.peer, err)
		}
		if n := resp.Notify(NotifyCookie); n != nil {
			if len(n.Data) < 1 || len(n.Data) > 64 {
				return nil, fmt.Errorf("ike: IKE_SA_INIT: %w", syntaxErr("COOKIE of %d bytes", len(n.Data)))
			}
			s.log.Debug("responder asks for a cookie")
			hs.cookie = n.Data
			continue
		}
		if n := resp.Notify(NotifyInvalidKEPayload); n != nil && len(n.Data) == 2 {
			g := binary.BigEndian.Uint16(n.Data)
			if !slices.ContainsFunc(cfg.proposals(), func(p Proposal) bool { return slices.Contains(p.Groups, g) }) || g == hs.group {
				return nil, fmt.Errorf("ike: IKE_SA_INIT: the responder wants DH group %d, which we did not offer", g)
			}
			s.log.Debug("responder wants another DH group", "group", g)
			hs.group, hs.dh = g, nil
			continue
		}
		if n := resp.ErrorNotify(); n != nil {
			return nil, fmt.Errorf("ike: IKE_SA_INIT: %w", &NotifyError{n.Notify, n.Data})
		}
		return resp, nil
	}
	return nil, errors.New("ike: IKE_SA_INIT: too many COOKIE or INVALID_KE_PAYLOAD answers")
}

// processSAInit checks the responder's choice and derives the IKE SA's keys.
func (hs *initiatorHandshake) processSAInit(resp *Message) error {
	s, cfg, sa := hs.s, hs.cfg, hs.sa
	sap, ke, nr := getSA(resp), getKE(resp), getNonce(resp)
	if sap == nil || ke == nil || nr == nil || resp.SPIr == 0 {
		return fmt.Errorf("ike: IKE_SA_INIT answer: %w", syntaxErr("lacks SA, KE, Nr or the responder's SPI"))
	}
	if len(sap.Proposals) != 1 {
		return fmt.Errorf("ike: IKE_SA_INIT answer: %w", syntaxErr("%d proposals chosen", len(sap.Proposals)))
	}
	suite, err := suiteOf(sap.Proposals[0])
	if err != nil {
		return err
	}
	if _, _, ok := choose(cfg.proposals(), sap.Proposals, ProtocolIKE); !ok || suite.Group != hs.group || ke.Group != hs.group {
		return fmt.Errorf("ike: IKE_SA_INIT answer: the responder chose %v, not what we offered", suite)
	}
	gir, err := hs.dh.shared(ke.Data)
	if err != nil {
		return err
	}
	sa.spiR, sa.suite, sa.nr = resp.SPIr, suite, nr.Data
	seed, err := skeyseed(mustPRF(suite.PRF), gir, sa.ni, sa.nr)
	if err != nil {
		return err
	}
	if err := sa.install(seed); err != nil {
		return err
	}
	sa.win.nextOut = 1
	hs.initResp = resp.raw
	if resp.Notify(NotifyIKEv2FragmentationSupported) != nil {
		sa.fragSize = cfg.fragmentSize()
	}
	if n := resp.Notify(NotifySignatureHashAlgorithms); n != nil {
		hs.peerHashes = parseHashAlgorithms(n.Data)
	}
	hs.childless = resp.Notify(NotifyChildlessIKEv2Supported) != nil
	s.mu.Lock()
	s.natSupport, s.natLocal, s.natRemote = detectNAT(resp, sa.spiI, sa.spiR, hs.local, s.peer)
	s.mu.Unlock()
	s.log.Info("IKE_SA_INIT done", "sa", sa, "suite", suite, "fragmentation", sa.fragSize > 0)
	return nil
}

func mustPRF(id uint16) prf {
	p, _ := newPRF(id)
	return p
}

// auth runs IKE_AUTH, with the EAP rounds when configured.
func (hs *initiatorHandshake) auth(ctx context.Context) error {
	s, cfg, sa := hs.s, hs.cfg, hs.sa
	idi := cfg.localID(hs.local)
	ps := []Payload{&IDPayload{ID: idi}}
	if cfg.EAP == nil && cfg.Signer != nil {
		for _, c := range cfg.Certificates {
			ps = append(ps, &CertPayload{Encoding: certX509Signature, Data: c})
		}
	}
	ps = append(ps, &NotifyPayload{Notify: NotifyInitialContact})
	if len(cfg.CAs) > 0 {
		ps = append(ps, &CertReqPayload{Encoding: certX509Signature, Data: certReqData(cfg.CAs)})
	}
	if cfg.RemoteID != nil {
		ps = append(ps, &IDPayload{Responder: true, ID: *cfg.RemoteID})
	}
	if cfg.EAP == nil {
		octets := signedOctets(sa.prf, hs.initReq, sa.nr, sa.keys.pi, idi)
		a, err := ourAuth(cfg, hs.peerHashes, sa.prf, octets)
		if err != nil {
			return err
		}
		ps = append(ps, a)
	}
	if cfg.RequestConfig {
		ps = append(ps, cpRequest())
	}
	var child *childRequest
	if cfg.Childless {
		if !hs.childless {
			return errors.New("ike: a childless IKE SA was asked for, and the responder does not support them (RFC 6023)")
		}
	} else {
		var cps []Payload
		var err error
		if child, cps, err = s.newChildRequest(cfg.LocalTS, cfg.RemoteTS, 0); err != nil {
			return err
		}
		ps = append(ps, cps...)
	}
	hs.state = initAuthSent
	m, err := s.roundTrip(ctx, sa, ExchangeIKEAuth, ps)
	if err != nil {
		return fmt.Errorf("ike: IKE_AUTH: %w", err)
	}
	if getAuth(m) == nil {
		if n := m.ErrorNotify(); n != nil {
			return fmt.Errorf("ike: IKE_AUTH: %w", &NotifyError{n.Notify, n.Data})
		}
		return fmt.Errorf("ike: IKE_AUTH answer: %w", syntaxErr("no AUTH payload"))
	}
	idr := getID(m, true)
	if idr == nil {
		return fmt.Errorf("ike: IKE_AUTH answer: %w", syntaxErr("no IDr"))
	}
	if cfg.RemoteID != nil && !cfg.RemoteID.Equal(idr.ID) {
		return fmt.Errorf("%w: the responder is %v, not %v", ErrAuthentication, idr.ID, *cfg.RemoteID)
	}
	octets := signedOctets(sa.prf, hs.initResp, sa.ni, sa.keys.pr, idr.ID)
	peerCert, method, err := checkPeerAuth(cfg, cfg.peerAuth(true), sa.prf, getAuth(m), certs(m), idr.ID, octets)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.localID, s.remoteID, s.peerCert, s.authMethod = idi, idr.ID, peerCert, method
	s.mu.Unlock()
	if cfg.EAP != nil {
		if m, err = hs.eap(ctx, m, idi, idr.ID); err != nil {
			return err
		}
	}
	hs.establish(m, child)
	return nil
}

// eap runs the EAP conversation that the responder's first IKE_AUTH answer opened, then the
// closing AUTH exchange keyed with the MSK (RFC 7296 §2.16).
func (hs *initiatorHandshake) eap(ctx context.Context, m *Message, idi, idr Identity) (*Message, error) {
	s, cfg, sa := hs.s, hs.cfg, hs.sa
	hs.state = initEAP
	peer := &eapPeer{cfg: cfg.EAP}
	for rounds := 0; ; rounds++ {
		if rounds > 10 {
			return nil, errors.New("ike: EAP: more than 10 rounds")
		}
		e := getEAP(m)
		if e == nil {
			if n := m.ErrorNotify(); n != nil {
				return nil, fmt.Errorf("ike: EAP: %w", &NotifyError{n.Notify, n.Data})
			}
			return nil, fmt.Errorf("ike: EAP: %w", syntaxErr("IKE_AUTH answer without EAP payload"))
		}
		pkt, err := parseEAP(e.Data)
		if err != nil {
			return nil, err
		}
		if pkt.Code == eapSuccess {
			// RFC 2759 is mutual: a gateway that has not proved it knows the password (its
			// authenticator response) does not get to say success, and there is no MSK.
			if !peer.serverOK {
				return nil, fmt.Errorf("%w: EAP success from the responder before MS-CHAPv2 proved it knows the password", ErrAuthentication)
			}
			break
		}
		if pkt.Code == eapFailure {
			return nil, fmt.Errorf("%w: EAP failure from the responder", ErrAuthentication)
		}
		if pkt.Code != eapRequest {
			return nil, fmt.Errorf("ike: EAP: %w", syntaxErr("code %d from the responder", pkt.Code))
		}
		resp, err := peer.respond(ctx, pkt)
		if err != nil {
			return nil, err
		}
		if m, err = s.roundTrip(ctx, sa, ExchangeIKEAuth, []Payload{&EAPPayload{Data: resp.marshal()}}); err != nil {
			return nil, fmt.Errorf("ike: EAP: %w", err)
		}
	}
	// MS-CHAPv2 always makes an MSK; the AUTH payloads after EAP are keyed with it, never with
	// SK_pi and SK_pr (RFC 7296 §2.16's rule for methods without one).
	if peer.msk == nil {
		return nil, fmt.Errorf("%w: EAP ended without an MSK", ErrAuthentication)
	}
	hs.state = initEAPAuthSent
	octets := signedOctets(sa.prf, hs.initReq, sa.nr, sa.keys.pi, idi)
	m, err := s.roundTrip(ctx, sa, ExchangeIKEAuth, []Payload{&AuthPayload{Method: AuthPSK, Data: sharedKeyAuth(sa.prf, peer.msk, octets)}})
	if err != nil {
		return nil, fmt.Errorf("ike: IKE_AUTH after EAP: %w", err)
	}
	a := getAuth(m)
	if a == nil {
		if n := m.ErrorNotify(); n != nil {
			return nil, fmt.Errorf("ike: IKE_AUTH after EAP: %w", &NotifyError{n.Notify, n.Data})
		}
		return nil, fmt.Errorf("ike: IKE_AUTH after EAP: %w", syntaxErr("no AUTH payload"))
	}
	if a.Method != AuthPSK {
		return nil, fmt.Errorf("%w: the responder's AUTH after EAP is %v, not keyed with the MSK", ErrAuthentication, a.Method)
	}
	if err := checkPSK(sa.prf, peer.msk, signedOctets(sa.prf, hs.initResp, sa.ni, sa.keys.pr, idr), a.Data); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.eapIdentity = cfg.EAP.Identity
	s.mu.Unlock()
	return m, nil
}

// establish records the IKE_AUTH answer's configuration and Child SA.
func (hs *initiatorHandshake) establish(m *Message, child *childRequest) {
	s, sa := hs.s, hs.sa
	s.mu.Lock()
	if cp := getCP(m); cp != nil && cp.CFGType == cfgReply {
		s.conf = parseCPReply(cp)
	}
	var c *ChildSA
	if child != nil {
		var err error
		if c, err = s.childFromAnswer(sa, child, m, sa.ni, sa.nr); err != nil {
			s.log.Warn("IKE SA up without a Child SA", "err", err)
		} else {
			s.children = append(s.children, c)
		}
	}
	s.state = StateEstablished
	hs.state = initEstablished
	s.mu.Unlock()
	s.log.Info("IKE SA established", "sa", sa, "peer", s.remoteID, "config", s.conf)
	s.cfg.emit(Event{Kind: EventEstablished, Session: s})
	if c != nil {
		s.cfg.emit(Event{Kind: EventChildUp, Session: s, Child: c})
	}
}

// ourAuth makes our AUTH payload: a signature, or a shared-key MIC.
func ourAuth(cfg *Config, peerHashes []uint16, p prf, octets []byte) (*AuthPayload, error) {
	if cfg.Signer != nil {
		return sign(cfg.Signer, cfg.SignatureMode, peerHashes, octets)
	}
	if cfg.PSK != nil {
		return &AuthPayload{Method: AuthPSK, Data: sharedKeyAuth(p, cfg.PSK, octets)}, nil
	}
	return nil, errors.New("ike: nothing to authenticate with (no signer, no PSK)")
}

// checkPeerAuth verifies the peer's AUTH payload, made in one of the allowed ways: a shared
// key, or a signature with a certificate that chains to our CAs and vouches for the peer's
// identity.
func checkPeerAuth(cfg *Config, allowed AuthClass, p prf, a *AuthPayload, ders [][]byte, id Identity, octets []byte) (*x509.Certificate, AuthMethod, error) {
	if a.Method == AuthPSK {
		switch {
		case allowed&AuthClassPSK == 0:
			return nil, 0, fmt.Errorf("%w: the peer authenticates with a shared key, and it must use %v", ErrAuthentication, allowed)
		case cfg.PSK == nil:
			return nil, 0, fmt.Errorf("%w: the peer authenticates with a shared key and we have none", ErrAuthentication)
		}
		return nil, AuthPSK, checkPSK(p, cfg.PSK, octets, a.Data)
	}
	if allowed&AuthClassPubkey == 0 {
		return nil, 0, fmt.Errorf("%w: the peer authenticates with a %v signature, and it must use %v", ErrAuthentication, a.Method, allowed)
	}
	pool := x509.NewCertPool()
	for _, c := range cfg.CAs {
		pool.AddCert(c)
	}
	var roots *x509.CertPool
	if len(cfg.CAs) > 0 {
		roots = pool
	}
	cert, err := verifyChain(ders, roots, id, cfg.clock().Now())
	if err != nil {
		return nil, 0, err
	}
	if err := verify(cert.PublicKey, a, octets); err != nil {
		return nil, 0, err
	}
	return cert, a.Method, nil
}
