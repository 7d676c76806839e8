package ike

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/cryptobyte"

	"tokenlab/middleware/prompt"
)

// eapPacket is one EAP message. RFC 3748 §4.
type eapPacket struct {
	Code uint8
	ID   uint8
	Type uint8 // requests and responses only
	Data []byte
}

func parseEAP(b []byte) (eapPacket, error) {
	var p eapPacket
	s := cryptobyte.String(b)
	var n uint16
	if !s.ReadUint8(&p.Code) || !s.ReadUint8(&p.ID) || !s.ReadUint16(&n) || int(n) != len(b) {
		return p, syntaxErr("EAP: length field does not match %d bytes", len(b))
	}
	switch p.Code {
	case eapRequest, eapResponse:
		if !s.ReadUint8(&p.Type) {
			return p, syntaxErr("EAP: no type")
		}
		p.Data = append([]byte(nil), s...)
	case eapSuccess, eapFailure:
		if !s.Empty() {
			return p, syntaxErr("EAP success or failure with data")
		}
	default:
		return p, syntaxErr("EAP: code %d", p.Code)
	}
	return p, nil
}

func (p eapPacket) marshal() []byte {
	n := 4
	if p.Code == eapRequest || p.Code == eapResponse {
		n += 1 + len(p.Data)
	}
	b := make([]byte, 0, n)
	b = append(b, p.Code, p.ID, byte(n>>8), byte(n))
	if n > 4 {
		b = append(b, p.Type)
		b = append(b, p.Data...)
	}
	return b
}

// EAP-MSCHAPv2 op codes (draft-kamath-pppext-eap-mschapv2 §2).
const (
	msChallenge = 1
	msResponse  = 2
	msSuccess   = 3
	msFailure   = 4
)

// msPacket builds EAP-MSCHAPv2 type data: OpCode, MS-CHAPv2-ID, MS-Length, value.
func msPacket(op, id uint8, value []byte) []byte {
	n := 4 + len(value)
	return append([]byte{op, id, byte(n >> 8), byte(n)}, value...)
}

// OTPMode is how a one-time code travels with EAP-MSCHAPv2.
type OTPMode int

// One-time code modes.
const (
	// OTPNone: the password alone.
	OTPNone OTPMode = iota
	// OTPAppend: the code is appended to the password, FortiGate's generic convention
	// (ike-ssh.md §2): the server tries the password with each code of the window.
	OTPAppend
	// OTPSeparate: after MS-CHAPv2 with the password, the server asks for the code in an
	// EAP-GTC round (RFC 3748 §5.6).
	OTPSeparate
	// OTPEither (server only): appended if it matches, else the password alone and a separate
	// round.
	OTPEither
)

// ParseOTPMode reads "none", "append", "separate" or "either".
func ParseOTPMode(s string) (OTPMode, error) {
	switch s {
	case "none", "":
		return OTPNone, nil
	case "append":
		return OTPAppend, nil
	case "separate":
		return OTPSeparate, nil
	case "either":
		return OTPEither, nil
	}
	return 0, fmt.Errorf("ike: OTP mode %q is not none, append, separate or either", s)
}

// EAPClient is the initiator's EAP-MSCHAPv2 identity: the user and where the password and the
// one-time code come from.
type EAPClient struct {
	Identity string
	// Password is a fixed password; nil means ask the Prompter.
	Password []byte
	// OTP says whether a one-time code is appended to the password (OTPAppend) or given on its
	// own when the server asks with EAP-GTC after MS-CHAPv2 (OTPSeparate); in the other modes
	// an EAP-GTC request ends the negotiation.
	OTP OTPMode
	// Code is a fixed one-time code (tests); nil means ask the Prompter.
	Code []byte
	// Prompter asks the person for the password and the code, as the middleware asks for a PIN.
	Prompter prompt.Prompter
}

// eapPeer runs the initiator's side of EAP.
type eapPeer struct {
	cfg      *EAPClient
	authChal []byte
	peerChal []byte
	ntResp   []byte
	password []byte
	msk      []byte
	serverOK bool
}

