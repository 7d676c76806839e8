// Package middleware stands between applications and the card: each application gets a Token
// that asks for the PIN, caches it or not, and leaves the card logged in or not, as its Policy
// says — the way real middleware does — and reports every decision as an audit event.
package middleware

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"tokenlab/apdu"
	"tokenlab/middleware/pivclient"
	"tokenlab/middleware/prompt"
)

// Dialer makes a new connection to the card: in process (emulator.Card.Connect), through the
// daemon's socket, or through PC/SC.
type Dialer func(ctx context.Context) (apdu.Transactor, error)

// Options configure a Token.
type Options struct {
	// Application names who uses the token, in prompts and events ("ssh", "pkcs11 pid 1234").
	Application string
	Policy      Policy
	// Prompter asks the person for the PIN; nil means nobody can be asked.
	Prompter prompt.Prompter
	// Audit receives the events; nil discards them.
	Audit Audit
	// Clock is the time source of cache expiry and events; nil means the system clock.
	Clock Clock
	// Session is the logon session the application runs in; applications that share one share
	// single logon. nil gives the application a session of its own.
	Session *LogonSession
}

// Errors of the Token.
var (
	// ErrPINRequired means the operation needs a PIN and the policy allows no prompt or
	// nobody can be asked.
	ErrPINRequired = errors.New("middleware: PIN required")
	// ErrNoKey means the slot holds no key.
	ErrNoKey = errors.New("middleware: no key in slot")
)

// Info describes the card behind a Token.
type Info struct {
	Label         string // "YubiKey 12345678"
	Serial        uint32
	Version       [3]byte
	PINRetries    int // tries left, -1 if the card does not say
	PINMaxRetries int
	PINDefault    bool
}

// Key is a key slot of the card.
type Key struct {
	Slot        byte
	Algorithm   byte // pivclient.Alg*
	PINPolicy   byte // pivclient.PINPolicy*
	TouchPolicy byte
	Public      crypto.PublicKey
	Certificate *x509.Certificate // nil when the slot has none
	Generated   bool
}

// AlwaysAuthenticate reports whether each use needs a fresh PIN (PKCS#11
// CKA_ALWAYS_AUTHENTICATE) under policy p.
func (k Key) AlwaysAuthenticate(p Policy) bool {
	return k.PINPolicy == pivclient.PINPolicyAlways && !p.BypassPINAlways
}

// Token is one application's view of the card. Its methods are safe for concurrent use and run
// one at a time.
type Token struct {
	opts Options
	dial Dialer

	mu       sync.Mutex
	conn     apdu.Transactor
	c        *pivclient.Client
	info     Info
	keys     []Key // nil until read
	appPIN   *cachedPIN
	loggedIn bool
	active   time.Time // the login's last activity: the login itself, or a use of a key
	counted  string    // the token label under which the session counts this application logged in, "" if it does not
	closed   bool
}

// Open connects to the card and returns the application's Token. The card must hold a PIV
// application.
func Open(ctx context.Context, dial Dialer, opts Options) (*Token, error) {
	if opts.Audit == nil {
		opts.Audit = AuditFunc(func(Event) {})
	}
	if opts.Clock == nil {
		opts.Clock = systemClock{}
	}
	if opts.Session == nil {
		opts.Session = NewLogonSession()
	}
	t := &Token{opts: opts, dial: dial}
	if err := t.connect(ctx); err != nil {
		return nil, err
	}
	return t, nil
}

// connect makes a fresh connection and learns the card's identity.
func (t *Token) connect(ctx context.Context) error {
	conn, err := t.dial(ctx)
	if err != nil {
		return fmt.Errorf("middleware: connect: %w", err)
	}
	c := pivclient.New(conn)
	if _, err := c.Select(ctx); err != nil {
		conn.Close()
		return fmt.Errorf("middleware: %w", err)
	}
	v, err := c.Version(ctx)
	if err != nil {
		conn.Close()
		return fmt.Errorf("middleware: %w", err)
	}
	serial, err := c.Serial(ctx)
	if err != nil {
		conn.Close()
		return fmt.Errorf("middleware: %w", err)
	}
	t.conn, t.c = conn, c
	t.info = Info{Label: fmt.Sprintf("YubiKey %d", serial), Serial: serial, Version: v, PINRetries: -1}
	t.keys = nil
	return nil
}

