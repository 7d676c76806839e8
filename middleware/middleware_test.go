package middleware

import (
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"tokenlab/apdu"
	"tokenlab/emulator/piv"
	"tokenlab/emulator/yubikey"
	"tokenlab/middleware/pivclient"
	"tokenlab/middleware/prompt"
)

// lab is a card with keys under each PIN policy, a logon session, a fake clock and an audit
// recorder, in which applications open tokens.
type lab struct {
	t       *testing.T
	dev     *yubikey.Device
	session *LogonSession
	clock   *FakeClock
	rec     *Recorder
	prompts *prompt.Script
}

func newLab(t *testing.T) *lab {
	t.Helper()
	d, err := yubikey.New(yubikey.Options{Serial: 4711})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c := pivclient.New(d.Card)
	c.Select(ctx)
	if err := c.AuthenticateManagementKey(ctx, pivclient.AlgAES192, piv.DefaultManagementKey); err != nil {
		t.Fatal(err)
	}
	for _, k := range []struct{ slot, alg, pin byte }{
		{pivclient.SlotAuthentication, pivclient.AlgECCP256, pivclient.PINPolicyOnce},
		{pivclient.SlotSignature, pivclient.AlgECCP256, pivclient.PINPolicyAlways},
		{pivclient.SlotCardAuthentication, pivclient.AlgECCP256, pivclient.PINPolicyNever},
		{pivclient.SlotKeyManagement, pivclient.AlgECCP384, pivclient.PINPolicyOnce},
	} {
		if _, err := c.GenerateKey(ctx, k.slot, k.alg, k.pin, pivclient.TouchPolicyNever); err != nil {
			t.Fatal(err)
		}
	}
	d.Card.Reset()
	answers := make([]prompt.Answer, 100)
	for i := range answers {
		answers[i] = prompt.Answer{PIN: "123456"}
	}
	return &lab{t: t, dev: d, session: NewLogonSession(), clock: NewFakeClock(time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)),
		rec: &Recorder{}, prompts: prompt.NewScript(answers...)}
}

func (l *lab) open(app, profile string) *Token {
	l.t.Helper()
	p, err := Profile(profile)
	if err != nil {
		l.t.Fatal(err)
	}
	return l.openPolicy(app, p)
}

func (l *lab) openPolicy(app string, p Policy) *Token {
	l.t.Helper()
	tok, err := Open(context.Background(), func(context.Context) (apdu.Transactor, error) { return l.dev.Card.Connect(), nil },
		Options{Application: app, Policy: p, Prompter: l.prompts, Audit: l.rec, Clock: l.clock, Session: l.session})
	if err != nil {
		l.t.Fatal(err)
	}
	return tok
}

func (l *lab) sign(tok *Token, slot byte) {
	l.t.Helper()
	digest := sha256.Sum256([]byte("tokenlab"))
	if _, err := tok.Sign(context.Background(), slot, digest[:]); err != nil {
		l.t.Fatalf("%s: sign with %02x: %v", tok.opts.Application, slot, err)
	}
}

// connect is one VPN or SSH connection of an application: log in as the middleware decides,
// sign with 9A, disconnect.
func (l *lab) connect(app, profile string) {
	l.t.Helper()
	tok := l.open(app, profile)
	if err := tok.Login(context.Background(), nil); err != nil {
		l.t.Fatalf("%s: login: %v", app, err)
	}
	l.sign(tok, pivclient.SlotAuthentication)
	tok.Close(context.Background())
}

func (l *lab) prompted(app string) int { return l.rec.Count(app, EventPrompt) }

