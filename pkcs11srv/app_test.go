package pkcs11srv

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"errors"
	"math/big"
	"testing"
	"time"

	"tokenlab/emulator/piv"
	"tokenlab/emulator/yubikey"
	"tokenlab/middleware"
	"tokenlab/middleware/pivclient"
	"tokenlab/middleware/prompt"
)

// fixture is a server over an in-process card with a P-256 key under each PIN policy.
type fixture struct {
	t   *testing.T
	dev *yubikey.Device
	srv *Server
	rec *middleware.Recorder
}

func newFixture(t *testing.T, profile string, p prompt.Prompter) *fixture {
	t.Helper()
	d, err := yubikey.New(yubikey.Options{Serial: 1234})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c := pivclient.New(d.Card)
	c.Select(ctx)
	if err := c.AuthenticateManagementKey(ctx, pivclient.AlgAES192, piv.DefaultManagementKey); err != nil {
		t.Fatal(err)
	}
	for _, k := range []struct{ slot, pin byte }{{0x9A, 2}, {0x9C, 3}, {0x9E, 1}} {
		if _, err := c.GenerateKey(ctx, k.slot, pivclient.AlgECCP256, k.pin, 1); err != nil {
			t.Fatal(err)
		}
	}
	d.Card.Reset()
	pol, err := middleware.Profile(profile)
	if err != nil {
		t.Fatal(err)
	}
	rec := &middleware.Recorder{}
	return &fixture{t: t, dev: d, rec: rec, srv: New(Config{Reader: d.Card, Policy: pol, Prompter: p, Audit: rec})}
}

func (f *fixture) app(name string) *App {
	a := f.srv.NewApp(name)
	if err := a.Initialize(); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { a.Close(context.Background()) })
	return a
}

func (f *fixture) open(a *App, rw bool) uint64 {
	f.t.Helper()
	flags := uint64(ckfSerialSession)
	if rw {
		flags |= ckfRWSession
	}
	h, err := a.OpenSession(context.Background(), slotID, flags)
	if err != nil {
		f.t.Fatal(err)
	}
	return h
}

func rv(t *testing.T, what string, err error, want uint64) {
	t.Helper()
	if got := rvOf(err); got != want {
		t.Errorf("%s: %v (0x%X), want 0x%X", what, err, got, want)
	}
}

var ecdsaMech = Mechanism{Type: ckmECDSA}