func (t *Token) event(k EventKind, slot byte, reason string) {
	e := Event{Time: t.opts.Clock.Now(), Kind: k, Application: t.opts.Application, Token: t.info.Label, Reason: reason}
	if slot != 0 {
		e.Slot = fmt.Sprintf("%02x", slot)
	}
	t.opts.Audit.Record(e)
}

// Policy returns the token's policy.
func (t *Token) Policy() Policy { return t.opts.Policy }

// Label returns "YubiKey SERIAL".
func (t *Token) Label() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.info.Label
}

// LoggedIn reports whether the application is logged in.
func (t *Token) LoggedIn() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.loggedIn
}

// do runs f on the card inside a transaction, and turns a removal into the policy's reaction:
// the application's login ends, caches are cleared or kept, and the next call reconnects.
func (t *Token) do(ctx context.Context, f func() error) error {
	if t.closed {
		return errors.New("middleware: token closed")
	}
	if t.conn == nil {
		if err := t.reconnect(ctx); err != nil {
			return err
		}
	}
	err := t.conn.Begin(ctx)
	if err == nil {
		// Another host may have reset the card or selected another application since our last
		// transaction; as OpenSC does at the start of each transaction, make sure PIV is
		// selected. Re-selecting keeps the security status (SP 800-73-4 Pt 2 §3.1.1).
		if _, err = t.c.Select(ctx); err == nil {
			err = f()
		}
		if e := t.conn.End(apdu.LeaveCard); err == nil {
			err = e
		}
	}
	if errors.Is(err, apdu.ErrRemoved) {
		t.removed()
	}
	return err
}

// removed reacts to the card leaving the reader. The application stays logged in only when
// the policy re-verifies a re-inserted card with a PIN it still has; otherwise its login is
// over, and the logon session no longer counts it.
func (t *Token) removed() {
	t.event(EventRemoved, 0, "")
	t.conn.Close()
	t.conn, t.c, t.keys = nil, nil, nil
	t.setLoggedIn(t.loggedIn && t.opts.Policy.ReverifyOnReinsert && t.appPIN != nil)
	if t.opts.Policy.ClearOnRemoval {
		cleared := t.appPIN != nil
		t.appPIN.wipe()
		t.appPIN = nil
		if t.opts.Session.forget(t.info.Label) || cleared {
			t.event(EventCacheCleared, 0, "card removed")
		}
	}
}

// CardRemoved tells the token that its card left the reader, for callers that watch the reader
// (the PKCS#11 server's slot watcher, the lab): the policy's reaction to a removal happens now,
// as a middleware that watches the reader does it, not at the next use of the card.
func (t *Token) CardRemoved() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.closed && t.conn != nil {
		t.removed()
	}
}

// reconnect connects again after a removal; the same card may be back. With
// ReverifyOnReinsert, a PIN the application still has is presented without asking.
func (t *Token) reconnect(ctx context.Context) error {
	serial := t.info.Serial
	if err := t.connect(ctx); err != nil {
		return err
	}
	t.event(EventInserted, 0, "")
	if t.info.Serial != serial {
		t.setLoggedIn(false)
		t.appPIN.wipe()
		t.appPIN = nil
		return nil
	}
	if err := t.endIdleLogin(ctx); err != nil {
		return err
	}
	if t.loggedIn && t.appPIN != nil {
		pin := t.appPIN.use(t.opts.Clock.Now())
		defer wipe(pin)
		if err := t.conn.Begin(ctx); err != nil {
			return err
		}
		err := t.c.VerifyPIN(ctx, pin)
		t.conn.End(apdu.LeaveCard)
		if err != nil {
			t.setLoggedIn(false)
			t.event(EventVerifyFailed, 0, "re-verify after re-insertion")
			t.forgetRefused(0)
			return nil
		}
		t.event(EventCacheReuse, 0, "same card re-inserted: PIN presented again without asking")
		t.event(EventVerify, 0, "")
	}
	return nil
}

