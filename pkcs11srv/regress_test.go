package pkcs11srv

// Regression tests for the findings of the PKCS#11 server review: each failed before its fix.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"net"
	"testing"
	"time"

	"tokenlab/emulator/piv"
	"tokenlab/middleware"
	"tokenlab/middleware/pivclient"
	"tokenlab/middleware/prompt"
	"tokenlab/pkcs11srv/p11rpc"
)

// importKey puts k into slot (PIN once, touch never) and resets the card.
func (f *fixture) importKey(slot byte, k crypto.PrivateKey) {
	f.t.Helper()
	ctx := context.Background()
	c := pivclient.New(f.dev.Card)
	c.Select(ctx)
	if err := c.AuthenticateManagementKey(ctx, pivclient.AlgAES192, piv.DefaultManagementKey); err != nil {
		f.t.Fatal(err)
	}
	if err := c.ImportKey(ctx, slot, k, pivclient.PINPolicyOnce, 1); err != nil {
		f.t.Fatal(err)
	}
	f.dev.Card.Reset()
}

func (f *fixture) importRSA() *rsa.PrivateKey {
	f.t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		f.t.Fatal(err)
	}
	f.importKey(0x9D, k)
	return k
}

// withClock rebuilds the fixture's server on a fake clock.
func (f *fixture) withClock(profile string, p prompt.Prompter) *middleware.FakeClock {
	f.t.Helper()
	clk := middleware.NewFakeClock(time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC))
	pol, err := middleware.Profile(profile)
	if err != nil {
		f.t.Fatal(err)
	}
	f.srv = New(Config{Reader: f.dev.Card, Policy: pol, Prompter: p, Audit: f.rec, Clock: clk})
	return clk
}

// CKM_RSA_X_509 verification with more data than the modulus holds answers
// CKR_DATA_LEN_RANGE; it panicked.
func TestVerifyX509DataTooLong(t *testing.T) {
	f := newFixture(t, "strict-2fa", nil)
	f.importRSA()
	ctx := context.Background()
	a := f.app("a")
	s := f.open(a, false)
	rv(t, "VerifyInit", a.VerifyInit(ctx, s, Mechanism{Type: ckmRSAX509}, handleOf(0x9D, ckoPublicKey)), ckrOK)
	rv(t, "Verify", a.Verify(s, make([]byte, 300), make([]byte, 256)), ckrDataLenRange)
}

// An application that dies while a thread waits in C_WaitForSlotEvent is still closed: the
// waiting call is cancelled and, under strict-2fa, the card forgets the PIN. ServeConn used to
// wait for the waiter before cancelling it, for ever.
func TestServeConnEndsWithAWaiter(t *testing.T) {
	f := newFixture(t, "strict-2fa", nil)
	client, server := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- f.srv.ServeConn(context.Background(), server, "victim") }()
	c, err := p11rpc.NewClient(client, p11rpc.Protocol0)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ulongResult(c.Call(p11rpc.CallOpenSession, func(w *p11rpc.RequestWriter) { w.Ulong(slotID); w.Ulong(ckfSerialSession) }))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(p11rpc.CallLogin, func(w *p11rpc.RequestWriter) { w.Ulong(s); w.Ulong(ckuUser); w.ByteArray([]byte("123456")) }); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Send(p11rpc.CallWaitForSlotEvent, func(w *p11rpc.RequestWriter) { w.Ulong(0) }); err != nil {
		t.Fatal(err)
	}
	client.Close() // the process dies: no C_Finalize
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("ServeConn still running 5 s after its peer went, with a C_WaitForSlotEvent waiting")
	}
	pc := pivclient.New(f.dev.Card)
	ctx := context.Background()
	if _, err := pc.Select(ctx); err != nil {
		t.Fatal(err)
	}
	if verified, _, _ := pc.PINStatus(ctx); verified {
		t.Error("the card still holds the PIN of a strict-2fa application that is gone")
	}
}