func (c *EAPClient) ask(ctx context.Context, what string, fixed []byte) ([]byte, error) {
	if fixed != nil {
		return append([]byte(nil), fixed...), nil
	}
	if c.Prompter == nil {
		return nil, fmt.Errorf("ike: EAP needs the %s of %q and there is no prompter", what, c.Identity)
	}
	v, err := c.Prompter.PIN(ctx, prompt.Request{Application: "ike", Token: "EAP " + c.Identity, Reason: what})
	if err != nil {
		return nil, fmt.Errorf("ike: asking for the %s: %w", what, err)
	}
	return v, nil
}

// respond answers one EAP request.
func (p *eapPeer) respond(ctx context.Context, req eapPacket) (eapPacket, error) {
	resp := eapPacket{Code: eapResponse, ID: req.ID, Type: req.Type}
	switch req.Type {
	case eapTypeIdentity:
		resp.Data = []byte(p.cfg.Identity)
		return resp, nil
	case eapTypeGTC:
		// The code goes only to a gateway that proved it knows the password, and only when
		// we expect to give it on its own.
		switch {
		case p.cfg.OTP != OTPSeparate:
			return resp, fmt.Errorf("%w: the EAP server asks for a one-time code in a separate round (EAP-GTC), and %q gives none that way", ErrAuthentication, p.cfg.Identity)
		case !p.serverOK:
			return resp, fmt.Errorf("%w: the EAP server asks for the one-time code before MS-CHAPv2 succeeded", ErrAuthentication)
		}
		code, err := p.cfg.ask(ctx, "one-time code", p.cfg.Code)
		if err != nil {
			return resp, err
		}
		resp.Data = code
		return resp, nil
	case eapTypeMSCHAPv2:
		return p.mschap(ctx, req)
	}
	// Anything else: a Nak that asks for MS-CHAPv2 (RFC 3748 §5.3.1).
	return eapPacket{Code: eapResponse, ID: req.ID, Type: eapTypeNak, Data: []byte{eapTypeMSCHAPv2}}, nil
}

func (p *eapPeer) mschap(ctx context.Context, req eapPacket) (eapPacket, error) {
	resp := eapPacket{Code: eapResponse, ID: req.ID, Type: eapTypeMSCHAPv2}
	s := cryptobyte.String(req.Data)
	var op, msID uint8
	var msLen uint16
	if !s.ReadUint8(&op) || !s.ReadUint8(&msID) || !s.ReadUint16(&msLen) {
		return resp, syntaxErr("EAP-MSCHAPv2: truncated")
	}
	switch op {
	case msChallenge:
		var size uint8
		if !s.ReadUint8(&size) || size != 16 || !s.ReadBytes(&p.authChal, 16) {
			return resp, syntaxErr("EAP-MSCHAPv2: malformed challenge")
		}
		pw, err := p.cfg.ask(ctx, "EAP password", p.cfg.Password)
		if err != nil {
			return resp, err
		}
		if p.cfg.OTP == OTPAppend {
			code, err := p.cfg.ask(ctx, "one-time code", p.cfg.Code)
			if err != nil {
				return resp, err
			}
			pw = append(pw, code...)
		}
		p.password = pw
		p.peerChal = make([]byte, 16)
		rand.Read(p.peerChal)
		p.ntResp = ntResponse(p.authChal, p.peerChal, p.cfg.Identity, pw)
		value := []byte{49}
		value = append(value, p.peerChal...)
		value = append(value, make([]byte, 8)...)
		value = append(value, p.ntResp...)
		value = append(value, 0) // flags
		value = append(value, p.cfg.Identity...)
		resp.Data = msPacket(msResponse, msID, value)
		return resp, nil
	case msSuccess:
		if p.ntResp == nil {
			return resp, errors.New("ike: EAP-MSCHAPv2 success before a response")
		}
		want := authenticatorResponse(p.password, p.ntResp, p.peerChal, p.authChal, p.cfg.Identity)
		msg := string(s)
		if len(msg) < len(want) || subtle.ConstantTimeCompare([]byte(msg[:len(want)]), []byte(want)) != 1 {
			return resp, fmt.Errorf("%w: the EAP server's MS-CHAPv2 authenticator response is wrong (it does not know the password)", ErrAuthentication)
		}
		p.serverOK = true
		p.msk = mschapMSK(p.password, p.ntResp)
		resp.Data = []byte{msSuccess}
		return resp, nil
	case msFailure:
		return resp, fmt.Errorf("%w: EAP-MSCHAPv2 failure: %s", ErrAuthentication, strings.TrimSpace(string(s)))
	}
	return resp, syntaxErr("EAP-MSCHAPv2: op code %d", op)
}