// setLoggedIn records the application's login, and counts the logged-in applications of the
// logon session on this card: the disconnect action of the last one to go is the one that
// matters to the card, and an application that never logged in does nothing to it. It
// reports whether this application was the last one logged in on the card.
func (t *Token) setLoggedIn(v bool) (last bool) {
	t.loggedIn = v
	if v {
		t.active = t.opts.Clock.Now()
	}
	switch {
	case v && t.counted == "":
		t.counted = t.info.Label
		t.opts.Session.enter(t.counted)
	case !v && t.counted != "":
		t.opts.Session.leave(t.counted)
		last = t.opts.Session.active(t.counted) == 0
		t.counted = ""
	}
	return last
}

// Info reads the card's identity and PIN counter.
func (t *Token) Info(ctx context.Context) (Info, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	err := t.do(ctx, func() error {
		if m, err := t.c.GetMetadata(ctx, 0x80); err == nil {
			t.info.PINRetries, t.info.PINMaxRetries, t.info.PINDefault = m.Retries, m.MaxRetries, m.IsDefault
			return nil
		}
		verified, n, err := t.c.PINStatus(ctx)
		if err == nil && !verified {
			t.info.PINRetries = n
		}
		return err
	})
	return t.info, err
}

// keySlots are the PIV key references a token exposes, in PKCS#11 order (CKA_ID 01, 02, ...).
var keySlots = []byte{0x9A, 0x9C, 0x9D, 0x9E,
	0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8B,
	0x8C, 0x8D, 0x8E, 0x8F, 0x90, 0x91, 0x92, 0x93, 0x94, 0x95}

// KeySlots returns the key references a token may expose, in order.
func KeySlots() []byte { return append([]byte(nil), keySlots...) }

// Keys returns the occupied key slots with their public keys, policies and certificates.
func (t *Token) Keys(ctx context.Context) ([]Key, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.loadKeys(ctx); err != nil {
		return nil, err
	}
	return append([]Key(nil), t.keys...), nil
}

func (t *Token) loadKeys(ctx context.Context) error {
	if t.keys != nil && t.conn != nil {
		return nil
	}
	return t.do(ctx, func() error {
		var keys []Key
		for _, s := range keySlots {
			k, ok, err := t.readKey(ctx, s)
			if err != nil {
				return err
			}
			if ok {
				keys = append(keys, k)
			}
		}
		t.keys = keys
		return nil
	})
}

// readKey learns a slot's key from GET METADATA (firmware 5.3) and its certificate; on older
// cards from the certificate alone, with the slot's default PIN policy.
func (t *Token) readKey(ctx context.Context, slot byte) (Key, bool, error) {
	k := Key{Slot: slot}
	cert, err := t.c.Certificate(ctx, slot)
	switch {
	case err == nil:
		k.Certificate = cert
	case errors.Is(err, apdu.ErrRemoved):
		return k, false, err
	}
	m, err := t.c.GetMetadata(ctx, slot)
	switch {
	case err == nil:
		k.Algorithm, k.PINPolicy, k.TouchPolicy, k.Public = m.Algorithm, m.PINPolicy, m.TouchPolicy, m.PublicKey
		if k.PINPolicy == pivclient.PINPolicyDefault {
			k.PINPolicy = defaultPINPolicy(slot) // what the card applies to a key generated with "default"
		}
		k.Generated = m.Origin == 1
		return k, true, nil
	case errors.Is(err, apdu.ErrRemoved):
		return k, false, err
	case errors.Is(err, apdu.ErrNotFound):
		return k, false, nil
	case errors.Is(err, apdu.ErrNotSupported) && k.Certificate != nil:
		k.Public = k.Certificate.PublicKey
		k.Algorithm = algorithmOf(k.Public)
		k.PINPolicy = defaultPINPolicy(slot)
		return k, k.Algorithm != 0, nil
	}
	return k, false, nil
}

