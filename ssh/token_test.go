package ssh

import (
	"context"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"tokenlab/emulator/piv"
	"tokenlab/emulator/yubikey"
	"tokenlab/middleware"
	"tokenlab/middleware/pivclient"
	"tokenlab/middleware/prompt"
)

// tokenLab is a virtual YubiKey with keys of every kind SSH uses, certificates from a test CA,
// and a tokenlab SSH server that accepts them as plain keys and as RFC 6187 keys.
type tokenLab struct {
	t       testing.TB
	dev     *yubikey.Device
	ca      *testCA
	certs   map[byte]*x509.Certificate
	host    gossh.Signer
	bob     gossh.Signer // a software key of user bob
	srv     *Server
	addr    string
	rec     *middleware.Recorder
	prompts *prompt.Script
	session *middleware.LogonSession
}

// Slots of the lab card: 9A P-256 (PIN once, UPN alice@example.com), 9C P-384 (PIN always,
// CN alice), 9D P-256 (PIN once), 82 Ed25519, 83 RSA 2048.
var labKeys = []struct{ slot, alg, pin byte }{
	{pivclient.SlotAuthentication, pivclient.AlgECCP256, pivclient.PINPolicyOnce},
	{pivclient.SlotSignature, pivclient.AlgECCP384, pivclient.PINPolicyAlways},
	{pivclient.SlotKeyManagement, pivclient.AlgECCP256, pivclient.PINPolicyOnce},
	{0x82, pivclient.AlgEd25519, pivclient.PINPolicyOnce},
	{0x83, pivclient.AlgRSA2048, pivclient.PINPolicyOnce},
}