// EAPUser is a user the responder's EAP server knows.
type EAPUser struct {
	Password []byte
	// TOTP, when set, is the user's one-time code generator; the server's OTP mode says how
	// the code must come.
	TOTP *TOTP
}

// EAPServer is the responder's EAP-MSCHAPv2 configuration.
type EAPServer struct {
	Users map[string]EAPUser
	// OTP is how users with a TOTP give their code; OTPNone ignores TOTP.
	OTP OTPMode
	// Clock is the time of the one-time codes; nil is the system clock.
	Clock Clock

	mu   sync.Mutex
	used map[string]int64 // last accepted time step per user
}

// check reports users whose one-time codes cannot work.
func (s *EAPServer) check() error {
	for name, u := range s.Users {
		if u.TOTP == nil {
			continue
		}
		if err := u.TOTP.check(); err != nil {
			return fmt.Errorf("ike: EAP user %q: %w", name, err)
		}
	}
	return nil
}

func (s *EAPServer) now() time.Time {
	if s.Clock == nil {
		return time.Now()
	}
	return s.Clock.Now()
}

// markUsed accepts a time step for a user unless it was accepted before.
func (s *EAPServer) markUsed(user string, counter int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.used == nil {
		s.used = map[string]int64{}
	}
	if last, ok := s.used[user]; ok && counter <= last {
		return false
	}
	s.used[user] = counter
	return true
}

func (s *EAPServer) lastUsed(user string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if last, ok := s.used[user]; ok {
		return last
	}
	return -1 << 62
}

// eapAuthenticator runs the responder's side of one EAP conversation.
type eapAuthenticator struct {
	srv      *EAPServer
	state    eapState
	id       uint8
	identity string
	authChal []byte
	msk      []byte
	needCode bool
}

type eapState int

const (
	eapIdentitySent eapState = iota
	eapChallengeSent
	eapSuccessSent // MS-CHAPv2 success request sent, its acknowledgement awaited
	eapCodeAsked   // EAP-GTC request for the one-time code sent
	eapDone
	eapFailed
)

func (s eapState) String() string {
	return [...]string{"identity-sent", "challenge-sent", "success-sent", "code-asked", "done", "failed"}[s]
}

// eapResult is where a conversation is after a step.
type eapResult int

const (
	eapContinue eapResult = iota
	eapOK
	eapFail
)

func newEAPAuthenticator(srv *EAPServer) (*eapAuthenticator, eapPacket) {
	a := &eapAuthenticator{srv: srv}
	var b [1]byte
	rand.Read(b[:])
	a.id = b[0]
	return a, eapPacket{Code: eapRequest, ID: a.id, Type: eapTypeIdentity}
}

func (a *eapAuthenticator) request(typ uint8, data []byte) eapPacket {
	a.id++
	return eapPacket{Code: eapRequest, ID: a.id, Type: typ, Data: data}
}

