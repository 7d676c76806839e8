package ike

import (
	"context"
	"crypto/elliptic"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// fixedClock is a Clock that does not move.
type fixedClock time.Time

func (c fixedClock) Now() time.Time { return time.Time(c) }

var testTOTP = &TOTP{Secret: []byte("12345678901234567890")}

// dialGateway is Dial with a short deadline.
func dialGateway(t *testing.T, cfg *Config, r *Responder) (*Session, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Dial(ctx, cfg, loopback, r.Addrs()[0])
	if err == nil {
		t.Cleanup(func() { s.Close(context.Background()) })
	}
	return s, err
}

// wantNotify reports whether err is the peer's error notification n.
func wantNotify(err error, n NotifyType) bool {
	var ne *NotifyError
	return errors.As(err, &ne) && ne.Notify == n
}

// TestEAPRequired: a gateway set up as a FortiGate dial-up (PSK for itself, EAP-MSCHAPv2 with
// an appended TOTP code for its users, `tokenlab ike listen --psk-file F --eap-users U`)
// refuses initiators that send an AUTH payload of their own, with the group PSK every user
// has or with a certificate under its CA: EAP and the one-time code cannot be skipped. With
// PeerAuth eap,pubkey certificates are let in, the PSK still is not.
func TestEAPRequired(t *testing.T) {
	psk := []byte("group-psk-every-client-has")
	now := fixedClock(time.Now())
	certInit, certResp := certPair(t, elliptic.P256(), elliptic.P256())
	gw, _ := ParseIdentity("gw.test")
	mallory, _ := ParseIdentity("mallory")
	alice, _ := ParseIdentity("alice")
	certInit.PSK = psk // to check the gateway's AUTH
	pskInit := &Config{PSK: psk, LocalID: mallory, RemoteID: &gw, Log: testLog(t)}
	eapInit := &Config{PSK: psk, LocalID: alice, RemoteID: &gw, Log: testLog(t), Childless: true,
		EAP: &EAPClient{Identity: "alice", Password: []byte("alice-password"), OTP: OTPAppend, Code: []byte(testTOTP.At(time.Time(now)))}}
	for _, tc := range []struct {
		name     string
		peerAuth AuthClass
		init     *Config
		ok       bool
	}{
		{"psk refused", 0, pskInit, false},
		{"certificate refused", 0, certInit, false},
		{"eap", 0, eapInit, true},
		{"eap,pubkey: certificate", AuthClassEAP | AuthClassPubkey, certInit, true},
		{"eap,pubkey: psk refused", AuthClassEAP | AuthClassPubkey, pskInit, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := &Config{PSK: psk, LocalID: gw, CAs: certResp.CAs, PeerAuth: tc.peerAuth, Log: testLog(t), Clock: now,
				EAPServer: &EAPServer{OTP: OTPAppend, Clock: now, Users: map[string]EAPUser{
					"alice": {Password: []byte("alice-password"), TOTP: testTOTP},
				}}}
			r := listen(t, resp)
			s, err := dialGateway(t, tc.init, r)
			switch {
			case tc.ok && err != nil:
				t.Fatalf("refused: %v", err)
			case !tc.ok && err == nil:
				t.Fatalf("IKE SA established for %v (EAP identity %q, peer auth %v): EAP-MSCHAPv2 and TOTP skipped",
					s.LocalID(), s.EAPIdentity(), s.PeerAuthMethod())
			case !tc.ok && !wantNotify(err, NotifyAuthenticationFailed):
				t.Errorf("refused with %v, want AUTHENTICATION_FAILED", err)
			}
		})
	}
}

// TestPeerAuthCheck: PeerAuth settings that cannot work are configuration errors.
func TestPeerAuthCheck(t *testing.T) {
	srv := &EAPServer{Users: map[string]EAPUser{"alice": {Password: []byte("pw")}}}
	for _, tc := range []struct {
		name      string
		cfg       Config
		initiator bool
		ok        bool
	}{
		{"eap by default", Config{PSK: []byte("k"), EAPServer: srv}, false, true},
		{"eap without a server", Config{PSK: []byte("k"), PeerAuth: AuthClassEAP}, false, false},
		{"a server, eap excluded", Config{PSK: []byte("k"), EAPServer: srv, PeerAuth: AuthClassPubkey}, false, false},
		{"psk without a PSK", Config{PSK: nil, EAP: &EAPClient{Identity: "a"}, PeerAuth: AuthClassPSK}, true, false},
		{"eap from a responder", Config{PSK: []byte("k"), PeerAuth: AuthClassEAP}, true, false},
		{"unknown class", Config{PSK: []byte("k"), PeerAuth: 0x80}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.check(tc.initiator); (err == nil) != tc.ok {
				t.Errorf("check: %v", err)
			}
		})
	}
	for _, s := range []string{"pubkey", "psk,eap", "pubkey, psk, eap"} {
		c, err := ParseAuthClass(s)
		if err != nil || c.String() != stringsNoSpace(s) {
			t.Errorf("ParseAuthClass(%q) = %v, %v", s, c, err)
		}
	}
	if _, err := ParseAuthClass("cert"); err == nil {
		t.Error("ParseAuthClass accepted cert")
	}
}