func (t *Token) key(ctx context.Context, slot byte) (Key, error) {
	if err := t.loadKeys(ctx); err != nil {
		return Key{}, err
	}
	for _, k := range t.keys {
		if k.Slot == slot {
			return k, nil
		}
	}
	return Key{}, fmt.Errorf("%w %02x", ErrNoKey, slot)
}

// Login logs the application in. A non-nil pin is the application's (C_Login with a PIN); nil
// leaves it to the middleware, which, as its policy says, finds the card still verified,
// presents a cached PIN, or asks the person.
func (t *Token) Login(ctx context.Context, pin []byte) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if pin != nil {
		return t.do(ctx, func() error {
			t.event(EventApplicationPIN, 0, "login")
			if err := t.verify(ctx, 0, pin); err != nil {
				return err
			}
			t.remember(pin)
			t.setLoggedIn(true)
			return nil
		})
	}
	return t.login(ctx)
}

// login logs the application in as the policy decides. A prompt happens outside any card
// transaction, so that other applications can use the card while the person types.
func (t *Token) login(ctx context.Context) error {
	p := t.opts.Policy
	done := false
	err := t.do(ctx, func() error {
		if p.Scope == ScopeLogonSession {
			if err := t.endExpiredLogon(ctx); err != nil {
				return err
			}
		}
		if !p.TrustCardStatus {
			return nil
		}
		verified, _, err := t.c.PINStatus(ctx)
		if err != nil || !verified {
			return err
		}
		t.event(EventCardVerified, 0, "login: the card is still verified, nothing asked ("+p.Scope.String()+")")
		t.opts.Session.touch(t.info.Label, t.opts.Clock.Now())
		t.setLoggedIn(true)
		done = true
		return nil
	})
	if err != nil || done {
		return err
	}
	got, cached, err := t.obtainPIN(ctx, 0, "login", true)
	if err != nil {
		return err
	}
	defer wipe(got)
	return t.do(ctx, func() error {
		if err := t.verifyObtained(ctx, 0, got, cached, true); err != nil {
			return err
		}
		t.setLoggedIn(true)
		return nil
	})
}

// endExpiredLogon logs the card out when the logon session's single logon has run out (TTL or
// idle time): the next use needs the PIN again. It runs inside a transaction.
func (t *Token) endExpiredLogon(ctx context.Context) error {
	why := t.opts.Session.expire(t.info.Label, t.opts.Policy, t.opts.Clock.Now())
	if why == "" {
		return nil
	}
	t.event(EventPolicy, 0, "single logon ended: "+why)
	if err := t.c.Logout(ctx); err != nil {
		return err
	}
	t.event(EventCardLogout, 0, why)
	return nil
}

// endIdleLogin logs the application out when its login has gone unused for the policy's idle
// time, as if it had called Logout itself, so that the next use needs the PIN again: the
// re-authentication after inactivity of SP 800-63B §4.2.3. It applies to the scopes none and
// application; a logon session's single logon has a clock of its own (endExpiredLogon), which
// every application of the session keeps going.
func (t *Token) endIdleLogin(ctx context.Context) error {
	p := t.opts.Policy
	if !t.loggedIn || p.Idle <= 0 || p.Scope == ScopeLogonSession {
		return nil
	}
	if t.opts.Clock.Now().Sub(t.active) < p.Idle {
		return nil
	}
	why := fmt.Sprintf("login unused for %v", p.Idle)
	t.event(EventPolicy, 0, why+": the application is logged out")
	return t.logout(ctx, why, false)
}

// verifyObtained presents a PIN obtainPIN returned. When the card refuses a cached one, the
// cache goes: presenting it again would only spend the tries that are left. An entered PIN the
// card accepts is cached when keep says so.
func (t *Token) verifyObtained(ctx context.Context, slot byte, pin []byte, cached, keep bool) error {
	if err := t.verify(ctx, slot, pin); err != nil {
		if cached {
			t.forgetRefused(slot)
		}
		return err
	}
	if !cached && keep {
		t.remember(pin)
	}
	return nil
}