// C_Logout ends the session's operation; it no longer holds the session.
func TestLogoutFreesTheSession(t *testing.T) {
	f := newFixture(t, "strict-2fa", nil)
	ctx := context.Background()
	a := f.app("a")
	s := f.open(a, false)
	rv(t, "login", a.Login(ctx, s, ckuUser, []byte("123456")), ckrOK)
	rv(t, "SignInit", a.SignInit(ctx, s, ecdsaMech, handleOf(0x9A, ckoPrivateKey)), ckrOK)
	rv(t, "logout", a.Logout(ctx, s), ckrOK)
	rv(t, "SignInit with 9E after logout", a.SignInit(ctx, s, ecdsaMech, handleOf(0x9E, ckoPrivateKey)), ckrOK)
	d := sha256.Sum256([]byte("x"))
	if _, _, err := a.Sign(ctx, s, d[:], 64); err != nil {
		t.Fatal(err)
	}
	rv(t, "DigestInit", a.DigestInit(s, Mechanism{Type: ckmSHA256}), ckrOK)
}

// A context login serves the one operation it was made for: not the next one after that
// operation failed, nor another session's.
func TestContextPINServesOneOperation(t *testing.T) {
	answers := prompt.NewScript(prompt.Answer{PIN: "123456"}, prompt.Answer{PIN: "123456"})
	f := newFixture(t, "strict-2fa", answers)
	ctx := context.Background()
	a := f.app("a")
	s := f.open(a, false)
	d := sha256.Sum256([]byte("document"))
	rv(t, "login", a.Login(ctx, s, ckuUser, []byte("123456")), ckrOK)
	rv(t, "SignInit 9C", a.SignInit(ctx, s, ecdsaMech, handleOf(0x9C, ckoPrivateKey)), ckrOK)
	rv(t, "context login", a.Login(ctx, s, ckuContextSpecific, []byte("123456")), ckrOK)
	_, _, err := a.Sign(ctx, s, nil, 64)
	rv(t, "empty input", err, ckrDataLenRange)

	rv(t, "SignInit 9C again", a.SignInit(ctx, s, ecdsaMech, handleOf(0x9C, ckoPrivateKey)), ckrOK)
	if _, _, err := a.Sign(ctx, s, d[:], 64); err != nil {
		t.Fatal(err)
	}
	if n := len(answers.Requests()); n != 1 {
		t.Fatalf("the signature after the failed one asked %d times, want 1 (no stale context PIN)", n)
	}

	s2 := f.open(a, false)
	rv(t, "s1 SignInit", a.SignInit(ctx, s, ecdsaMech, handleOf(0x9C, ckoPrivateKey)), ckrOK)
	rv(t, "s1 context login", a.Login(ctx, s, ckuContextSpecific, []byte("123456")), ckrOK)
	rv(t, "s2 SignInit", a.SignInit(ctx, s2, ecdsaMech, handleOf(0x9C, ckoPrivateKey)), ckrOK)
	if _, _, err := a.Sign(ctx, s2, d[:], 64); err != nil {
		t.Fatal(err)
	}
	if n := len(answers.Requests()); n != 2 {
		t.Fatalf("s2's signature asked %d times in all, want 2: s1's context login is s1's", n)
	}
	if _, _, err := a.Sign(ctx, s, d[:], 64); err != nil {
		t.Fatalf("s1's signature after its context login: %v", err)
	}
	if answers.Remaining() != 0 || len(answers.Requests()) != 2 {
		t.Fatalf("s1's signature asked again: %d prompts", len(answers.Requests()))
	}
}

// The PIN of C_Login serves a PIN-always key's first operation only right after the login,
// as OpenSSH signs; long after, a context login is needed.
func TestLoginPINServesOnlyRightAfter(t *testing.T) {
	f := newFixture(t, "strict-2fa", nil)
	clk := f.withClock("strict-2fa", nil)
	ctx := context.Background()
	a := f.app("a")
	s := f.open(a, false)
	d := sha256.Sum256([]byte("x"))
	rv(t, "login", a.Login(ctx, s, ckuUser, []byte("123456")), ckrOK)
	clk.Advance(time.Minute)
	rv(t, "SignInit 9C", a.SignInit(ctx, s, ecdsaMech, handleOf(0x9C, ckoPrivateKey)), ckrOK)
	_, _, err := a.Sign(ctx, s, d[:], 64)
	rv(t, "9C a minute after C_Login, no context login", err, ckrUserNotLoggedIn)

	rv(t, "logout", a.Logout(ctx, s), ckrOK)
	rv(t, "login", a.Login(ctx, s, ckuUser, []byte("123456")), ckrOK)
	clk.Advance(time.Second)
	rv(t, "SignInit 9C", a.SignInit(ctx, s, ecdsaMech, privateHandle(0x9C, 1)), ckrOK)
	if _, _, err := a.Sign(ctx, s, d[:], 64); err != nil {
		t.Fatalf("9C right after C_Login: %v", err)
	}
}

