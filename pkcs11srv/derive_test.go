package pkcs11srv

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/asn1"
	"testing"
)

// The card's ECDH through C_DeriveKey gives the same Z as the peer computes with the card's
// public key; the derived key lives and dies with its session and the login.
func TestDeriveKey(t *testing.T) {
	f := newFixture(t, "strict-2fa", nil)
	ctx := context.Background()
	a := f.app("derive")
	s := f.open(a, false)
	peer, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	mech := func(pub []byte) Mechanism {
		return Mechanism{Type: ckmECDH1Derive, ECDH: &ECDH1Params{KDF: ckdNull, PublicData: pub}}
	}
	raw := peer.PublicKey().Bytes()
	der, _ := asn1.Marshal(raw)
	value := func(h, key uint64) []byte {
		t.Helper()
		res, err := a.GetAttributeValue(ctx, h, key, []AttributeRequest{{Type: ckaValue, Capacity: 64}})
		if err != nil {
			t.Fatalf("CKA_VALUE of %#x: %v", key, err)
		}
		return res[0].Value
	}
	want := func(slot byte) []byte {
		t.Helper()
		pub, err := f.publicKey(a, s, slot).ECDH()
		if err != nil {
			t.Fatal(err)
		}
		z, err := peer.ECDH(pub)
		if err != nil {
			t.Fatal(err)
		}
		return z
	}

	// 9A before login: the handle of a private key answers CKR_USER_NOT_LOGGED_IN.
	_, err = a.DeriveKey(ctx, s, mech(raw), privateHandle(0x9A, a.loginGen), nil)
	rv(t, "derive with 9A before login", err, ckrUserNotLoggedIn)

	// 9E (PIN never) derives without a login; its key is public.
	k, err := a.DeriveKey(ctx, s, mech(der), handleOf(0x9E, ckoPrivateKey), nil)
	if err != nil {
		t.Fatalf("derive with 9E and CKA_EC_POINT's DER form: %v", err)
	}
	if got := value(s, k); !bytes.Equal(got, want(0x9E)) {
		t.Errorf("9E: Z = %x, want %x", got, want(0x9E))
	}

	rv(t, "login", a.Login(ctx, s, ckuUser, []byte("123456")), ckrOK)
	s2 := f.open(a, false)
	k9a, err := a.DeriveKey(ctx, s2, mech(raw), privateHandle(0x9A, a.loginGen), []Attribute{
		{Type: ckaClass, Value: ulong(ckoSecretKey)}, {Type: ckaKeyType, Value: ulong(ckkAES)},
		{Type: ckaValueLen, Value: ulong(16)}, {Type: ckaLabel, Value: []byte("kek")},
	})
	if err != nil {
		t.Fatalf("derive an AES-128 key with 9A: %v", err)
	}
	if got, z := value(s, k9a), want(0x9A); !bytes.Equal(got, z[len(z)-16:]) {
		t.Errorf("9A, CKA_VALUE_LEN 16: %x, want the last 16 bytes of %x", got, z)
	}
	if err := a.FindObjectsInit(ctx, s, []Attribute{{Type: ckaClass, Value: ulong(ckoSecretKey)}}); err != nil {
		t.Fatal(err)
	}
	found, _ := a.FindObjects(s, 10)
	a.FindObjectsFinal(s)
	if len(found) != 2 {
		t.Errorf("secret keys found: %x, want the two derived", found)
	}

	// A sensitive key keeps its value.
	ks, err := a.DeriveKey(ctx, s, mech(raw), privateHandle(0x9A, a.loginGen), []Attribute{{Type: ckaSensitive, Value: boolean(true)}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.GetAttributeValue(ctx, s, ks, []AttributeRequest{{Type: ckaValue, Capacity: 64}})
	rv(t, "CKA_VALUE of a sensitive key", err, ckrAttributeSensitive)

	// Refusals.
	for _, c := range []struct {
		what string
		m    Mechanism
		key  uint64
		tmpl []Attribute
		want uint64
	}{
		{"X9.63 KDF", Mechanism{Type: ckmECDH1Derive, ECDH: &ECDH1Params{KDF: 2, PublicData: raw}}, handleOf(0x9E, ckoPrivateKey), nil, ckrMechanismParamInvalid},
		{"no parameters", Mechanism{Type: ckmECDH1Derive}, handleOf(0x9E, ckoPrivateKey), nil, ckrMechanismParamInvalid},
		{"point off the curve", mech(append([]byte{4}, make([]byte, 64)...)), handleOf(0x9E, ckoPrivateKey), nil, ckrMechanismParamInvalid},
		{"P-384 point on a P-256 key", mech(append([]byte{4}, make([]byte, 96)...)), handleOf(0x9E, ckoPrivateKey), nil, ckrMechanismParamInvalid},
		{"ECDSA mechanism", Mechanism{Type: ckmECDSA}, handleOf(0x9E, ckoPrivateKey), nil, ckrMechanismInvalid},
		{"public key as base", mech(raw), handleOf(0x9E, ckoPublicKey), nil, ckrKeyTypeInconsistent},
		{"token object", mech(raw), handleOf(0x9E, ckoPrivateKey), []Attribute{{Type: ckaToken, Value: boolean(true)}}, ckrAttributeValueInvalid},
		{"longer than Z", mech(raw), handleOf(0x9E, ckoPrivateKey), []Attribute{{Type: ckaValueLen, Value: ulong(33)}}, ckrTemplateInconsistent},
		{"AES without a length", mech(raw), handleOf(0x9E, ckoPrivateKey), []Attribute{{Type: ckaKeyType, Value: ulong(ckkAES)}}, ckrTemplateIncomplete},
		{"a private-key class", mech(raw), handleOf(0x9E, ckoPrivateKey), []Attribute{{Type: ckaClass, Value: ulong(ckoPrivateKey)}}, ckrTemplateInconsistent},
		{"CKA_VALUE given", mech(raw), handleOf(0x9E, ckoPrivateKey), []Attribute{{Type: ckaValue, Value: []byte{1}}}, ckrAttributeReadOnly},
		{"unknown attribute", mech(raw), handleOf(0x9E, ckoPrivateKey), []Attribute{{Type: 0x8000_0001, Value: []byte{1}}}, ckrAttributeTypeInvalid},
	} {
		_, err := a.DeriveKey(ctx, s, c.m, c.key, c.tmpl)
		rv(t, c.what, err, c.want)
	}

	// Another application sees none of them.
	b := f.app("other")
	sb := f.open(b, false)
	if _, err := b.GetAttributeValue(ctx, sb, k, []AttributeRequest{{Type: ckaValue, Capacity: 64}}); err == nil {
		t.Error("another application read a derived key")
	}

	// The card's objects cannot be destroyed; a derived key can, once.
	rv(t, "destroy the 9E key", a.DestroyObject(ctx, s, handleOf(0x9E, ckoPrivateKey)), ckrActionProhibited)
	rv(t, "destroy a derived key", a.DestroyObject(ctx, s, ks), ckrOK)
	rv(t, "destroy it again", a.DestroyObject(ctx, s, ks), ckrObjectHandleInvalid)

	// Closing s2 takes its key; logging out takes the private one left (k9a went with s2, k is
	// public and stays until s closes).
	rv(t, "close s2", a.CloseSession(ctx, s2), ckrOK)
	_, err = a.GetAttributeValue(ctx, s, k9a, []AttributeRequest{{Type: ckaValue, Capacity: 64}})
	rv(t, "key of a closed session", err, ckrObjectHandleInvalid)
	kp, err := a.DeriveKey(ctx, s, mech(raw), privateHandle(0x9A, a.loginGen), nil)
	if err != nil {
		t.Fatal(err)
	}
	rv(t, "logout", a.Logout(ctx, s), ckrOK)
	_, err = a.GetAttributeValue(ctx, s, kp, []AttributeRequest{{Type: ckaValue, Capacity: 64}})
	rv(t, "private derived key after logout", err, ckrObjectHandleInvalid)
	if got := value(s, k); !bytes.Equal(got, want(0x9E)) {
		t.Errorf("public derived key after logout: %x", got)
	}
}

// A PIN-always key derives once with the PIN of the login right before (as it signs), and is
// refused afterwards without a fresh PIN.
func TestDeriveKeyPINAlways(t *testing.T) {
	f := newFixture(t, "strict-2fa", nil)
	ctx := context.Background()
	a := f.app("derive")
	s := f.open(a, false)
	peer, _ := ecdh.P256().GenerateKey(rand.Reader)
	m := Mechanism{Type: ckmECDH1Derive, ECDH: &ECDH1Params{KDF: ckdNull, PublicData: peer.PublicKey().Bytes()}}
	rv(t, "login", a.Login(ctx, s, ckuUser, []byte("123456")), ckrOK)
	if _, err := a.DeriveKey(ctx, s, m, privateHandle(0x9C, a.loginGen), nil); err != nil {
		t.Fatalf("first derivation with 9C after login: %v", err)
	}
	_, err := a.DeriveKey(ctx, s, m, privateHandle(0x9C, a.loginGen), nil)
	rv(t, "second derivation with 9C", err, ckrUserNotLoggedIn)
}