// Under strict-2fa two applications in a row each get a prompt; under single logon the second
// gets none — the FortiClient reconnect.
func TestProfilesTwoApplications(t *testing.T) {
	for _, tc := range []struct {
		profile       string
		first, second int
	}{
		{"strict-2fa", 1, 1},
		{"safenet-single-logon", 1, 0},
		{"activclient", 1, 0},
		{"opensc-default", 1, 1},
		{"ykcs11", 1, 1},
		{"nss-default", 1, 1},
	} {
		t.Run(tc.profile, func(t *testing.T) {
			l := newLab(t)
			l.connect("vpn-1", tc.profile)
			l.connect("vpn-2", tc.profile)
			if l.prompted("vpn-1") != tc.first || l.prompted("vpn-2") != tc.second {
				t.Errorf("prompts: first %d, second %d; want %d, %d\n%v", l.prompted("vpn-1"), l.prompted("vpn-2"), tc.first, tc.second, l.rec.Events())
			}
			if n := l.rec.Count("", EventSign); n != 2 {
				t.Errorf("%d signatures, want 2", n)
			}
		})
	}
}

// Single logon survives a card reset between applications: the session's PIN is presented
// again without asking.
func TestSingleLogonAfterReset(t *testing.T) {
	l := newLab(t)
	l.connect("vpn-1", "safenet-single-logon")
	l.dev.Card.Reset()
	l.connect("vpn-2", "safenet-single-logon")
	if l.prompted("vpn-2") != 0 || l.rec.Count("vpn-2", EventCacheReuse) != 1 {
		t.Errorf("second application: %d prompts, %d cache re-uses; want 0 and 1", l.prompted("vpn-2"), l.rec.Count("vpn-2", EventCacheReuse))
	}
}

// Every 9C signature prompts under strict-2fa and opensc-default; opensc-ignore-user-consent
// re-uses the cached PIN silently.
func TestPINAlwaysProfiles(t *testing.T) {
	for _, tc := range []struct {
		profile  string
		prompts  int
		reuses   int
		bypassed bool
	}{
		{"strict-2fa", 3, 0, false},
		{"opensc-default", 3, 0, false},
		{"opensc-ignore-user-consent", 0, 3, true},
		{"safenet-single-logon", 3, 0, false},
	} {
		t.Run(tc.profile, func(t *testing.T) {
			l := newLab(t)
			tok := l.open("signer", tc.profile)
			if err := tok.Login(context.Background(), []byte("123456")); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 3; i++ {
				l.sign(tok, pivclient.SlotSignature)
			}
			if l.prompted("signer") != tc.prompts || l.rec.Count("signer", EventCacheReuse) != tc.reuses {
				t.Errorf("3 signatures with 9C: %d prompts, %d silent re-uses; want %d, %d", l.prompted("signer"), l.rec.Count("signer", EventCacheReuse), tc.prompts, tc.reuses)
			}
			keys, _ := tok.Keys(context.Background())
			for _, k := range keys {
				if k.Slot == pivclient.SlotSignature && k.AlwaysAuthenticate(tok.Policy()) == tc.bypassed {
					t.Errorf("CKA_ALWAYS_AUTHENTICATE for 9C = %v under %s", !tc.bypassed, tc.profile)
				}
			}
		})
	}
}

// A context-specific login's PIN serves the operation it is given to, and nothing else: a
// signature without it prompts.
func TestContextLogin(t *testing.T) {
	l := newLab(t)
	tok := l.open("p11", "strict-2fa")
	ctx := context.Background()
	if err := tok.Login(ctx, []byte("123456")); err != nil {
		t.Fatal(err)
	}
	if _, err := tok.ContextLogin(ctx, pivclient.SlotSignature, []byte("000000")); err == nil {
		t.Fatal("a wrong context PIN was accepted")
	}
	pin, err := tok.ContextLogin(ctx, pivclient.SlotSignature, []byte("123456"))
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("tokenlab"))
	if _, err := tok.SignWithPIN(ctx, pivclient.SlotSignature, digest[:], pin); err != nil {
		t.Fatalf("signature with the context PIN: %v", err)
	}
	if l.prompted("p11") != 0 {
		t.Errorf("signature after a context login prompted")
	}
	l.sign(tok, pivclient.SlotSignature)
	if l.prompted("p11") != 1 {
		t.Errorf("signature without the context PIN: %d prompts, want 1", l.prompted("p11"))
	}
}