// forgetRefused wipes the cached PINs after the card refused one.
func (t *Token) forgetRefused(slot byte) {
	had := t.appPIN != nil
	t.appPIN.wipe()
	t.appPIN = nil
	if t.opts.Session.forget(t.info.Label) || had {
		t.event(EventCacheCleared, slot, "the card refused the cached PIN")
	}
}

// ContextLogin checks a PIN for one operation with the PIN-always key in slot (PKCS#11 C_Login
// with CKU_CONTEXT_SPECIFIC); nil asks the person now. The card checks the PIN at once, so a
// wrong one is reported here. It returns the PIN, for the caller to keep with its operation and
// give to it (SignWithPIN, DecryptWithPIN, ECDHWithPIN), which presents it again right before
// the key is used, as a PIN-always key requires; the caller wipes it when the operation ends.
func (t *Token) ContextLogin(ctx context.Context, slot byte, pin []byte) ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if pin == nil {
		got, _, err := t.obtainPIN(ctx, slot, "signature with a PIN-always key", false)
		if err != nil {
			return nil, err
		}
		pin = got
	} else {
		t.event(EventApplicationPIN, slot, "context-specific login")
		pin = append([]byte(nil), pin...)
	}
	if err := t.do(ctx, func() error { return t.verify(ctx, slot, pin) }); err != nil {
		wipe(pin)
		return nil, err
	}
	return pin, nil
}

// Logout ends the application's login, forgets its cached PIN, and does to the card what the
// policy does at disconnect.
func (t *Token) Logout(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.logout(ctx, "logout", false)
}

// logout ends the application's login; end says the application itself ends, which forgets
// its cached PIN whatever the policy.
func (t *Token) logout(ctx context.Context, why string, end bool) error {
	last := t.setLoggedIn(false)
	if t.appPIN != nil && (!t.opts.Policy.KeepCacheAtLogout || end) {
		t.appPIN.wipe()
		t.appPIN = nil
	}
	t.event(EventLogout, 0, why)
	if t.conn == nil || !last {
		// Another application of the session is logged in on this card, or this one never
		// was: resetting the card would log the others out behind their backs.
		return nil
	}
	switch t.opts.Policy.AtDisconnect {
	case DisconnectLogout:
		err := t.do(ctx, func() error { return t.c.Logout(ctx) })
		if err == nil {
			t.event(EventCardLogout, 0, why)
		}
		return err
	case DisconnectReset:
		err := t.conn.Begin(ctx)
		if err == nil {
			err = t.conn.End(apdu.ResetCard)
		}
		if errors.Is(err, apdu.ErrRemoved) {
			t.removed() // as do reacts to it
		}
		if err != nil {
			return err
		}
		t.event(EventCardReset, 0, why)
	}
	return nil
}

// Close ends the application: a logout as the policy has it, then the connection goes.
func (t *Token) Close(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	err := t.logout(ctx, "application closed", true)
	if t.conn != nil {
		t.conn.Close()
	}
	t.closed = true
	return err
}

// verify presents a PIN to the card.
func (t *Token) verify(ctx context.Context, slot byte, pin []byte) error {
	err := t.c.VerifyPIN(ctx, pin)
	var ae *pivclient.AuthError
	switch {
	case err == nil:
		t.event(EventVerify, slot, "")
		return nil
	case errors.As(err, &ae):
		t.info.PINRetries = ae.Retries
		t.event(EventVerifyFailed, slot, fmt.Sprintf("%d tries left", ae.Retries))
	case errors.Is(err, apdu.ErrBlocked):
		t.info.PINRetries = 0
		t.event(EventVerifyFailed, slot, "PIN blocked")
	}
	return err
}

// remember caches a PIN the card just accepted, in the policy's scope.
func (t *Token) remember(pin []byte) {
	now := t.opts.Clock.Now()
	switch t.opts.Policy.Scope {
	case ScopeApplication:
		t.appPIN.wipe()
		t.appPIN = newCachedPIN(pin, now)
	case ScopeLogonSession:
		t.appPIN.wipe()
		t.appPIN = newCachedPIN(pin, now)
		t.opts.Session.put(t.info.Label, newCachedPIN(pin, now))
	}
}