func stringsNoSpace(s string) string {
	out := []byte{}
	for i := 0; i < len(s); i++ {
		if s[i] != ' ' {
			out = append(out, s[i])
		}
	}
	return string(out)
}

// TestRemoteIDWithEAP: a responder's RemoteID holds on the EAP path too: an initiator whose
// IDi is another identity is refused before EAP starts.
func TestRemoteIDWithEAP(t *testing.T) {
	_, resp := certPair(t, elliptic.P256(), elliptic.P256())
	resp.EAPServer = &EAPServer{Users: map[string]EAPUser{"alice": {Password: []byte("alice-password")}}}
	gw, _ := ParseIdentity("gw.test")
	for _, tc := range []struct {
		remoteID, idi string
		ok            bool
	}{
		{"bob@test", "alice@test", false},
		{"alice@test", "alice@test", true},
	} {
		t.Run(tc.remoteID+" "+tc.idi, func(t *testing.T) {
			want, _ := ParseIdentity(tc.remoteID)
			idi, _ := ParseIdentity(tc.idi)
			cfg := *resp
			cfg.RemoteID = &want
			r := listen(t, &cfg)
			eap := &Config{LocalID: idi, RemoteID: &gw, CAs: resp.CAs, Childless: true, Log: testLog(t),
				EAP: &EAPClient{Identity: "alice", Password: []byte("alice-password")}}
			s, err := dialGateway(t, eap, r)
			switch {
			case tc.ok && err != nil:
				t.Fatalf("refused: %v", err)
			case !tc.ok && err == nil:
				t.Fatalf("responder with RemoteID %v accepted IDi %v over EAP", want, s.LocalID())
			case !tc.ok && !wantNotify(err, NotifyAuthenticationFailed):
				t.Errorf("refused with %v, want AUTHENTICATION_FAILED", err)
			}
		})
	}
}

// eapSkippingConn is a responder socket that turns the real responder into a rogue gateway
// that holds valid gateway credentials but not the user's password: its first IKE_AUTH answer
// carries EAP-Success instead of an EAP request, and its last one an AUTH keyed with SK_pr
// (what RFC 7296 §2.16 prescribes for EAP methods without an MSK).
type eapSkippingConn struct {
	*net.UDPConn
	r atomic.Pointer[Responder] // set once newResponder returns, before any datagram
}

func (c *eapSkippingConn) WriteToUDPAddrPort(b []byte, to netip.AddrPort) (int, error) {
	pre := 0
	if len(b) >= 4 && b[0]|b[1]|b[2]|b[3] == 0 {
		pre = 4
	}
	m, enc, err := ParseMessage(b[pre:])
	if err != nil || enc == nil || m.Exchange != ExchangeIKEAuth || !m.IsResponse() {
		return c.UDPConn.WriteToUDPAddrPort(b, to)
	}
	s := c.r.Load().table.get(m.SPIr) // the endpoint goroutine holds s.mu: we are inside receive
	sa, hs := s.sa, s.hs
	var ps []Payload
	switch m.MessageID {
	case 1: // IDr CERT AUTH EAP(Identity request) → IDr CERT AUTH EAP(Success)
		raw := b[pre:]
		plain, err := sa.out.open(raw[:len(raw)-len(enc.body)], enc.body)
		if err != nil {
			return 0, err
		}
		inner, _, err := unmarshalPayloads(plain, enc.next)
		if err != nil {
			return 0, err
		}
		for _, p := range inner {
			if _, ok := p.(*EAPPayload); ok {
				p = &EAPPayload{Data: eapPacket{Code: eapSuccess, ID: 1}.marshal()}
			}
			ps = append(ps, p)
		}
	case 2: // whatever the real responder says → AUTH keyed with SK_pr
		octets := signedOctets(sa.prf, hs.initResp, sa.ni, sa.keys.pr, hs.idr)
		ps = []Payload{&AuthPayload{Method: AuthPSK, Data: sharedKeyAuth(sa.prf, sa.keys.pr, octets)}}
	default:
		return c.UDPConn.WriteToUDPAddrPort(b, to)
	}
	msgs, err := sa.protect(ExchangeIKEAuth, true, m.MessageID, ps)
	if err != nil {
		return 0, err
	}
	return c.UDPConn.WriteToUDPAddrPort(append(b[:pre:pre], msgs[0]...), to)
}