// The TTL of a single logon: within it no prompt, after it the prompt comes back.
func TestIdleTimeout(t *testing.T) {
	l := newLab(t)
	l.connect("vpn-1", "activclient")
	l.clock.Advance(10 * time.Minute)
	l.connect("vpn-2", "activclient")
	l.clock.Advance(16 * time.Minute)
	l.connect("vpn-3", "activclient")
	if l.prompted("vpn-2") != 0 || l.prompted("vpn-3") != 1 {
		t.Errorf("after 10 min: %d prompts (want 0); after 16 idle min: %d (want 1)", l.prompted("vpn-2"), l.prompted("vpn-3"))
	}
	if l.rec.Count("vpn-3", EventCardLogout) != 1 {
		t.Errorf("the expired single logon did not log the card out")
	}
	p := Policy{Name: "ttl", Scope: ScopeApplication, TTL: time.Minute}
	tok, _ := Open(context.Background(), func(context.Context) (apdu.Transactor, error) { return l.dev.Card.Connect(), nil },
		Options{Application: "ttl", Policy: p, Prompter: l.prompts, Audit: l.rec, Clock: l.clock, Session: l.session})
	tok.Login(context.Background(), nil)
	l.dev.Card.Reset()
	l.sign(tok, pivclient.SlotAuthentication) // within the TTL: the cached PIN
	l.clock.Advance(2 * time.Minute)
	l.dev.Card.Reset()
	l.sign(tok, pivclient.SlotAuthentication) // after it: asked again
	if l.prompted("ttl") != 2 || l.rec.Count("ttl", EventCacheReuse) != 1 {
		t.Errorf("TTL policy: %d prompts, %d re-uses; want 2 and 1", l.prompted("ttl"), l.rec.Count("ttl", EventCacheReuse))
	}
}

// OpenSC re-presents its cached PIN at most pin_cache_counter (10) times.
func TestMaxUses(t *testing.T) {
	l := newLab(t)
	tok := l.open("opensc", "opensc-default")
	tok.Login(context.Background(), nil)
	for i := 0; i < 11; i++ {
		l.dev.Card.Reset() // another application resets the card
		l.sign(tok, pivclient.SlotAuthentication)
	}
	if l.rec.Count("opensc", EventCacheReuse) != 10 || l.prompted("opensc") != 2 {
		t.Errorf("%d re-uses and %d prompts, want 10 and 2", l.rec.Count("opensc", EventCacheReuse), l.prompted("opensc"))
	}
}

// Removal: strict forgets and asks again; ykcs11 silently re-verifies the same card.
func TestRemoval(t *testing.T) {
	for _, tc := range []struct {
		profile string
		prompts int
	}{{"strict-2fa", 2}, {"ykcs11", 1}, {"windows-minidriver", 1}} {
		t.Run(tc.profile, func(t *testing.T) {
			l := newLab(t)
			tok := l.open("app", tc.profile)
			ctx := context.Background()
			tok.Login(ctx, nil)
			l.sign(tok, pivclient.SlotAuthentication)
			l.dev.Card.Remove()
			l.dev.Card.Insert()
			digest := sha256.Sum256([]byte("x"))
			if _, err := tok.Sign(ctx, pivclient.SlotAuthentication, digest[:]); !errors.Is(err, apdu.ErrRemoved) {
				t.Fatalf("first use after removal: %v, want ErrRemoved", err)
			}
			if tc.profile == "strict-2fa" && tok.LoggedIn() {
				t.Error("still logged in after removal")
			}
			l.sign(tok, pivclient.SlotAuthentication)
			if l.prompted("app") != tc.prompts {
				t.Errorf("%d prompts, want %d\n%v", l.prompted("app"), tc.prompts, l.rec.Events())
			}
			if l.rec.Count("app", EventRemoved) != 1 || l.rec.Count("app", EventInserted) != 1 {
				t.Errorf("removal and insertion not both recorded")
			}
		})
	}
}