// The login rules of PKCS #11 §5.6–5.7, as pin-caching.md §3.6 probes them, with the results
// the specification requires where SoftHSM deviates.
func TestLoginRules(t *testing.T) {
	f := newFixture(t, "strict-2fa", nil)
	ctx := context.Background()
	a := f.app("probe")
	s1 := f.open(a, false)
	digest := sha256.Sum256([]byte("probe"))

	rv(t, "logout while public", a.Logout(ctx, s1), ckrUserNotLoggedIn)
	rv(t, "wrong PIN", a.Login(ctx, s1, ckuUser, []byte("000000")), ckrPINIncorrect)
	info, _ := a.GetTokenInfo(ctx, slotID)
	if info.Flags&ckfUserPINCountLow == 0 || info.Flags&ckfUserPINFinalTry != 0 {
		t.Errorf("token flags after one wrong PIN: %#x", info.Flags)
	}
	rv(t, "PIN of 9 digits", a.Login(ctx, s1, ckuUser, []byte("123456789")), ckrPINLenRange)
	rv(t, "login", a.Login(ctx, s1, ckuUser, []byte("123456")), ckrOK)
	s2 := f.open(a, false)
	if si, _ := a.GetSessionInfo(s2); si.State != cksROUser {
		t.Errorf("session opened after login: state %d, want RO user", si.State)
	}
	rv(t, "second login", a.Login(ctx, s2, ckuUser, []byte("123456")), ckrUserAlreadyLoggedIn)
	rv(t, "SO while user", a.Login(ctx, s2, ckuSO, []byte("010203040506070801020304050607080102030405060708")), ckrUserAnotherAlreadyLoggedIn)
	rv(t, "bad user type", a.Login(ctx, s2, 7, []byte("123456")), ckrUserTypeInvalid)

	// Context login needs an operation with a PIN-always key.
	rv(t, "SignInit 9A", a.SignInit(ctx, s1, ecdsaMech, handleOf(0x9A, ckoPrivateKey)), ckrOK)
	rv(t, "context login on a PIN-once key", a.Login(ctx, s1, ckuContextSpecific, []byte("123456")), ckrOperationNotInitialized)
	sig, n, err := a.Sign(ctx, s1, digest[:], 64)
	if err != nil || n != 64 || len(sig) != 64 {
		t.Fatalf("sign with 9A after the refused context login: %d bytes, %v", n, err)
	}

	// 9C: the PIN of the login right before counts once (OpenSSH's first signature); then each
	// signature needs its context login.
	rv(t, "SignInit 9C", a.SignInit(ctx, s1, ecdsaMech, handleOf(0x9C, ckoPrivateKey)), ckrOK)
	_, n, err = a.Sign(ctx, s1, digest[:], 0)
	if err != nil || n != 64 {
		t.Errorf("size query: %d, %v", n, err)
	}
	if _, _, err := a.Sign(ctx, s1, digest[:], 64); err == nil {
		t.Error("9C signed without a context login, long after C_Login")
	} else {
		rv(t, "9C without context login", err, ckrUserNotLoggedIn)
	}
	_, _, err = a.Sign(ctx, s1, digest[:], 64)
	rv(t, "the failed 9C signature ended the operation", err, ckrOperationNotInitialized)
	a.SignInit(ctx, s1, ecdsaMech, handleOf(0x9C, ckoPrivateKey))
	rv(t, "wrong context PIN", a.Login(ctx, s1, ckuContextSpecific, []byte("000000")), ckrPINIncorrect)
	rv(t, "context login", a.Login(ctx, s1, ckuContextSpecific, []byte("123456")), ckrOK)
	sig, _, err = a.Sign(ctx, s1, digest[:], 64)
	if err != nil {
		t.Fatal(err)
	}
	pub := f.publicKey(a, s1, 0x9C)
	if !ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		t.Error("9C signature does not verify")
	}

	// Logout: every session back to public, operations in flight end.
	rv(t, "SignInit before logout", a.SignInit(ctx, s1, ecdsaMech, handleOf(0x9A, ckoPrivateKey)), ckrOK)
	rv(t, "logout via s2", a.Logout(ctx, s2), ckrOK)
	if si, _ := a.GetSessionInfo(s1); si.State != cksROPublic {
		t.Errorf("s1 after logout through s2: state %d", si.State)
	}
	_, _, err = a.Sign(ctx, s1, digest[:], 64)
	rv(t, "sign after logout (SoftHSM bug #900 lets it succeed)", err, ckrUserNotLoggedIn)
	rv(t, "second logout (SoftHSM answers CKR_OK)", a.Logout(ctx, s1), ckrUserNotLoggedIn)
	rv(t, "SignInit on a private key while public", a.SignInit(ctx, s1, ecdsaMech, handleOf(0x9A, ckoPrivateKey)), ckrUserNotLoggedIn)

	// 9E (PIN never) is usable without login, as OpenSC shows it.
	rv(t, "SignInit 9E while public", a.SignInit(ctx, s1, ecdsaMech, handleOf(0x9E, ckoPrivateKey)), ckrOK)
	if _, _, err := a.Sign(ctx, s1, digest[:], 64); err != nil {
		t.Errorf("9E without login: %v", err)
	}

	// SO login with the management key; not while a read-only session is open.
	rv(t, "SO login with R/O sessions", a.Login(ctx, s1, ckuSO, []byte("010203040506070801020304050607080102030405060708")), ckrSessionReadOnlyExists)
	a.CloseAllSessions(ctx, slotID)
	rw := f.open(a, true)
	rv(t, "SO login, wrong key", a.Login(ctx, rw, ckuSO, []byte("000000000000000000000000000000000000000000000000")), ckrPINIncorrect)
	rv(t, "SO login", a.Login(ctx, rw, ckuSO, []byte("010203040506070801020304050607080102030405060708")), ckrOK)
	if si, _ := a.GetSessionInfo(rw); si.State != cksRWSO {
		t.Errorf("SO session state %d", si.State)
	}
	_, err = a.OpenSession(ctx, slotID, ckfSerialSession)
	rv(t, "R/O session while SO", err, ckrSessionReadWriteSOExists)
}

func (f *fixture) publicKey(a *App, h uint64, slot byte) *ecdsa.PublicKey {
	f.t.Helper()
	for _, o := range a.objects {
		if o.key.Slot == slot {
			return o.key.Public.(*ecdsa.PublicKey)
		}
	}
	f.t.Fatalf("no key in %02x", slot)
	return nil
}