// TestEAPSuccessWithoutMSCHAPv2: an initiator set up for EAP-MSCHAPv2 refuses a gateway that
// answers EAP-Success without running MS-CHAPv2, so never proves it knows the user's password
// (RFC 2759's authenticator response), and does not fall back to SK_pi and SK_pr for the AUTH
// payloads after EAP.
func TestEAPSuccessWithoutMSCHAPv2(t *testing.T) {
	init, resp := certPair(t, elliptic.P256(), elliptic.P256())
	resp.FragmentSize = -1
	resp.EAPServer = &EAPServer{Users: map[string]EAPUser{"alice": {Password: []byte("alice-password")}}}
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	wc := &eapSkippingConn{UDPConn: pc}
	r := newResponder(resp, []*conn{{pc: wc, local: pc.LocalAddr().(*net.UDPAddr).AddrPort()}})
	wc.r.Store(r)
	defer r.Close()

	alice, _ := ParseIdentity("alice")
	gw, _ := ParseIdentity("gw.test")
	eap := &Config{LocalID: alice, RemoteID: &gw, CAs: init.CAs, Childless: true, FragmentSize: -1, Log: init.Log,
		EAP: &EAPClient{Identity: "alice", Password: []byte("alice-password")}}
	s, err := dialGateway(t, eap, r)
	if err == nil {
		t.Fatalf("IKE SA established (EAP identity %q) though the gateway never ran MS-CHAPv2", s.EAPIdentity())
	}
	if !errors.Is(err, ErrAuthentication) {
		t.Errorf("refused with %v, want an authentication failure", err)
	}
}

// TestEAPOneTimeCode: the code travels appended to the password or in its own EAP-GTC round
// as the server asks; an initiator gives it in a GTC round only when set up for that, and only
// after MS-CHAPv2 succeeded (the gateway proved it knows the password).
func TestEAPOneTimeCode(t *testing.T) {
	now := fixedClock(time.Now())
	code := []byte(testTOTP.At(time.Time(now)))
	_, certResp := certPair(t, elliptic.P256(), elliptic.P256())
	gw, _ := ParseIdentity("gw.test")
	alice, _ := ParseIdentity("alice")
	for _, tc := range []struct {
		name       string
		server     OTPMode
		client     OTPMode
		clientCode []byte
		ok         bool
	}{
		{"append", OTPAppend, OTPAppend, code, true},
		{"append, wrong code", OTPAppend, OTPAppend, []byte("000000"), false},
		{"separate", OTPSeparate, OTPSeparate, code, true},
		{"separate, wrong code", OTPSeparate, OTPSeparate, []byte("000000"), false},
		{"either, separate", OTPEither, OTPSeparate, code, true},
		{"either, append", OTPEither, OTPAppend, code, true},
		{"separate asked, none given", OTPSeparate, OTPNone, code, false},
		{"separate asked, append given", OTPSeparate, OTPAppend, code, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := *certResp
			resp.EAPServer = &EAPServer{OTP: tc.server, Clock: now, Users: map[string]EAPUser{
				"alice": {Password: []byte("alice-password"), TOTP: testTOTP},
			}}
			r := listen(t, &resp)
			init := &Config{LocalID: alice, RemoteID: &gw, CAs: certResp.CAs, Childless: true, Log: testLog(t),
				EAP: &EAPClient{Identity: "alice", Password: []byte("alice-password"), OTP: tc.client, Code: tc.clientCode}}
			s, err := dialGateway(t, init, r)
			switch {
			case tc.ok && err != nil:
				t.Fatalf("refused: %v", err)
			case !tc.ok && err == nil:
				t.Fatalf("IKE SA established for %q", s.EAPIdentity())
			case !tc.ok && !errors.Is(err, ErrAuthentication):
				t.Errorf("refused with %v, want an authentication failure", err)
			}
		})
	}
}

// TestEAPPeerGTC: the initiator's EAP peer answers an EAP-GTC request with the one-time code
// only in the separate-round mode, and only after the MS-CHAPv2 authenticator response
// checked out.
func TestEAPPeerGTC(t *testing.T) {
	gtc := eapPacket{Code: eapRequest, ID: 7, Type: eapTypeGTC, Data: []byte("One-time code: ")}
	for _, tc := range []struct {
		name     string
		otp      OTPMode
		serverOK bool
		ok       bool
	}{
		{"separate, after MS-CHAPv2", OTPSeparate, true, true},
		{"separate, before MS-CHAPv2", OTPSeparate, false, false},
		{"append", OTPAppend, true, false},
		{"none", OTPNone, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &eapPeer{cfg: &EAPClient{Identity: "alice", OTP: tc.otp, Code: []byte("123456")}, serverOK: tc.serverOK}
			resp, err := p.respond(context.Background(), gtc)
			if tc.ok && (err != nil || string(resp.Data) != "123456") {
				t.Errorf("answer %q, %v", resp.Data, err)
			}
			if !tc.ok && err == nil {
				t.Errorf("the code went out: %q", resp.Data)
			}
		})
	}
}