func newTokenLab(t testing.TB) *tokenLab {
	t.Helper()
	d, err := yubikey.New(yubikey.Options{Serial: 5150})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c := pivclient.New(d.Card)
	if _, err := c.Select(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.AuthenticateManagementKey(ctx, pivclient.AlgAES192, piv.DefaultManagementKey); err != nil {
		t.Fatal(err)
	}
	l := &tokenLab{t: t, dev: d, ca: newCA(t, "Users CA"), certs: map[byte]*x509.Certificate{}, rec: &middleware.Recorder{},
		session: middleware.NewLogonSession()}
	var plain []gossh.PublicKey
	for _, k := range labKeys {
		pub, err := c.GenerateKey(ctx, k.slot, k.alg, k.pin, pivclient.TouchPolicyNever)
		if err != nil {
			t.Fatal(err)
		}
		p, err := gossh.NewPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		plain = append(plain, p)
		o := certOpts{cn: "alice"}
		if k.slot == pivclient.SlotAuthentication {
			o = certOpts{cn: "Alice Example", upn: "alice@example.com"}
		}
		if k.alg == pivclient.AlgEd25519 {
			continue // RFC 6187 has no Ed25519 algorithm tokenlab speaks
		}
		cert := l.ca.issue(t, pub, o)
		if err := c.SetCertificate(ctx, k.slot, cert.Raw); err != nil {
			t.Fatal(err)
		}
		l.certs[k.slot] = cert
	}
	d.Card.Reset()
	answers := make([]prompt.Answer, 50)
	for i := range answers {
		answers[i] = prompt.Answer{PIN: "123456"}
	}
	l.prompts = prompt.NewScript(answers...)
	l.host = ed25519Host(t)
	l.bob = plainSigner(t, ecKey(t, elliptic.P256()))
	l.srv, l.addr = startServer(t, ServerConfig{HostKeys: []gossh.Signer{l.host},
		Auth: &Keys{Authorized: map[string][]gossh.PublicKey{"alice": plain, "bob": {l.bob.PublicKey()}}, CAs: l.ca.pool}})
	return l
}

// open is one application's middleware over the card.
func (l *tokenLab) open(profile string) *middleware.Token {
	l.t.Helper()
	p, err := middleware.Profile(profile)
	if err != nil {
		l.t.Fatal(err)
	}
	tok, err := middleware.Open(context.Background(), l.dev.Card.Dial,
		middleware.Options{Application: "ssh", Policy: p, Prompter: l.prompts, Audit: l.rec, Session: l.session})
	if err != nil {
		l.t.Fatal(err)
	}
	return tok
}

// connect is one `tokenlab ssh connect`: a middleware of its own, the key of slot, one command.
func (l *tokenLab) connect(profile string, slot byte, x509 bool, user string) string {
	l.t.Helper()
	ctx := context.Background()
	tok := l.open(profile)
	defer tok.Close(ctx)
	s, err := TokenSigner(ctx, tok, slot, x509)
	if err != nil {
		l.t.Fatal(err)
	}
	c, err := Dial(ctx, l.addr, &ClientConfig{User: user, Signer: s, HostKeyCallback: fixedHostKey(l.host.PublicKey())})
	if err != nil {
		l.t.Fatalf("slot %02x: %v", slot, err)
	}
	defer c.Close()
	out, st := run(l.t, c, "whoami")
	if st != 0 {
		l.t.Fatalf("whoami: status %d", st)
	}
	return out
}

func (l *tokenLab) count(k middleware.EventKind) int { return l.rec.Count("ssh", k) }

// TestTokenKeys: every key type on the card logs in through the middleware as a plain key,
// and every certificate key as an RFC 6187 key with the user taken from the certificate.
func TestTokenKeys(t *testing.T) {
	l := newTokenLab(t)
	for _, k := range labKeys {
		if k.pin == pivclient.PINPolicyAlways {
			continue // TestPINAlwaysPrompts
		}
		if out := l.connect("opensc-default", k.slot, false, "alice"); !strings.HasPrefix(out, "alice SHA256:") {
			t.Errorf("slot %02x plain: %q", k.slot, out)
		}
		if l.certs[k.slot] == nil {
			continue
		}
		want := CertificateUser(l.certs[k.slot])
		if k.slot == pivclient.SlotAuthentication {
			// alice@example.com is not in the authorized table, but the certificate names it.
			if want != "alice@example.com" {
				t.Fatalf("9A certificate names %q", want)
			}
		}
		if out := l.connect("opensc-default", k.slot, true, ""); out != want+" "+want+"\n" {
			t.Errorf("slot %02x RFC 6187: %q, want user %s", k.slot, out, want)
		}
	}
	if n := l.count(middleware.EventSign); n != 7 {
		t.Errorf("%d signatures, want one per connection (7)", n)
	}
}

// TestPromptsOverThreeConnections: three connections in a row, each a new application, with
// the 9A key: strict-2fa asks for the PIN three times, safenet-single-logon once (the card
// stays verified between applications: the FortiClient reconnect, here with SSH).
func TestPromptsOverThreeConnections(t *testing.T) {
	for _, tc := range []struct {
		profile string
		want    int
	}{{"strict-2fa", 3}, {"safenet-single-logon", 1}} {
		t.Run(tc.profile, func(t *testing.T) {
			l := newTokenLab(t)
			for range 3 {
				l.connect(tc.profile, pivclient.SlotAuthentication, true, "")
			}
			if got := l.count(middleware.EventPrompt); got != tc.want {
				t.Errorf("%d prompts, want %d:\n%v", got, tc.want, l.rec.Events())
			}
			if got := l.count(middleware.EventSign); got != 3 {
				t.Errorf("%d signatures, want 3", got)
			}
		})
	}
}

// TestPINAlwaysPrompts: the 9C key is PIN-always: every connection's signature asks for the
// PIN right before it, under strict-2fa and under single logon alike, since PIN-always is not
// the cache's to satisfy; the prompt names the slot.
func TestPINAlwaysPrompts(t *testing.T) {
	for _, profile := range []string{"strict-2fa", "safenet-single-logon"} {
		t.Run(profile, func(t *testing.T) {
			l := newTokenLab(t)
			for _, x509 := range []bool{false, true, true} {
				l.connect(profile, pivclient.SlotSignature, x509, "alice")
			}
			if got := l.count(middleware.EventPrompt); got != 3 {
				t.Errorf("%d prompts, want 3 (one per signature):\n%v", got, l.rec.Events())
			}
			for _, r := range l.prompts.Requests() {
				if r.Slot != "9c" {
					t.Errorf("prompt for slot %q, want 9c (%s)", r.Slot, r.Reason)
				}
			}
		})
	}
}

// TestRemovalClosesSessions: a session authenticated with a card key is closed within one
// second of the card's removal — by the server watching the card, and by the client watching
// it — while a session with another key stays.
func TestRemovalClosesSessions(t *testing.T) {
	const limit = time.Second
	for _, side := range []string{"server", "client"} {
		t.Run(side, func(t *testing.T) {
			l := newTokenLab(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if side == "server" {
				var keys []gossh.PublicKey
				tok := l.open("opensc-default")
				ks, err := tok.Keys(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for _, k := range ks {
					p, _ := gossh.NewPublicKey(k.Public)
					keys = append(keys, p)
				}
				tok.Close(ctx)
				go l.srv.CloseOnRemoval(ctx, l.dev.Card, keys)
			}
			tok := l.open("opensc-default")
			defer tok.Close(ctx)
			s, err := TokenSigner(ctx, tok, pivclient.SlotAuthentication, true)
			if err != nil {
				t.Fatal(err)
			}
			cfg := &ClientConfig{Signer: s, HostKeyCallback: fixedHostKey(l.host.PublicKey())}
			if side == "client" {
				cfg.Card = l.dev.Card
			}
			c, err := Dial(ctx, l.addr, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// A bystander with a software key in another session.
			bystander, err := Dial(ctx, l.addr, &ClientConfig{User: "bob", Signer: l.bob, HostKeyCallback: fixedHostKey(l.host.PublicKey())})
			if err != nil {
				t.Fatal(err)
			}
			defer bystander.Close()

			started := make(chan struct{})
			ended := make(chan error, 1)
			go func() {
				_, err := c.Run(ctx, RunOptions{Command: "wait", Stdout: writerFunc(func(p []byte) (int, error) {
					select {
					case <-started:
					default:
						close(started)
					}
					return len(p), nil
				})})
				ended <- err
			}()
			<-started
			removed := time.Now()
			l.dev.Card.Remove()
			select {
			case err := <-ended:
				if d := time.Since(removed); d > limit {
					t.Errorf("session closed %v after the removal, limit %v", d, limit)
				}
				if side == "client" && !errors.Is(err, ErrCardRemoved) {
					t.Errorf("client's session ended with %v, want ErrCardRemoved", err)
				}
			case <-time.After(limit):
				t.Fatalf("session still open %v after the removal", limit)
			}
			select {
			case <-c.Done():
			case <-time.After(limit):
				t.Error("connection still open after the removal")
			}
			if out, st := run(t, bystander, "echo still here"); st != 0 || out != "still here\n" {
				t.Errorf("bystander: %q %d", out, st)
			}
		})
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