// obtainPIN finds a PIN for an operation: a cached one if the policy allows (never for a
// PIN-always key, unless the policy bypasses PIN-always), else it asks the person.
func (t *Token) obtainPIN(ctx context.Context, slot byte, reason string, cacheOK bool) (pin []byte, cached bool, err error) {
	p := t.opts.Policy
	now := t.opts.Clock.Now()
	if cacheOK {
		var expired string
		switch p.Scope {
		case ScopeApplication:
			if t.appPIN != nil {
				if expired = t.appPIN.expired(p, now); expired == "" {
					t.event(EventCacheReuse, slot, reason)
					return t.appPIN.use(now), true, nil
				}
				t.appPIN.wipe()
				t.appPIN = nil
			}
		case ScopeLogonSession:
			if pin, expired = t.opts.Session.take(t.info.Label, p, now); pin != nil {
				t.event(EventCacheReuse, slot, reason+" (single logon)")
				return pin, true, nil
			}
		}
		if expired != "" {
			t.event(EventPolicy, slot, expired+": asking again")
		}
	}
	if t.opts.Prompter == nil {
		return nil, false, fmt.Errorf("%w for %s and nobody to ask", ErrPINRequired, reason)
	}
	req := prompt.Request{Application: t.opts.Application, Token: t.info.Label, Reason: reason, Retries: t.info.PINRetries, Attempt: 1}
	if slot != 0 {
		req.Slot = fmt.Sprintf("%02x", slot)
	}
	t.event(EventPrompt, slot, reason)
	pin, err = t.opts.Prompter.PIN(ctx, req)
	if err != nil {
		return nil, false, fmt.Errorf("middleware: PIN prompt: %w", err)
	}
	return pin, false, nil
}

// pinForAlways returns the PIN for one operation with a PIN-always key, and whether it came
// from a cache: the application's context-specific PIN when it gave one, else the cached PIN if
// the policy bypasses PIN-always, else a prompt.
func (t *Token) pinForAlways(ctx context.Context, k Key, contextPIN []byte) ([]byte, bool, error) {
	if contextPIN != nil {
		t.event(EventApplicationPIN, k.Slot, "context-specific PIN, presented right before the operation")
		return append([]byte(nil), contextPIN...), false, nil
	}
	if t.opts.Policy.BypassPINAlways {
		t.event(EventPolicy, k.Slot, "PIN-always bypassed: cached PIN re-sent without asking (pin_cache_ignore_user_consent)")
		return t.obtainPIN(ctx, k.Slot, "PIN-always key", true)
	}
	return t.obtainPIN(ctx, k.Slot, "signature with a PIN-always key", false)
}