// C_GenerateRandom is bounded: the card would otherwise be held for as long as a client asks.
func TestGenerateRandomBounded(t *testing.T) {
	f := newFixture(t, "strict-2fa", nil)
	ctx := context.Background()
	a := f.app("a")
	s := f.open(a, false)
	b, err := a.GenerateRandom(ctx, s, maxRandom)
	if err != nil || len(b) != maxRandom {
		t.Fatalf("%d bytes: %d, %v", maxRandom, len(b), err)
	}
	_, err = a.GenerateRandom(ctx, s, maxRandom+1)
	rv(t, "one byte more", err, ckrArgumentsBad)
}

// PSS verification takes exactly the salt length of the parameters: sLen 0 is 0, not "any".
func TestPSSVerifyExactSalt(t *testing.T) {
	f := newFixture(t, "strict-2fa", nil)
	k := f.importRSA()
	ctx := context.Background()
	a := f.app("a")
	s := f.open(a, false)
	d := sha256.Sum256([]byte("m"))
	sig, err := rsa.SignPSS(rand.Reader, k, crypto.SHA256, d[:], &rsa.PSSOptions{SaltLength: 32})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		salt uint64
		want uint64
	}{{0, ckrSignatureInvalid}, {20, ckrSignatureInvalid}, {32, ckrOK}} {
		m := Mechanism{Type: ckmRSAPKCSPSS, PSS: &PSSParams{Hash: ckmSHA256, MGF: ckgMGF1SHA256, SaltLen: c.salt}}
		rv(t, "VerifyInit", a.VerifyInit(ctx, s, m, handleOf(0x9D, ckoPublicKey)), ckrOK)
		rv(t, "Verify with sLen "+string(rune('0'+c.salt/10))+string(rune('0'+c.salt%10)), a.Verify(s, d[:], sig), c.want)
	}
}

// C_Decrypt: the size query does not use the key, and a plaintext kept after a too-small
// buffer is given only for the same ciphertext.
func TestDecryptKeepsPlaintextOfItsCiphertext(t *testing.T) {
	f := newFixture(t, "strict-2fa", nil)
	k := f.importRSA()
	ctx := context.Background()
	a := f.app("a")
	s := f.open(a, false)
	rv(t, "login", a.Login(ctx, s, ckuUser, []byte("123456")), ckrOK)
	ct1, _ := rsa.EncryptPKCS1v15(rand.Reader, &k.PublicKey, []byte("first"))
	ct2, _ := rsa.EncryptPKCS1v15(rand.Reader, &k.PublicKey, []byte("SECOND"))
	key := handleOf(0x9D, ckoPrivateKey)

	rv(t, "DecryptInit", a.DecryptInit(ctx, s, Mechanism{Type: ckmRSAPKCS}, key), ckrOK)
	uses := f.rec.Count("a", middleware.EventDecrypt)
	_, n, err := a.Decrypt(ctx, s, ct1, 0)
	if err != nil || n != 256 {
		t.Fatalf("size query: %d, %v", n, err)
	}
	if f.rec.Count("a", middleware.EventDecrypt) != uses {
		t.Error("the size query used the key")
	}
	_, n, err = a.Decrypt(ctx, s, ct1, 2)
	rv(t, "too small", err, ckrBufferTooSmall)
	if n != len("first") {
		t.Errorf("too small: length %d, want %d", n, len("first"))
	}
	pt, _, err := a.Decrypt(ctx, s, ct2, 256)
	if err != nil || string(pt) != "SECOND" {
		t.Fatalf("decrypt ct2 after ct1's too-small call: %q, %v", pt, err)
	}

	rv(t, "DecryptInit", a.DecryptInit(ctx, s, Mechanism{Type: ckmRSAPKCS}, key), ckrOK)
	_, _, err = a.Decrypt(ctx, s, ct1, 2)
	rv(t, "too small", err, ckrBufferTooSmall)
	pt, _, err = a.Decrypt(ctx, s, ct1, 256)
	if err != nil || string(pt) != "first" {
		t.Fatalf("decrypt ct1 with room: %q, %v", pt, err)
	}
}