// Login is per application: another application sees no private object of a logged-in one,
// even though the card itself is verified.
func TestLoginIsPerApplication(t *testing.T) {
	f := newFixture(t, "opensc-default", nil)
	ctx := context.Background()
	a, b := f.app("a"), f.app("b")
	sa, sb := f.open(a, false), f.open(b, false)
	rv(t, "login a", a.Login(ctx, sa, ckuUser, []byte("123456")), ckrOK)
	class := Attribute{Type: ckaClass, Value: ulong(ckoPrivateKey)}
	count := func(app *App, h uint64) int {
		app.FindObjectsInit(ctx, h, []Attribute{class})
		objs, _ := app.FindObjects(h, 100)
		app.FindObjectsFinal(h)
		return len(objs)
	}
	if n := count(a, sa); n != 3 {
		t.Errorf("logged-in application sees %d private keys, want 3", n)
	}
	if n := count(b, sb); n != 1 {
		t.Errorf("other application sees %d private keys, want 1 (9E only)", n)
	}
	rv(t, "b signs with a's login", b.SignInit(ctx, sb, ecdsaMech, handleOf(0x9A, ckoPrivateKey)), ckrUserNotLoggedIn)
}

// Removal closes every session; the slot shows no token; after insertion a new login is needed.
func TestRemovalClosesSessions(t *testing.T) {
	f := newFixture(t, "strict-2fa", nil)
	ctx := context.Background()
	a := f.app("a")
	s := f.open(a, false)
	a.Login(ctx, s, ckuUser, []byte("123456"))
	if _, err := a.WaitForSlotEvent(ctx, ckfDontBlock); rvOf(err) != ckrNoEvent {
		t.Errorf("event before any: %v", err)
	}
	f.dev.Card.Remove()
	waitFor(t, func() bool { _, err := a.GetSessionInfo(s); return rvOf(err) == ckrSessionHandleInvalid })
	if slot, err := a.WaitForSlotEvent(ctx, ckfDontBlock); err != nil || slot != slotID {
		t.Errorf("event after removal: %d %v", slot, err)
	}
	if slots, _ := a.GetSlotList(true); len(slots) != 0 {
		t.Errorf("slots with a token after removal: %v", slots)
	}
	_, err := a.OpenSession(ctx, slotID, ckfSerialSession)
	rv(t, "open session without a token", err, ckrTokenNotPresent)

	// A blocking wait returns at insertion, while other calls go on.
	done := make(chan error, 1)
	go func() { _, err := a.WaitForSlotEvent(ctx, 0); done <- err }()
	time.Sleep(20 * time.Millisecond)
	if _, err := a.GetSlotList(false); err != nil {
		t.Errorf("GetSlotList while another call waits: %v", err)
	}
	f.dev.Card.Insert()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("blocking wait: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("blocking wait did not return at insertion")
	}
	s = f.open(a, false)
	if si, _ := a.GetSessionInfo(s); si.State != cksROPublic {
		t.Errorf("after re-insertion the application is still logged in (state %d)", si.State)
	}

	// C_Finalize ends a blocking wait.
	go func() { _, err := a.WaitForSlotEvent(ctx, 0); done <- err }()
	time.Sleep(20 * time.Millisecond)
	a.Finalize(ctx)
	select {
	case err := <-done:
		rv(t, "wait across C_Finalize", err, ckrCryptokiNotInitialized)
	case <-time.After(5 * time.Second):
		t.Fatal("C_Finalize did not end the blocking wait")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if cond() {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatal("condition not reached in 1s")
}

func TestAttributes(t *testing.T) {
	f := newFixture(t, "strict-2fa", nil)
	ctx := context.Background()
	a := f.app("a")
	s := f.open(a, false)
	a.Login(ctx, s, ckuUser, []byte("123456"))
	res, err := a.GetAttributeValue(ctx, s, handleOf(0x9C, ckoPrivateKey), []AttributeRequest{
		{Type: ckaClass, Capacity: 8}, {Type: ckaAlwaysAuthenticate, Capacity: 1}, {Type: ckaValue, Capacity: 100}, {Type: ckaECParams, Capacity: 0}, {Type: ckaLabel, Capacity: 2}, {Type: 0x7FFFFFF0, Capacity: 10},
	})
	if rvOf(err) != ckrBufferTooSmall && rvOf(err) != ckrAttributeTypeInvalid && rvOf(err) != ckrAttributeSensitive {
		t.Errorf("overall result %v", err)
	}
	want := []uint64{ckrOK, ckrOK, ckrAttributeSensitive, ckrOK, ckrBufferTooSmall, ckrAttributeTypeInvalid}
	for i, r := range res {
		if r.Status != want[i] {
			t.Errorf("attribute %#x: status %#x, want %#x", r.Type, r.Status, want[i])
		}
	}
	if res[1].Value[0] != 1 {
		t.Error("9C is not CKA_ALWAYS_AUTHENTICATE under strict-2fa")
	}
	if res[3].Length != len(oidP256) || res[3].Value != nil {
		t.Errorf("size-only EC_PARAMS: %d bytes, value %v", res[3].Length, res[3].Value)
	}
	res, _ = a.GetAttributeValue(ctx, s, handleOf(0x9A, ckoPublicKey), []AttributeRequest{{Type: ckaECPoint, Capacity: 100}})
	if v := res[0].Value; len(v) != 67 || v[0] != 0x04 || v[1] != 65 || v[2] != 0x04 {
		t.Errorf("CKA_EC_POINT = % X, want a DER OCTET STRING around the uncompressed point", v)
	}
	// Under opensc-ignore-user-consent the attribute lies, as OpenSC's quirk does.
	g := newFixture(t, "opensc-ignore-user-consent", nil)
	b := g.app("b")
	sb := g.open(b, false)
	b.Login(ctx, sb, ckuUser, []byte("123456"))
	res, _ = b.GetAttributeValue(ctx, sb, handleOf(0x9C, ckoPrivateKey), []AttributeRequest{{Type: ckaAlwaysAuthenticate, Capacity: 1}})
	if res[0].Value[0] != 0 {
		t.Error("CKA_ALWAYS_AUTHENTICATE true under opensc-ignore-user-consent")
	}
}

// With a prompter, the token has a protected authentication path: C_Login without a PIN asks,
// and under strict-2fa so does every 9C signature.
func TestProtectedAuthenticationPath(t *testing.T) {
	answers := prompt.NewScript(prompt.Answer{PIN: "123456"}, prompt.Answer{PIN: "123456"}, prompt.Answer{PIN: "123456"})
	f := newFixture(t, "strict-2fa", answers)
	ctx := context.Background()
	a := f.app("firefox")
	s := f.open(a, false)
	info, _ := a.GetTokenInfo(ctx, slotID)
	if info.Flags&ckfProtectedAuth == 0 {
		t.Fatal("no CKF_PROTECTED_AUTHENTICATION_PATH with a prompter")
	}
	rv(t, "login without PIN", a.Login(ctx, s, ckuUser, nil), ckrOK)
	digest := sha256.Sum256([]byte("x"))
	for i := 0; i < 2; i++ {
		a.SignInit(ctx, s, ecdsaMech, handleOf(0x9C, ckoPrivateKey))
		if _, _, err := a.Sign(ctx, s, digest[:], 64); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.rec.Count("firefox", middleware.EventPrompt); n != 3 {
		t.Errorf("%d prompts, want 3 (login and two 9C signatures)", n)
	}
	if len(answers.Requests()) != 3 || answers.Requests()[1].Slot != "9c" {
		t.Errorf("prompt requests %+v", answers.Requests())
	}
}

func TestGenerateKeyPair(t *testing.T) {
	f := newFixture(t, "strict-2fa", nil)
	ctx := context.Background()
	a := f.app("keygen")
	ro := f.open(a, false)
	a.Login(ctx, ro, ckuUser, []byte("123456"))
	tmpl := []Attribute{{Type: ckaECParams, Value: oidP384}, {Type: ckaID, Value: []byte{3}}}
	_, _, err := a.GenerateKeyPair(ctx, ro, Mechanism{Type: ckmECKeyPairGen}, tmpl, nil)
	rv(t, "keygen in a R/O session", err, ckrSessionReadOnly)
	rw := f.open(a, true)
	pub, priv, err := a.GenerateKeyPair(ctx, rw, Mechanism{Type: ckmECKeyPairGen}, tmpl, nil)
	if err != nil {
		t.Fatal(err)
	}
	if pub != handleOf(0x9D, ckoPublicKey) || priv != handleOf(0x9D, ckoPrivateKey) {
		t.Errorf("handles %#x %#x", pub, priv)
	}
	res, _ := a.GetAttributeValue(ctx, rw, pub, []AttributeRequest{{Type: ckaECParams, Capacity: 20}})
	if string(res[0].Value) != string(oidP384) {
		t.Errorf("new key params % X", res[0].Value)
	}
	_, _, err = a.GenerateKeyPair(ctx, rw, Mechanism{Type: ckmECKeyPairGen}, []Attribute{{Type: ckaECParams, Value: []byte{6, 1, 1}}}, nil)
	rv(t, "unknown curve", err, ckrAttributeValueInvalid)
	_, _, err = a.GenerateKeyPair(ctx, rw, Mechanism{Type: ckmRSAPKCSKeyPairGen}, []Attribute{{Type: ckaModulusBits, Value: ulong(1000)}}, nil)
	rv(t, "RSA-1000", err, ckrAttributeValueInvalid)
}

func TestMechanismsAndDigest(t *testing.T) {
	f := newFixture(t, "strict-2fa", nil)
	ctx := context.Background()
	a := f.app("a")
	s := f.open(a, false)
	list, _ := a.GetMechanismList(slotID)
	if len(list) != len(mechanisms) {
		t.Errorf("%d mechanisms listed", len(list))
	}
	_, err := a.GetMechanismInfo(slotID, 0x1234)
	rv(t, "unknown mechanism", err, ckrMechanismInvalid)
	a.DigestInit(s, Mechanism{Type: ckmSHA256})
	a.DigestUpdate(s, []byte("tok"))
	a.DigestUpdate(s, []byte("enlab"))
	d, _, err := a.DigestFinal(s, 32)
	want := sha256.Sum256([]byte("tokenlab"))
	if err != nil || string(d) != string(want[:]) {
		t.Errorf("digest: %v", err)
	}
	r, err := a.GenerateRandom(ctx, s, 40)
	if err != nil || len(r) != 40 {
		t.Errorf("random: %d bytes, %v", len(r), err)
	}
	r, err = a.GenerateRandom(ctx, s, 0)
	if err != nil || len(r) != 0 {
		t.Errorf("zero random bytes: %v", err)
	}
	rv(t, "seed", a.SeedRandom(s), ckrRandomSeedNotSupported)
	_, err = a.GetSessionInfo(999)
	rv(t, "bad session handle", err, ckrSessionHandleInvalid)
	b := f.srv.NewApp("uninitialized")
	_, err = b.GetSlotList(false)
	rv(t, "before C_Initialize", err, ckrCryptokiNotInitialized)
	rv(t, "second C_Initialize", a.Initialize(), ckrCryptokiAlreadyInitialized)
	_ = errors.New
}

// A policy idle time ends a live login (SP 800-63B §4.2.3). With nobody to ask, the signature
// after it answers CKR_USER_NOT_LOGGED_IN and the application is logged out as by C_Logout:
// its sessions are public, its key handle is gone, and C_Login works again.
func TestIdleLogout(t *testing.T) {
	ctx := context.Background()
	d, err := yubikey.New(yubikey.Options{Serial: 1234})
	if err != nil {
		t.Fatal(err)
	}
	c := pivclient.New(d.Card)
	c.Select(ctx)
	if err := c.AuthenticateManagementKey(ctx, pivclient.AlgAES192, piv.DefaultManagementKey); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GenerateKey(ctx, 0x9A, pivclient.AlgECCP256, pivclient.PINPolicyOnce, 1); err != nil {
		t.Fatal(err)
	}
	pol, _ := middleware.Profile("strict-2fa")
	pol.Idle = 15 * time.Minute
	clock := middleware.NewFakeClock(time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC))
	rec := &middleware.Recorder{}
	f := &fixture{t: t, dev: d, rec: rec, srv: New(Config{Reader: d.Card, Policy: pol, Audit: rec, Clock: clock})}
	a := f.app("vpn")
	s := f.open(a, false)
	digest := sha256.Sum256([]byte("idle"))
	sign := func() error {
		if err := a.SignInit(ctx, s, ecdsaMech, privateHandle(0x9A, a.loginGen)); err != nil {
			return err
		}
		_, _, err := a.Sign(ctx, s, digest[:], 64)
		return err
	}

	rv(t, "login", a.Login(ctx, s, ckuUser, []byte("123456")), ckrOK)
	key := privateHandle(0x9A, a.loginGen)
	for range 3 {
		clock.Advance(10 * time.Minute)
		rv(t, "sign within the idle time", sign(), ckrOK)
	}
	clock.Advance(16 * time.Minute)
	rv(t, "sign after 16 idle minutes", sign(), ckrUserNotLoggedIn)
	if si, _ := a.GetSessionInfo(s); si.State != cksROPublic {
		t.Errorf("session state %d after the idle logout, want RO public", si.State)
	}
	rv(t, "SignInit while logged out", a.SignInit(ctx, s, ecdsaMech, key), ckrUserNotLoggedIn)
	rv(t, "login again", a.Login(ctx, s, ckuUser, []byte("123456")), ckrOK)
	rv(t, "SignInit with the handle of the ended login", a.SignInit(ctx, s, ecdsaMech, key), ckrKeyHandleInvalid)
	rv(t, "sign after the new login", sign(), ckrOK)
	if n := rec.Count("vpn", middleware.EventCardReset); n != 1 {
		t.Errorf("%d card resets, want 1 (strict-2fa resets the card when the login ends)", n)
	}
}