// operate runs a private-key operation on slot, satisfying the key's PIN policy as the
// middleware's policy allows:
//   - never: no PIN, no login (9E card authentication);
//   - once: the application logs in first (implicitly, as the policy allows, if it has not), and
//     when the card has lost the PIN since (a reset, another application's logout) it is
//     presented again from the cache or asked for;
//   - always: a PIN right before the operation, in the same transaction: contextPIN (the
//     application's context-specific login), else a prompt, or, with BypassPINAlways, the
//     cached PIN.
//
// The person is asked outside any card transaction; the PIN is then presented and the key used
// in one transaction, so nothing comes between them.
func (t *Token) operate(ctx context.Context, slot byte, kind EventKind, contextPIN []byte, op func(Key) ([]byte, error)) ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k, err := t.key(ctx, slot)
	if err != nil {
		return nil, err
	}
	needsPIN := k.PINPolicy != pivclient.PINPolicyNever
	if needsPIN {
		if err := t.endIdleLogin(ctx); err != nil {
			return nil, err
		}
	}
	var out []byte
	use := func() error {
		var err error
		if out, err = op(k); err == nil {
			t.event(kind, slot, "")
			now := t.opts.Clock.Now()
			if needsPIN {
				// The login, and the PIN it was made with, are in use: activity for their
				// idle time.
				t.active = now
				if t.appPIN != nil {
					t.appPIN.lastUsed = now
				}
			}
			if t.opts.Policy.Scope == ScopeLogonSession {
				t.opts.Session.touch(t.info.Label, now)
			}
		}
		return err
	}
	// withPIN presents pin and uses the key in one transaction. A PIN-always key's PIN is
	// cached only when it also logs the application in (one prompt, not two): a PIN entered
	// for one signature is not kept for others.
	withPIN := func(pin []byte, cached bool) error {
		defer wipe(pin)
		return t.do(ctx, func() error {
			keep := k.PINPolicy != pivclient.PINPolicyAlways || !t.loggedIn
			if err := t.verifyObtained(ctx, slot, pin, cached, keep); err != nil {
				return err
			}
			t.setLoggedIn(true)
			return use()
		})
	}

	switch k.PINPolicy {
	case pivclient.PINPolicyNever:
		return out, t.do(ctx, use)
	case pivclient.PINPolicyAlways:
		pin, cached, err := t.pinForAlways(ctx, k, contextPIN)
		if err != nil {
			return nil, err
		}
		return out, withPIN(pin, cached)
	}
	if !t.loggedIn {
		if err := t.login(ctx); err != nil {
			return nil, err
		}
	}
	err = t.do(ctx, func() error {
		if t.opts.Policy.Scope == ScopeLogonSession {
			// An application that stays logged in still loses the single logon when its
			// time is up (ActivClient logs the card off after 15 idle minutes).
			if err := t.endExpiredLogon(ctx); err != nil {
				return err
			}
		}
		return use()
	})
	if !errors.Is(err, apdu.ErrSecurityStatus) {
		return out, err
	}
	// The card lost the PIN (a reset, a power-off, another application's logout, the end of
	// a single logon).
	pin, cached, err := t.obtainPIN(ctx, slot, "the card needs the PIN again", true)
	if err != nil {
		return nil, err
	}
	return out, withPIN(pin, cached)
}

// Sign performs the raw signature operation of the key in slot: ECDSA over a digest (DER
// signature), Ed25519 over a message, or the RSA private-key operation on a padded block.
func (t *Token) Sign(ctx context.Context, slot byte, data []byte) ([]byte, error) {
	return t.SignWithPIN(ctx, slot, data, nil)
}

// SignWithPIN is Sign with the PIN of a context-specific login (ContextLogin) for a PIN-always
// key; nil is Sign.
func (t *Token) SignWithPIN(ctx context.Context, slot byte, data, contextPIN []byte) ([]byte, error) {
	return t.operate(ctx, slot, EventSign, contextPIN, func(k Key) ([]byte, error) {
		if k.Algorithm == pivclient.AlgX25519 {
			return nil, fmt.Errorf("middleware: the X25519 key in %02x cannot sign", slot)
		}
		return t.c.Authenticate(ctx, slot, k.Algorithm, data)
	})
}

// Decrypt performs the raw RSA private-key operation of the key in slot on a ciphertext block.
func (t *Token) Decrypt(ctx context.Context, slot byte, block []byte) ([]byte, error) {
	return t.DecryptWithPIN(ctx, slot, block, nil)
}

// DecryptWithPIN is Decrypt with the PIN of a context-specific login; nil is Decrypt.
func (t *Token) DecryptWithPIN(ctx context.Context, slot byte, block, contextPIN []byte) ([]byte, error) {
	return t.operate(ctx, slot, EventDecrypt, contextPIN, func(k Key) ([]byte, error) {
		if !isRSA(k.Algorithm) {
			return nil, fmt.Errorf("middleware: the key in %02x is not an RSA key", slot)
		}
		return t.c.Authenticate(ctx, slot, k.Algorithm, block)
	})
}

// ECDH returns the shared secret of the key in slot with a peer public key (an uncompressed
// point, or 32 bytes for X25519).
func (t *Token) ECDH(ctx context.Context, slot byte, peer []byte) ([]byte, error) {
	return t.ECDHWithPIN(ctx, slot, peer, nil)
}

// ECDHWithPIN is ECDH with the PIN of a context-specific login; nil is ECDH.
func (t *Token) ECDHWithPIN(ctx context.Context, slot byte, peer, contextPIN []byte) ([]byte, error) {
	return t.operate(ctx, slot, EventKeyAgreement, contextPIN, func(k Key) ([]byte, error) {
		return t.c.ECDH(ctx, slot, k.Algorithm, peer)
	})
}