// step takes the peer's response and returns the next request, or EAP success or failure.
func (a *eapAuthenticator) step(resp eapPacket) (eapPacket, eapResult, error) {
	fail := func(err error) (eapPacket, eapResult, error) {
		a.state = eapFailed
		a.id++
		return eapPacket{Code: eapFailure, ID: a.id}, eapFail, err
	}
	if resp.Code != eapResponse || resp.ID != a.id {
		return fail(fmt.Errorf("ike: EAP: unexpected packet code %d id %d (want response %d)", resp.Code, resp.ID, a.id))
	}
	switch a.state {
	case eapIdentitySent:
		if resp.Type != eapTypeIdentity || len(resp.Data) == 0 {
			return fail(errors.New("ike: EAP: no identity"))
		}
		a.identity = string(resp.Data)
		a.authChal = make([]byte, 16)
		rand.Read(a.authChal)
		a.state = eapChallengeSent
		value := append([]byte{16}, a.authChal...)
		value = append(value, "tokenlab"...)
		next := a.request(eapTypeMSCHAPv2, nil)
		next.Data = msPacket(msChallenge, next.ID, value)
		return next, eapContinue, nil
	case eapChallengeSent:
		return a.checkResponse(resp, fail)
	case eapSuccessSent:
		if resp.Type != eapTypeMSCHAPv2 || len(resp.Data) < 1 || resp.Data[0] != msSuccess {
			return fail(errors.New("ike: EAP-MSCHAPv2: the peer did not acknowledge success"))
		}
		if a.needCode {
			a.state = eapCodeAsked
			return a.request(eapTypeGTC, []byte("One-time code: ")), eapContinue, nil
		}
		a.state = eapDone
		return eapPacket{Code: eapSuccess, ID: a.id}, eapOK, nil
	case eapCodeAsked:
		if resp.Type != eapTypeGTC {
			return fail(errors.New("ike: EAP: the peer did not answer the one-time code request"))
		}
		u := a.srv.Users[a.identity]
		code := strings.TrimSpace(string(resp.Data))
		for _, c := range u.TOTP.candidates(a.srv.now(), a.srv.lastUsed(a.identity)) {
			if subtle.ConstantTimeCompare([]byte(c.code), []byte(code)) == 1 && a.srv.markUsed(a.identity, c.counter) {
				a.state = eapDone
				return eapPacket{Code: eapSuccess, ID: a.id}, eapOK, nil
			}
		}
		return fail(fmt.Errorf("%w: wrong or reused one-time code for %q", ErrAuthentication, a.identity))
	}
	return fail(fmt.Errorf("ike: EAP: response in state %v", a.state))
}

// checkResponse verifies the MS-CHAPv2 response: with the password, or with the password and
// each acceptable one-time code appended.
func (a *eapAuthenticator) checkResponse(resp eapPacket, fail func(error) (eapPacket, eapResult, error)) (eapPacket, eapResult, error) {
	if resp.Type != eapTypeMSCHAPv2 {
		return fail(fmt.Errorf("ike: EAP: the peer answered with type %d, not MS-CHAPv2", resp.Type))
	}
	s := cryptobyte.String(resp.Data)
	var op, msID, size uint8
	var msLen uint16
	var peerChal, ntResp []byte
	if !s.ReadUint8(&op) || op != msResponse || !s.ReadUint8(&msID) || !s.ReadUint16(&msLen) || !s.ReadUint8(&size) ||
		size != 49 || !s.ReadBytes(&peerChal, 16) || !s.Skip(8) || !s.ReadBytes(&ntResp, 24) || !s.Skip(1) {
		return fail(syntaxErr("EAP-MSCHAPv2: malformed response"))
	}
	name := string(s)
	u, ok := a.srv.Users[a.identity]
	if !ok {
		return fail(fmt.Errorf("%w: unknown EAP user %q", ErrAuthentication, a.identity))
	}
	try := func(pw []byte) bool {
		return subtle.ConstantTimeCompare(ntResponse(a.authChal, peerChal, name, pw), ntResp) == 1
	}
	var used []byte
	mode := a.srv.OTP
	if u.TOTP == nil {
		mode = OTPNone
	}
	if mode == OTPAppend || mode == OTPEither {
		for _, c := range u.TOTP.candidates(a.srv.now(), a.srv.lastUsed(a.identity)) {
			pw := append(append([]byte(nil), u.Password...), c.code...)
			if try(pw) && a.srv.markUsed(a.identity, c.counter) {
				used = pw
				break
			}
		}
	}
	if used == nil && mode != OTPAppend && try(u.Password) {
		used = u.Password
		a.needCode = mode == OTPSeparate || mode == OTPEither
	}
	if used == nil {
		a.state = eapFailed
		a.id++
		msg := fmt.Sprintf("E=691 R=0 C=%X V=3 M=Authentication failed", a.authChal)
		failure := eapPacket{Code: eapRequest, ID: a.id, Type: eapTypeMSCHAPv2, Data: msPacket(msFailure, msID, []byte(msg))}
		return failure, eapFail, fmt.Errorf("%w: EAP-MSCHAPv2 password (or one-time code) of %q is wrong", ErrAuthentication, a.identity)
	}
	a.msk = mschapMSK(used, ntResp)
	a.state = eapSuccessSent
	msg := authenticatorResponse(used, ntResp, peerChal, a.authChal, name) + " M=Welcome2tokenlab"
	next := a.request(eapTypeMSCHAPv2, nil)
	next.Data = msPacket(msSuccess, msID, []byte(msg))
	return next, eapContinue, nil
}