// A sensitive value cannot be found by searching for it: C_FindObjects would be an oracle for
// what C_GetAttributeValue hides.
func TestFindDoesNotMatchSensitiveValues(t *testing.T) {
	f := newFixture(t, "strict-2fa", nil)
	ctx := context.Background()
	peer, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	z := f.sharedSecret(t, 0x9E, peer)
	a := f.app("a")
	s := f.open(a, false)
	h, err := a.DeriveKey(ctx, s, Mechanism{Type: ckmECDH1Derive, ECDH: &ECDH1Params{KDF: ckdNull, PublicData: peer.PublicKey().Bytes()}},
		handleOf(0x9E, ckoPrivateKey), []Attribute{{Type: ckaSensitive, Value: boolean(true)}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tmpl := range [][]Attribute{
		{{Type: ckaValue, Value: z}},
		{{Type: ckaClass, Value: ulong(ckoSecretKey)}, {Type: ckaValue, Value: z}},
	} {
		rv(t, "FindObjectsInit", a.FindObjectsInit(ctx, s, tmpl), ckrOK)
		objs, err := a.FindObjects(s, 10)
		if err != nil {
			t.Fatal(err)
		}
		a.FindObjectsFinal(s)
		if len(objs) != 0 {
			t.Fatalf("a search by the sensitive CKA_VALUE found %x (the key is %#x)", objs, h)
		}
	}
	rv(t, "FindObjectsInit", a.FindObjectsInit(ctx, s, []Attribute{{Type: ckaClass, Value: ulong(ckoSecretKey)}}), ckrOK)
	if objs, _ := a.FindObjects(s, 10); len(objs) != 1 || objs[0] != h {
		t.Fatalf("a search by class found %x, want [%x]", objs, h)
	}
}

// A PIN of a length the token does not take is CKR_PIN_LEN_RANGE, and costs no try.
func TestPINLengthChecked(t *testing.T) {
	f := newFixture(t, "strict-2fa", nil)
	ctx := context.Background()
	a := f.app("a")
	s := f.open(a, true)
	rv(t, "login with 5 digits", a.Login(ctx, s, ckuUser, []byte("12345")), ckrPINLenRange)
	rv(t, "login", a.Login(ctx, s, ckuUser, []byte("123456")), ckrOK)
	rv(t, "SignInit 9C", a.SignInit(ctx, s, ecdsaMech, handleOf(0x9C, ckoPrivateKey)), ckrOK)
	rv(t, "context login with 9 digits", a.Login(ctx, s, ckuContextSpecific, []byte("123456789")), ckrPINLenRange)
	rv(t, "empty context login", a.Login(ctx, s, ckuContextSpecific, []byte{}), ckrPINLenRange)
	rv(t, "SetPIN with a short old PIN", a.SetPIN(ctx, s, []byte("1"), []byte("654321")), ckrPINLenRange)
	info, err := a.GetTokenInfo(ctx, slotID)
	if err != nil {
		t.Fatal(err)
	}
	if info.Flags&(ckfUserPINCountLow|ckfUserPINFinalTry|ckfUserPINLocked) != 0 {
		t.Errorf("refused lengths cost tries: token flags %#x", info.Flags)
	}
}

// C_DigestInit takes digest mechanisms only.
func TestDigestInitTakesDigestsOnly(t *testing.T) {
	f := newFixture(t, "strict-2fa", nil)
	a := f.app("a")
	s := f.open(a, false)
	rv(t, "DigestInit(CKM_RSA_PKCS)", a.DigestInit(s, Mechanism{Type: ckmRSAPKCS}), ckrMechanismInvalid)
	rv(t, "DigestInit(CKM_SHA256_RSA_PKCS)", a.DigestInit(s, Mechanism{Type: ckmSHA256RSAPKCS}), ckrMechanismInvalid)
}

// A single logon that has been idle past its limit ends even for an application that stays
// logged in (ActivClient logs the card off after idle minutes).
func TestIdleEndsTheSingleLogon(t *testing.T) {
	f := newFixture(t, "activclient", nil)
	clk := f.withClock("activclient", nil)
	ctx := context.Background()
	a := f.app("vpn")
	s := f.open(a, false)
	d := sha256.Sum256([]byte("x"))
	rv(t, "login", a.Login(ctx, s, ckuUser, []byte("123456")), ckrOK)
	rv(t, "SignInit 9A", a.SignInit(ctx, s, ecdsaMech, handleOf(0x9A, ckoPrivateKey)), ckrOK)
	if _, _, err := a.Sign(ctx, s, d[:], 64); err != nil {
		t.Fatal(err)
	}
	clk.Advance(3 * time.Hour)
	rv(t, "SignInit 9A", a.SignInit(ctx, s, ecdsaMech, handleOf(0x9A, ckoPrivateKey)), ckrOK)
	_, _, err := a.Sign(ctx, s, d[:], 64)
	rv(t, "9A signature three idle hours later, nobody to ask", err, ckrUserNotLoggedIn)
	if f.rec.Count("vpn", middleware.EventCardLogout) == 0 {
		t.Error("the card was not logged off at the idle limit")
	}
}

// While one application's prompt is open, the others still reach the card: the person is
// never asked inside a card transaction.
func TestPromptDoesNotHoldTheCard(t *testing.T) {
	release := make(chan struct{})
	p := prompt.Func(func(ctx context.Context, r prompt.Request) ([]byte, error) {
		<-release
		return []byte("123456"), nil
	})
	f := newFixture(t, "strict-2fa", p)
	ctx := context.Background()
	a, b := f.app("firefox"), f.app("ssh")
	sa := f.open(a, false)
	f.open(b, false)
	login := make(chan error, 1)
	go func() { login <- a.Login(ctx, sa, ckuUser, nil) }()
	done := make(chan error, 1)
	go func() { _, err := b.GetTokenInfo(ctx, slotID); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(5 * time.Second):
		t.Error("another application's C_GetTokenInfo waited for firefox's prompt")
	}
	close(release)
	if err := <-login; err != nil {
		t.Fatal(err)
	}
}

// Multi-part EdDSA verification checks the whole message (its buffer was wiped before use).
func TestVerifyEdDSAInParts(t *testing.T) {
	f := newFixture(t, "strict-2fa", nil)
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	f.importKey(0x9D, priv)
	ctx := context.Background()
	a := f.app("a")
	s := f.open(a, false)
	msg := []byte("a message in two parts")
	sig := ed25519.Sign(priv, msg)
	for _, c := range []struct {
		sig  []byte
		want uint64
	}{{sig, ckrOK}, {bytes.Repeat([]byte{1}, 64), ckrSignatureInvalid}} {
		rv(t, "VerifyInit", a.VerifyInit(ctx, s, Mechanism{Type: ckmEDDSA}, handleOf(0x9D, ckoPublicKey)), ckrOK)
		rv(t, "VerifyUpdate", a.VerifyUpdate(s, msg[:7]), ckrOK)
		rv(t, "VerifyUpdate", a.VerifyUpdate(s, msg[7:]), ckrOK)
		rv(t, "VerifyFinal", a.VerifyFinal(s, c.sig), c.want)
	}
}

// A removal ends single logon at once, as the middleware watching the reader does (SafeNet:
// "remains logged on as long as it remains connected"): the next application is asked again,
// even though no application used the card between the removal and the re-insertion.
func TestRemovalEndsSingleLogon(t *testing.T) {
	answers := prompt.NewScript(prompt.Answer{PIN: "123456"}, prompt.Answer{PIN: "123456"})
	f := newFixture(t, "safenet-single-logon", answers)
	ctx := context.Background()
	a := f.app("forticlient")
	rv(t, "login", a.Login(ctx, f.open(a, false), ckuUser, nil), ckrOK)
	f.dev.Card.Remove()
	waitFor(t, func() bool { _, err := a.WaitForSlotEvent(ctx, ckfDontBlock); return err == nil })
	f.dev.Card.Insert()
	if f.rec.Count("forticlient", middleware.EventCacheCleared) == 0 {
		t.Error("the removal did not clear the single-logon cache")
	}
	b := f.app("forticlient-again")
	rv(t, "login after re-insertion", b.Login(ctx, f.open(b, false), ckuUser, nil), ckrOK)
	if n := len(answers.Requests()); n != 2 {
		t.Errorf("%d prompts, want 2: the single logon survived the removal", n)
	}
}