func TestWrongPIN(t *testing.T) {
	l := newLab(t)
	l.prompts = prompt.NewScript(prompt.Answer{PIN: "000000"}, prompt.Answer{Err: prompt.ErrCancelled})
	tok := l.open("app", "strict-2fa")
	ctx := context.Background()
	var ae *pivclient.AuthError
	if err := tok.Login(ctx, nil); !errors.As(err, &ae) || ae.Retries != 2 {
		t.Errorf("wrong PIN: %v", err)
	}
	if err := tok.Login(ctx, nil); !errors.Is(err, prompt.ErrCancelled) {
		t.Errorf("cancelled prompt: %v", err)
	}
	if tok.LoggedIn() || l.rec.Count("app", EventVerifyFailed) != 1 {
		t.Error("a failed login logged in, or was not recorded")
	}
	noPrompt, _ := Open(ctx, func(context.Context) (apdu.Transactor, error) { return l.dev.Card.Connect(), nil }, Options{Policy: Profiles[0]})
	if err := noPrompt.Login(ctx, nil); !errors.Is(err, ErrPINRequired) {
		t.Errorf("login with nobody to ask: %v", err)
	}
}

func TestSignersAndDecrypter(t *testing.T) {
	l := newLab(t)
	ctx := context.Background()
	b, _ := os.ReadFile("../emulator/piv/testdata/rsa2048.pem")
	blk, _ := pem.Decode(b)
	rk, _ := x509.ParsePKCS8PrivateKey(blk.Bytes)
	rsaKey := rk.(*rsa.PrivateKey)
	xKey, _ := ecdh.X25519().GenerateKey(rand.Reader)
	c := pivclient.New(l.dev.Card)
	c.Select(ctx)
	c.AuthenticateManagementKey(ctx, pivclient.AlgAES192, piv.DefaultManagementKey)
	if err := c.ImportKey(ctx, 0x82, rsaKey, pivclient.PINPolicyOnce, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.ImportKey(ctx, 0x83, xKey, pivclient.PINPolicyOnce, 0); err != nil {
		t.Fatal(err)
	}
	tok := l.open("app", "opensc-default")
	digest := sha256.Sum256([]byte("signed through the middleware"))

	s, err := tok.Signer(ctx, 0x82)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil || rsa.VerifyPKCS1v15(&rsaKey.PublicKey, crypto.SHA256, digest[:], sig) != nil {
		t.Errorf("RSA PKCS#1 v1.5: %v", err)
	}
	sig, err = s.Sign(rand.Reader, digest[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256})
	if err != nil || rsa.VerifyPSS(&rsaKey.PublicKey, crypto.SHA256, digest[:], sig, nil) != nil {
		t.Errorf("RSA-PSS: %v", err)
	}
	d, _ := tok.Decrypter(ctx, 0x82)
	ct, _ := rsa.EncryptOAEP(sha256.New(), rand.Reader, &rsaKey.PublicKey, []byte("secret"), nil)
	if pt, err := d.Decrypt(nil, ct, &rsa.OAEPOptions{Hash: crypto.SHA256}); err != nil || string(pt) != "secret" {
		t.Errorf("OAEP: %q %v", pt, err)
	}
	ct, _ = rsa.EncryptPKCS1v15(rand.Reader, &rsaKey.PublicKey, []byte("secret"))
	if pt, err := d.Decrypt(nil, ct, nil); err != nil || string(pt) != "secret" {
		t.Errorf("PKCS#1 v1.5 decryption: %q %v", pt, err)
	}
	s384, _ := tok.Signer(ctx, pivclient.SlotKeyManagement)
	sig, err = s384.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil || !ecdsa.VerifyASN1(s384.Public().(*ecdsa.PublicKey), digest[:], sig) {
		t.Errorf("P-384: %v", err)
	}
	peer, _ := ecdh.X25519().GenerateKey(rand.Reader)
	shared, err := tok.ECDH(ctx, 0x83, peer.PublicKey().Bytes())
	want, _ := peer.ECDH(xKey.PublicKey())
	if err != nil || string(shared) != string(want) {
		t.Errorf("X25519: %v", err)
	}
	if _, err := tok.Signer(ctx, 0x83); err == nil {
		t.Error("a signer for an X25519 key")
	}
	if _, err := tok.Sign(ctx, 0x95, digest[:]); !errors.Is(err, ErrNoKey) {
		t.Errorf("empty slot: %v", err)
	}
	// One prompt for all of it: the key is PIN-once and the application logged in implicitly.
	if l.prompted("app") != 1 {
		t.Errorf("%d prompts, want 1", l.prompted("app"))
	}
}

// The disconnect action of strict-2fa resets the card only when the last logged-in
// application of the session goes: another application's end must not log this one out.
func TestDisconnectLeavesOthersLoggedIn(t *testing.T) {
	l := newLab(t)
	ctx := context.Background()
	a := l.open("a", "strict-2fa")
	if err := a.Login(ctx, nil); err != nil {
		t.Fatal(err)
	}
	idle := l.open("idle", "strict-2fa") // never logs in
	idle.Close(ctx)
	b := l.open("b", "strict-2fa")
	if err := b.Login(ctx, nil); err != nil {
		t.Fatal(err)
	}
	a.Close(ctx)
	l.sign(b, pivclient.SlotAuthentication)
	if l.prompted("b") != 1 || l.rec.Count("", EventCardReset) != 0 {
		t.Errorf("b prompted %d times, %d card resets, want 1 and 0", l.prompted("b"), l.rec.Count("", EventCardReset))
	}
	b.Close(ctx)
	if l.rec.Count("b", EventCardReset) != 1 {
		t.Errorf("the last application did not reset the card")
	}
}

// A removal ends a long-lived application's login in the logon session's count too, so the
// next application to go is the last one and resets the card as strict-2fa says.
func TestRemovalEndsTheCountedLogin(t *testing.T) {
	l := newLab(t)
	ctx := context.Background()
	a := l.open("ike-daemon", "strict-2fa")
	if err := a.Login(ctx, nil); err != nil {
		t.Fatal(err)
	}
	l.dev.Card.Remove()
	digest := sha256.Sum256([]byte("x"))
	if _, err := a.Sign(ctx, pivclient.SlotAuthentication, digest[:]); err == nil {
		t.Fatal("signed with the card removed")
	}
	l.dev.Card.Insert()
	b := l.open("ssh", "strict-2fa")
	if err := b.Login(ctx, nil); err != nil {
		t.Fatal(err)
	}
	b.Close(ctx)
	c := pivclient.New(l.dev.Card)
	c.Select(ctx)
	if verified, _, _ := c.PINStatus(ctx); verified {
		t.Error("strict-2fa: the card stayed verified after the last logged-in application disconnected")
	}
	if n := l.session.active("YubiKey 4711"); n != 0 {
		t.Errorf("the logon session counts %d logged-in applications, want 0", n)
	}
}

// A cached PIN the card refuses is forgotten at once instead of spending the remaining tries;
// a PIN change replaces the cached PIN.
func TestRefusedCachedPINIsForgotten(t *testing.T) {
	l := newLab(t)
	ctx := context.Background()
	a := l.open("firefox", "opensc-default")
	if err := a.Login(ctx, []byte("123456")); err != nil {
		t.Fatal(err)
	}
	if err := a.ChangePIN(ctx, []byte("123456"), []byte("654321")); err != nil {
		t.Fatal(err)
	}
	l.dev.Card.Reset() // the card forgets its PIN status
	l.sign(a, pivclient.SlotAuthentication)
	if n := l.rec.Count("firefox", EventVerifyFailed); n != 0 {
		t.Errorf("after a PIN change the cache presented the old PIN: %d failed VERIFYs", n)
	}

	// Another application changes the PIN behind this one's back.
	b := l.open("ykman", "strict-2fa")
	if err := b.ChangePIN(ctx, []byte("654321"), []byte("111111")); err != nil {
		t.Fatal(err)
	}
	b.Close(ctx)
	l.dev.Card.Reset()
	digest := sha256.Sum256([]byte("x"))
	for range 2 {
		a.Sign(ctx, pivclient.SlotAuthentication, digest[:]) // the prompt answers the old 123456
	}
	if n := l.rec.Count("firefox", EventCacheReuse); n != 2 {
		t.Errorf("%d cached re-uses, want 2 (one after the change, one refused)", n)
	}
	if n := l.rec.Count("firefox", EventCacheCleared); n != 1 {
		t.Errorf("%d cache clearings after the refusal, want 1", n)
	}
	if n := l.rec.Count("firefox", EventPrompt); n != 1 {
		t.Errorf("%d prompts, want 1: the second attempt asks instead of presenting the refused PIN", n)
	}
}

// A prompt is answered outside any card transaction: another application can use the card
// while the person types.
func TestPromptOutsideTransaction(t *testing.T) {
	l := newLab(t)
	ctx := context.Background()
	other := l.open("ssh", "strict-2fa")
	p, err := Profile("strict-2fa")
	if err != nil {
		t.Fatal(err)
	}
	var during error
	asked := false
	prompter := prompt.Func(func(ctx context.Context, r prompt.Request) ([]byte, error) {
		asked = true
		tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, during = other.Info(tctx) // would wait for the transaction if the prompt held it
		return []byte("123456"), nil
	})
	tok, err := Open(ctx, func(context.Context) (apdu.Transactor, error) { return l.dev.Card.Connect(), nil },
		Options{Application: "firefox", Policy: p, Prompter: prompter, Audit: l.rec, Clock: l.clock, Session: l.session})
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.Login(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if !asked || during != nil {
		t.Errorf("another application's card access during the login prompt: asked %v, %v", asked, during)
	}
	during = nil
	l.sign(tok, pivclient.SlotSignature) // PIN-always: a prompt right before the signature
	if during != nil {
		t.Errorf("another application's card access during the signature prompt: %v", during)
	}
}

// A single logon ends after its idle time even for an application that stays logged in
// (ActivClient logs the card off after 15 idle minutes).
func TestIdleEndsSingleLogonOfALoggedInApplication(t *testing.T) {
	l := newLab(t)
	ctx := context.Background()
	tok := l.open("vpn", "activclient")
	if err := tok.Login(ctx, nil); err != nil {
		t.Fatal(err)
	}
	l.sign(tok, pivclient.SlotAuthentication)
	l.clock.Advance(10 * time.Minute)
	l.sign(tok, pivclient.SlotAuthentication) // within the idle time: activity
	l.clock.Advance(10 * time.Minute)
	l.sign(tok, pivclient.SlotAuthentication) // 10 minutes since the last use: still fine
	if n := l.prompted("vpn"); n != 1 {
		t.Fatalf("%d prompts within the idle time, want 1", n)
	}
	l.clock.Advance(3 * time.Hour)
	l.sign(tok, pivclient.SlotAuthentication)
	if n := l.prompted("vpn"); n != 2 {
		t.Errorf("%d prompts after 3 idle hours, want 2", n)
	}
	if n := l.rec.Count("vpn", EventCardLogout); n != 1 {
		t.Errorf("%d card logouts when the single logon ran out, want 1", n)
	}
}

// KeepCacheAtLogout (windows-minidriver): a logout, as at the end of each connection, keeps the
// application's PIN, so the next connection is not asked; only the application's end forgets.
// Without it (opensc-default) the logout forgets and the next connection asks.
func TestKeepCacheAtLogout(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		profile string
		prompts int
	}{{"windows-minidriver", 1}, {"opensc-default", 3}} {
		t.Run(c.profile, func(t *testing.T) {
			l := newLab(t)
			tok := l.open("vpn", c.profile)
			for i := 0; i < 3; i++ {
				l.dev.Card.Reset() // the card forgot; only the middleware's cache can answer
				l.sign(tok, pivclient.SlotAuthentication)
				if err := tok.Logout(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if got := l.prompted("vpn"); got != c.prompts {
				t.Errorf("%d prompts over three connections, want %d", got, c.prompts)
			}
			tok.Close(ctx)
			tok = l.open("vpn", c.profile)
			l.dev.Card.Reset()
			l.sign(tok, pivclient.SlotAuthentication)
			if got := l.prompted("vpn"); got != c.prompts+1 {
				t.Errorf("a new process was not asked: %d prompts in all", got)
			}
		})
	}
}

// Idle under the scopes none and application ends the application's own login: a logged-in
// application that signs again after the idle time is asked again, and a cached PIN that went
// unused with the login is not re-presented in its place. Use within the idle time keeps the
// login going. Without the knob (stock strict-2fa) a live login never idles out: "a PIN on
// every connection" says nothing of inactivity.
func TestIdleEndsApplicationLogin(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		profile string
		idle    time.Duration
		prompts int // in all, after login, use within the idle time, and use after it
		reset   int // card resets: strict-2fa resets the card at each logout
	}{
		{"strict-2fa", 15 * time.Minute, 2, 1},
		{"opensc-default", 15 * time.Minute, 2, 0},
		{"strict-2fa", 0, 1, 0},
	} {
		t.Run(fmt.Sprintf("%s/idle=%v", c.profile, c.idle), func(t *testing.T) {
			l := newLab(t)
			p, _ := Profile(c.profile)
			p.Idle = c.idle
			tok := l.openPolicy("vpn", p)
			if err := tok.Login(ctx, nil); err != nil {
				t.Fatal(err)
			}
			for range 3 {
				l.clock.Advance(10 * time.Minute) // idle, but less than 15 minutes each time
				l.sign(tok, pivclient.SlotAuthentication)
			}
			if n := l.prompted("vpn"); n != 1 {
				t.Fatalf("%d prompts while the login was in use, want 1", n)
			}
			l.clock.Advance(time.Hour)
			if c.idle != 0 {
				// The card forgets too, so that a PIN the middleware still had would
				// show as a re-use.
				l.dev.Card.Reset()
			}
			l.sign(tok, pivclient.SlotAuthentication)
			if n := l.prompted("vpn"); n != c.prompts {
				t.Errorf("%d prompts after an idle hour, want %d", n, c.prompts)
			}
			if n := l.rec.Count("vpn", EventCardReset); n != c.reset {
				t.Errorf("%d card resets, want %d", n, c.reset)
			}
			if c.idle == 0 {
				return
			}
			if n := l.rec.Count("vpn", EventCacheReuse); n != 0 {
				t.Errorf("the idle login's cached PIN was re-used %d times", n)
			}
			var ended bool
			for _, e := range l.rec.Events() {
				ended = ended || e.Kind == EventLogout && e.Reason == "login unused for 15m0s"
			}
			if !ended {
				t.Errorf("no logout event for the idle login: %v", l.rec.Events())
			}
			// Nobody to ask: the login is over, and stays over.
			tok.opts.Prompter = nil
			l.clock.Advance(time.Hour)
			digest := sha256.Sum256([]byte("tokenlab"))
			if _, err := tok.Sign(ctx, pivclient.SlotAuthentication, digest[:]); !errors.Is(err, ErrPINRequired) {
				t.Errorf("sign after the idle time with nobody to ask: %v, want ErrPINRequired", err)
			}
			if tok.LoggedIn() {
				t.Error("the application is still logged in after its login idled out")
			}
			// A key without a PIN needs no login.
			if _, err := tok.Sign(ctx, pivclient.SlotCardAuthentication, digest[:]); err != nil {
				t.Errorf("9E after the login ended: %v", err)
			}
		})
	}
}

// A policy specification is a profile with knobs over it; the name says what changed, and a bad
// specification names the knob and the problem.
func TestParsePolicy(t *testing.T) {
	p, err := ParsePolicy("strict-2fa+idle=15m+scope=none+max-uses=3")
	if err != nil {
		t.Fatal(err)
	}
	if p.Idle != 15*time.Minute || p.MaxUses != 3 || p.AtDisconnect != DisconnectReset {
		t.Errorf("parsed %+v", p)
	}
	// scope=none is strict-2fa's own: it changes nothing, and is not in the name.
	if p.Name != "strict-2fa+idle=15m+max-uses=3" {
		t.Errorf("name %q", p.Name)
	}
	if p, err := ParsePolicy("ykcs11"); err != nil || p.Name != "ykcs11" || p.ReverifyOnReinsert != true {
		t.Errorf("a plain profile: %+v, %v", p, err)
	}
	for spec, want := range map[string]string{
		"sloppy":                     `"sloppy" is not a profile`,
		"strict-2fa+":                `"" is not KNOB=VALUE`,
		"strict-2fa+idle":            `"idle" is not KNOB=VALUE`,
		"strict-2fa+idle=":           `"idle=" is not KNOB=VALUE`,
		"strict-2fa+idle=soon":       `idle: "soon" is not a duration`,
		"strict-2fa+colour=blue":     "colour: unknown policy knob (scope, ttl",
		"opensc-default+max-uses=-1": `max-uses: "-1" is not a count`,
	} {
		if _, err := ParsePolicy(spec); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", spec, err, want)
		}
	}
	// Every knob Knobs names is one Set knows, and changes the policy.
	values := map[string]string{"scope": "logon-session", "ttl": "1h", "idle": "2m", "max-uses": "7",
		"at-disconnect": "logout"}
	for _, k := range Knobs {
		v, ok := values[k]
		if !ok {
			v = "true"
		}
		var p Policy
		if err := p.Override(k, v); err != nil || p == (Policy{}) || p.Name != "+"+k+"="+v {
			t.Errorf("knob %s=%s: %+v, %v", k, v, p, err)
		}
	}
}

// ykcs11 re-verifies a re-inserted card with the PIN it kept, but not for a login that went
// idle meanwhile: that login is over, and the next use asks.
func TestIdleLoginNotReverifiedOnReinsert(t *testing.T) {
	l := newLab(t)
	ctx := context.Background()
	p, err := ParsePolicy("ykcs11+idle=15m")
	if err != nil {
		t.Fatal(err)
	}
	tok := l.openPolicy("app", p)
	if err := tok.Login(ctx, nil); err != nil {
		t.Fatal(err)
	}
	l.sign(tok, pivclient.SlotAuthentication)
	l.clock.Advance(time.Hour)
	l.dev.Card.Remove()
	l.dev.Card.Insert()
	digest := sha256.Sum256([]byte("x"))
	if _, err := tok.Sign(ctx, pivclient.SlotAuthentication, digest[:]); !errors.Is(err, apdu.ErrRemoved) {
		t.Fatalf("first use after removal: %v, want ErrRemoved", err)
	}
	if _, err := tok.Sign(ctx, pivclient.SlotAuthentication, digest[:]); err != nil {
		t.Fatalf("%v\n%v", err, l.rec.Events())
	}
	if n, reused := l.prompted("app"), l.rec.Count("app", EventCacheReuse); n != 2 || reused != 0 {
		t.Errorf("%d prompts and %d silent re-uses after an idle hour and a re-insertion, want 2 and 0\n%v", n, reused, l.rec.Events())
	}
}