func wipe(b []byte) {
	for i := range b {
		b[i] = 0
	}
}

func isRSA(alg byte) bool {
	switch alg {
	case pivclient.AlgRSA1024, pivclient.AlgRSA2048, pivclient.AlgRSA3072, pivclient.AlgRSA4096:
		return true
	}
	return false
}

func defaultPINPolicy(slot byte) byte {
	switch slot {
	case pivclient.SlotSignature:
		return pivclient.PINPolicyAlways
	case pivclient.SlotCardAuthentication:
		return pivclient.PINPolicyNever
	}
	return pivclient.PINPolicyOnce
}

// Management operations. The management key is given per call; nil uses the factory key when
// the card reports it still has it (as ykman does), and fails otherwise.

// managementKey authenticates with key (or the default) inside the current transaction.
func (t *Token) managementKey(ctx context.Context, key []byte) error {
	m, err := t.c.GetMetadata(ctx, pivclient.SlotCardManagement)
	alg := pivclient.AlgTDES
	if err == nil {
		alg = m.Algorithm
	}
	if key == nil {
		if err != nil || !m.IsDefault {
			return fmt.Errorf("%w: the card's management key is not the default one", ErrManagementKey)
		}
		key = defaultManagementKey
	}
	if err := t.c.AuthenticateManagementKey(ctx, alg, key); err != nil {
		return fmt.Errorf("%w: %v", ErrManagementKey, err)
	}
	return nil
}

// ErrManagementKey means the management key was wrong or missing.
var ErrManagementKey = errors.New("middleware: management key refused")

var defaultManagementKey = []byte{1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8}

// CheckManagementKey authenticates with the management key, to validate a security officer's
// login.
func (t *Token) CheckManagementKey(ctx context.Context, key []byte) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.do(ctx, func() error { return t.managementKey(ctx, key) })
}

// GenerateKey generates a key pair in slot with the given PIN and touch policies.
func (t *Token) GenerateKey(ctx context.Context, slot, alg, pinPolicy, touchPolicy byte, mgmKey []byte) (crypto.PublicKey, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var pub crypto.PublicKey
	err := t.do(ctx, func() error {
		if err := t.managementKey(ctx, mgmKey); err != nil {
			return err
		}
		var err error
		pub, err = t.c.GenerateKey(ctx, slot, alg, pinPolicy, touchPolicy)
		return err
	})
	t.keys = nil
	return pub, err
}

// SetCertificate stores a DER certificate for slot.
func (t *Token) SetCertificate(ctx context.Context, slot byte, der []byte, mgmKey []byte) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	err := t.do(ctx, func() error {
		if err := t.managementKey(ctx, mgmKey); err != nil {
			return err
		}
		return t.c.SetCertificate(ctx, slot, der)
	})
	t.keys = nil
	return err
}

// ChangePIN replaces the PIN. A PIN the middleware had cached is replaced by the new one: the
// old one would only spend tries.
func (t *Token) ChangePIN(ctx context.Context, old, next []byte) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.do(ctx, func() error {
		if err := t.c.ChangePIN(ctx, old, next); err != nil {
			return err
		}
		hadSession := t.opts.Session.forget(t.info.Label)
		if t.appPIN != nil || hadSession {
			t.remember(next)
		}
		return nil
	})
}

// Random returns n bytes from the card's random number generator: the management key's
// external-authentication challenge, as OpenSC uses it. It takes the card in short
// transactions, so that a large request does not keep other applications from it.
func (t *Token) Random(ctx context.Context, n int) ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	const perTransaction = 1024
	out := make([]byte, 0, n)
	for len(out) < n {
		err := t.do(ctx, func() error {
			for chunk := 0; len(out) < n && chunk < perTransaction; {
				b, err := t.c.Challenge(ctx)
				if err != nil {
					return err
				}
				b = b[:min(len(b), n-len(out))]
				out = append(out, b...)
				chunk += len(b)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}
