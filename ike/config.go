package ike

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Clock tells the time of one-time codes and certificate checks; middleware.FakeClock is one.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Logouter is what a token gives beyond its crypto.Signer: the end of the application's login,
// which the initiator calls when a tunnel closes (middleware.Token logs out or resets the card
// as its profile says).
type Logouter interface {
	Logout(ctx context.Context) error
}

// Config configures an initiator (Dial) or a responder (Listen). Fields marked for one role
// are ignored by the other.
type Config struct {
	// LocalID is our identity; zero means the certificate's subject DN, or our IP address.
	LocalID Identity
	// RemoteID, when set, is the identity the peer must have; initiators send it as IDr.
	RemoteID *Identity

	// Signer signs our AUTH payload; Certificates are our chain, ours first (DER).
	Signer       crypto.Signer
	Certificates [][]byte
	// SignatureMode picks RFC 7427 or RFC 4754 encoding for our signature.
	SignatureMode SignatureMode
	// PSK is our shared key (RFC 7296 §2.15): it authenticates us when there is no Signer. A
	// peer's shared-key AUTH is checked with it only when PeerAuth allows AuthClassPSK.
	PSK []byte
	// CAs validate the peer's certificate chain.
	CAs []*x509.Certificate

	// EAP (initiator) authenticates us with EAP-MSCHAPv2 instead of an AUTH payload of ours.
	EAP *EAPClient
	// EAPServer (responder) authenticates initiators with EAP-MSCHAPv2 (RFC 7296 §2.16). With
	// it, and PeerAuth zero, EAP is required: an initiator that sends an AUTH payload of its
	// own is refused.
	EAPServer *EAPServer
	// PeerAuth is how the peer may authenticate, strongSwan's remote auth constraint, apart
	// from how we do: zero means EAP alone for a responder with an EAPServer (the group PSK
	// of a dial-up gateway must not let a user skip EAP and the one-time code), else a
	// certificate under CAs or a shared-key AUTH with PSK.
	PeerAuth AuthClass

	// Proposals are the IKE SA proposals, offered in order or accepted by our preference;
	// nil means DefaultProposals.
	Proposals []Proposal
	// ChildProposals are the ESP proposals; nil means DefaultChildProposals.
	ChildProposals []Proposal
	// Childless (initiator) creates no Child SA with IKE_AUTH (RFC 6023).
	Childless bool
	// LocalTS and RemoteTS are our side's and the peer's traffic selectors: proposed by an
	// initiator, the bounds a responder narrows to. Empty: everything (0.0.0.0/0).
	LocalTS, RemoteTS []TrafficSelector

	// RequestConfig (initiator) asks for an internal address and DNS servers (CP).
	RequestConfig bool
	// Pool (responder) hands out internal addresses; DNS and SplitInclude go with them.
	Pool         *AddressPool
	DNS          []netip.Addr
	SplitInclude []netip.Prefix

	// FragmentSize is the largest IKE message sent once both sides support fragmentation
	// (RFC 7383); 0 means DefaultFragmentSize, negative disables fragmentation.
	FragmentSize int
	// NegotiateTimeout bounds a negotiation (1 s to 300 s); 0 means 30 s.
	NegotiateTimeout time.Duration
	// RetransmitBase is the first retransmission timeout; 0 means 1 s.
	RetransmitBase time.Duration
	// RetransmitTries is how often a request is sent again; 0 means 5.
	RetransmitTries int

	// CookieThreshold (responder) is the number of half-open IKE SAs from which cookies are
	// required (RFC 7296 §2.6); 0 means 10, negative means always.
	CookieThreshold int
	// MaxHalfOpen (responder) bounds half-open IKE SAs; beyond it IKE_SA_INIT is dropped.
	// 0 means 1000.
	MaxHalfOpen int

	// Token (initiator) is logged out when the IKE SA ends.
	Token Logouter
	// Clock is the time of one-time codes and certificate validity; nil is the system clock.
	Clock Clock
	// Record, when set, is given every message received: unprotected ones as they came,
	// protected ones after decryption and reassembly, re-framed as unprotected messages (the
	// IKE header, then the inner payloads as they came). It is for captures and fuzz seeds, is
	// called on the socket's goroutine, and must not keep b.
	Record func(b []byte)
	// Log receives protocol logs; nil discards them.
	Log *slog.Logger
	// Observer is told of each Event; it must not block.
	Observer func(Event)
}

// AuthClass is a set of ways for a peer to authenticate, named after strongSwan's auth classes.
type AuthClass uint8

// Auth classes.
const (
	AuthClassPubkey AuthClass = 1 << iota // a signature with a certificate under CAs
	AuthClassPSK                          // a shared-key AUTH with PSK
	AuthClassEAP                          // EAP-MSCHAPv2 with EAPServer (a responder's peer only)
)

var authClassNames = []struct {
	c    AuthClass
	name string
}{{AuthClassPubkey, "pubkey"}, {AuthClassPSK, "psk"}, {AuthClassEAP, "eap"}}

