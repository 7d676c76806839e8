package ike

import (
	"context"
	"crypto/elliptic"
	"errors"
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