func (c AuthClass) String() string {
	var names []string
	for _, n := range authClassNames {
		if c&n.c != 0 {
			names = append(names, n.name)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ",")
}

// ParseAuthClass reads a comma-separated list of "pubkey", "psk" and "eap".
func ParseAuthClass(s string) (AuthClass, error) {
	var c AuthClass
	for _, f := range strings.Split(s, ",") {
		i := slices.IndexFunc(authClassNames, func(n struct {
			c    AuthClass
			name string
		}) bool {
			return n.name == strings.TrimSpace(f)
		})
		if i < 0 {
			return 0, fmt.Errorf("ike: %q is not pubkey, psk or eap", strings.TrimSpace(f))
		}
		c |= authClassNames[i].c
	}
	return c, nil
}

// EventKind is what happened to a session.
type EventKind int

// Event kinds.
const (
	EventEstablished     EventKind = iota + 1 // IKE_AUTH completed
	EventChildUp                              // a Child SA was created (also by a rekey)
	EventChildDown                            // a Child SA was deleted
	EventIKERekeyed                           // the IKE SA was replaced by a rekey
	EventLiveness                             // the peer checked we are alive (an empty INFORMATIONAL)
	EventClosed                               // the IKE SA is gone
	EventHandshakeFailed                      // a negotiation failed
)

var eventNames = [...]string{"", "established", "child-up", "child-down", "ike-rekeyed", "liveness", "closed", "handshake-failed"}

func (k EventKind) String() string {
	if int(k) < len(eventNames) {
		return eventNames[k]
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is something that happened to a session.
type Event struct {
	Kind    EventKind
	Session *Session
	Child   *ChildSA
	Err     error
}

func (c *Config) clock() Clock {
	if c.Clock == nil {
		return systemClock{}
	}
	return c.Clock
}

func (c *Config) log() *slog.Logger {
	if c.Log == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c.Log
}

func (c *Config) proposals() []Proposal {
	if c.Proposals == nil {
		return DefaultProposals()
	}
	return c.Proposals
}

func (c *Config) childProposals() []Proposal {
	if c.ChildProposals == nil {
		return DefaultChildProposals()
	}
	return c.ChildProposals
}

func (c *Config) negotiateTimeout() time.Duration {
	if c.NegotiateTimeout == 0 {
		return DefaultNegotiateTimeout
	}
	return c.NegotiateTimeout
}

func (c *Config) fragmentSize() int {
	switch {
	case c.FragmentSize < 0:
		return 0
	case c.FragmentSize == 0:
		return DefaultFragmentSize
	}
	return c.FragmentSize
}

func (c *Config) retransmission() retransmission {
	r := retransmission{base: c.RetransmitBase, tries: c.RetransmitTries}
	if r.base == 0 {
		r.base = defaultRetransmitBase
	}
	if r.tries == 0 {
		r.tries = defaultRetransmitTries
	}
	return r
}

// peerAuth is how the peer may authenticate.
func (c *Config) peerAuth(initiator bool) AuthClass {
	switch {
	case c.PeerAuth != 0:
		return c.PeerAuth
	case !initiator && c.EAPServer != nil:
		return AuthClassEAP
	}
	return AuthClassPubkey | AuthClassPSK
}

func (c *Config) emit(e Event) {
	if c.Observer != nil {
		c.Observer(e)
	}
}

// check reports a configuration that cannot work.
func (c *Config) check(initiator bool) error {
	if c.NegotiateTimeout != 0 && (c.NegotiateTimeout < MinNegotiateTimeout || c.NegotiateTimeout > MaxNegotiateTimeout) {
		return fmt.Errorf("ike: negotiate timeout %v is outside 1s..300s", c.NegotiateTimeout)
	}
	if c.FragmentSize > 0 && c.FragmentSize < minFragmentSize {
		return fmt.Errorf("ike: fragment size %d is below %d", c.FragmentSize, minFragmentSize)
	}
	if c.FragmentSize > maxMessageLen {
		return fmt.Errorf("ike: fragment size %d is above %d", c.FragmentSize, maxMessageLen)
	}
	for _, p := range c.proposals() {
		if len(p.Groups) == 0 {
			return fmt.Errorf("ike: proposal %v has no DH group", p)
		}
		for _, g := range p.Groups {
			if !groupSupported(g) {
				return fmt.Errorf("ike: proposal %v: DH group %d not supported", p, g)
			}
		}
	}
	switch {
	case initiator && c.EAP == nil && c.Signer == nil && c.PSK == nil:
		return errors.New("ike: the initiator needs a signer, a PSK or an EAP identity")
	case !initiator && c.Signer == nil && c.PSK == nil:
		return errors.New("ike: the responder needs a signer or a PSK")
	case c.Signer != nil && len(c.Certificates) == 0:
		return errors.New("ike: a signer needs its certificate")
	}
	if c.EAPServer != nil {
		if err := c.EAPServer.check(); err != nil {
			return err
		}
	}
	peer := c.peerAuth(initiator)
	switch {
	case peer&^(AuthClassPubkey|AuthClassPSK|AuthClassEAP) != 0:
		return fmt.Errorf("ike: peer auth %#x is not a set of auth classes", uint8(c.PeerAuth))
	case initiator && peer&AuthClassEAP != 0:
		return errors.New("ike: the responder cannot authenticate with EAP: peer auth eap is for responders")
	case !initiator && peer&AuthClassEAP != 0 && c.EAPServer == nil:
		return errors.New("ike: peer auth eap needs an EAP server")
	case !initiator && peer&AuthClassEAP == 0 && c.EAPServer != nil:
		return fmt.Errorf("ike: an EAP server, and peer auth %v excludes EAP", peer)
	case c.PeerAuth&AuthClassPSK != 0 && c.PSK == nil:
		return errors.New("ike: peer auth psk needs a PSK")
	}
	return nil
}

// localID is the identity we send.
func (c *Config) localID(local netip.AddrPort) Identity {
	if c.LocalID.Type != 0 {
		return c.LocalID
	}
	if len(c.Certificates) > 0 {
		if cert, err := x509.ParseCertificate(c.Certificates[0]); err == nil {
			return Identity{IDDERDN, cert.RawSubject}
		}
	}
	a := local.Addr().Unmap()
	if a.Is4() {
		b := a.As4()
		return Identity{IDIPv4Addr, b[:]}
	}
	b := a.As16()
	return Identity{IDIPv6Addr, b[:]}
}
