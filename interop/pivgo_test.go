package interop

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-piv/piv-go/v2/piv"
)

// TestPivGo runs piv-go v2 (Yubico's PIV protocol as a Go library, over PC/SC) against the card.
func TestPivGo(t *testing.T) {
	need(t, peerPcscliteDevLib)
	dir := newCard(t, "--serial", "31415926")
	serve(t, dir)
	yk := openPivGo(t)
	defer func() { yk.Close() }()

	if v := yk.Version(); v.Major != 5 || v.Minor != 7 {
		t.Errorf("Version = %+v, want 5.7.x", v)
	}
	if s, err := yk.Serial(); err != nil || s != 31415926 {
		t.Errorf("Serial = %d, %v", s, err)
	}
	if n, err := yk.Retries(); err != nil || n != 3 {
		t.Errorf("Retries = %d, %v", n, err)
	}

	root := x509.NewCertPool()
	rootPath := filepath.Join(t.TempDir(), "root.pem")
	os.WriteFile(rootPath, []byte(run(t, tokenlabBin, "card", "attestation-root", "--state", dir)), 0o600)
	root.AddCert(readCertificate(t, rootPath))
	attCert, err := yk.AttestationCertificate()
	if err != nil {
		t.Fatal(err)
	}

	keys := []struct {
		name  string
		slot  piv.Slot
		key   piv.Key
		sigs  int
		wantN int // PIN prompts for sigs signatures, in this order on one handle
	}{
		{"P-256 PIN once", piv.SlotAuthentication, piv.Key{Algorithm: piv.AlgorithmEC256, PINPolicy: piv.PINPolicyOnce, TouchPolicy: piv.TouchPolicyNever}, 3, 1},
		{"P-384 PIN always", piv.SlotSignature, piv.Key{Algorithm: piv.AlgorithmEC384, PINPolicy: piv.PINPolicyAlways, TouchPolicy: piv.TouchPolicyNever}, 3, 3},
		{"Ed25519 PIN never", piv.SlotCardAuthentication, piv.Key{Algorithm: piv.AlgorithmEd25519, PINPolicy: piv.PINPolicyNever, TouchPolicy: piv.TouchPolicyNever}, 2, 0},
		// The PIN is still verified from the first key: "once" is once per card session, for every slot.
		{"RSA-2048 PIN once, touch always", piv.SlotKeyManagement, piv.Key{Algorithm: piv.AlgorithmRSA2048, PINPolicy: piv.PINPolicyOnce, TouchPolicy: piv.TouchPolicyAlways}, 2, 0},
		{"P-256 touch cached", retired(t, 0x82), piv.Key{Algorithm: piv.AlgorithmEC256, PINPolicy: piv.PINPolicyNever, TouchPolicy: piv.TouchPolicyCached}, 2, 0},
	}
	for _, k := range keys {
		t.Run(k.name, func(t *testing.T) {
			pub, err := yk.GenerateKey(piv.DefaultManagementKey, k.slot, k.key)
			if err != nil {
				t.Fatal(err)
			}
			info, err := yk.KeyInfo(k.slot)
			if err != nil {
				t.Fatal(err)
			}
			if info.Algorithm != k.key.Algorithm || info.PINPolicy != k.key.PINPolicy || info.TouchPolicy != k.key.TouchPolicy ||
				info.Origin != piv.OriginGenerated || !publicEqual(info.PublicKey, pub) {
				t.Errorf("KeyInfo = %+v, want %+v from a generated key", info, k.key)
			}

			prompts := 0
			auth := piv.KeyAuth{PINPrompt: func() (string, error) { prompts++; return piv.DefaultPIN, nil }}
			priv, err := yk.PrivateKey(k.slot, pub, auth)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < k.sigs; i++ {
				signAndVerify(t, priv.(crypto.Signer), pub)
			}
			if prompts != k.wantN {
				t.Errorf("%d signatures asked for the PIN %d times, want %d", k.sigs, prompts, k.wantN)
			}

			slotCert, err := yk.Attest(k.slot)
			if err != nil {
				t.Fatal(err)
			}
			a, err := (&piv.Verifier{Roots: root}).Verify(attCert, slotCert)
			if err != nil {
				t.Fatalf("attestation does not verify to the card's root: %v", err)
			}
			if a.Serial != 31415926 || a.Slot != k.slot || a.PINPolicy != k.key.PINPolicy || a.TouchPolicy != k.key.TouchPolicy ||
				a.Version.Major != 5 || !publicEqual(slotCert.PublicKey, pub) {
				t.Errorf("attestation = %+v", a)
			}
			if _, err := piv.Verify(attCert, slotCert); err == nil {
				t.Error("attestation verified against Yubico's roots: the card must not pass for a real YubiKey")
			}
		})
	}

	t.Run("ECDH P-256", func(t *testing.T) {
		pub, err := yk.GenerateKey(piv.DefaultManagementKey, retired(t, 0x83), piv.Key{Algorithm: piv.AlgorithmEC256, PINPolicy: piv.PINPolicyNever, TouchPolicy: piv.TouchPolicyNever})
		if err != nil {
			t.Fatal(err)
		}
		priv, err := yk.PrivateKey(retired(t, 0x83), pub, piv.KeyAuth{})
		if err != nil {
			t.Fatal(err)
		}
		peer, _ := ecdh.P256().GenerateKey(rand.Reader)
		got, err := priv.(*piv.ECDSAPrivateKey).ECDH(peer.PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		cardPub, _ := pub.(*ecdsa.PublicKey).ECDH()
		want, _ := peer.ECDH(cardPub)
		if string(got) != string(want) {
			t.Error("card and host disagree on the shared secret")
		}
	})

	t.Run("certificates", func(t *testing.T) {
		pub, err := yk.GenerateKey(piv.DefaultManagementKey, retired(t, 0x84), piv.Key{Algorithm: piv.AlgorithmEC256, PINPolicy: piv.PINPolicyNever, TouchPolicy: piv.TouchPolicyNever})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := yk.Certificate(retired(t, 0x84)); !errors.Is(err, piv.ErrNotFound) {
			t.Errorf("certificate of a fresh key: %v, want ErrNotFound", err)
		}
		priv, _ := yk.PrivateKey(retired(t, 0x84), pub, piv.KeyAuth{})
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "piv-go"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
		if err != nil {
			t.Fatal(err)
		}
		cert, _ := x509.ParseCertificate(der)
		if err := yk.SetCertificate(piv.DefaultManagementKey, retired(t, 0x84), cert); err != nil {
			t.Fatal(err)
		}
		got, err := yk.Certificate(retired(t, 0x84))
		if err != nil || !got.Equal(cert) {
			t.Errorf("Certificate = %v, %v", got, err)
		}
	})

	newKey := make([]byte, 32)
	rand.Read(newKey)
	t.Run("management key", func(t *testing.T) {
		if err := yk.SetManagementKey(piv.DefaultManagementKey, newKey); err != nil {
			t.Fatal(err)
		}
		if st := cardStatus(t, dir); st.ManagementKey.Algorithm != "aes256" || st.ManagementKey.Default {
			t.Errorf("card status management key = %+v, want a non-default aes256", st.ManagementKey)
		}
		if _, err := yk.GenerateKey(piv.DefaultManagementKey, retired(t, 0x85), piv.Key{Algorithm: piv.AlgorithmEC256}); err == nil {
			t.Error("GenerateKey with the old management key succeeded")
		}
		if _, err := yk.GenerateKey(newKey, retired(t, 0x85), piv.Key{Algorithm: piv.AlgorithmEC256, PINPolicy: piv.PINPolicyOnce, TouchPolicy: piv.TouchPolicyNever}); err != nil {
			t.Errorf("GenerateKey with the new management key: %v", err)
		}
	})

	t.Run("metadata", func(t *testing.T) {
		key := make([]byte, 24)
		rand.Read(key)
		if err := yk.SetMetadata(newKey, &piv.Metadata{ManagementKey: &key}); err != nil {
			t.Fatal(err)
		}
		m, err := yk.Metadata(piv.DefaultPIN)
		if err != nil || m.ManagementKey == nil || string(*m.ManagementKey) != string(key) {
			t.Errorf("Metadata = %+v, %v", m, err)
		}
	})

	t.Run("unblock", func(t *testing.T) {
		yk.Close() // a fresh handle starts logged out: piv-go's Retries fails on a verified PIN
		yk = openPivGo(t)
		var ae piv.AuthErr
		for want := 2; want >= 0; want-- {
			if err := yk.VerifyPIN("999999"); !errors.As(err, &ae) || ae.Retries != want {
				t.Fatalf("wrong PIN: %v, want AuthErr{%d}", err, want)
			}
		}
		if err := yk.VerifyPIN(piv.DefaultPIN); !errors.As(err, &ae) || ae.Retries != 0 {
			t.Fatalf("right PIN on a blocked card: %v", err)
		}
		if err := yk.Unblock(piv.DefaultPUK, "24682468"); err != nil {
			t.Fatal(err)
		}
		if err := yk.VerifyPIN("24682468"); err != nil {
			t.Errorf("new PIN after unblock: %v", err)
		}
		if err := yk.SetPIN("24682468", piv.DefaultPIN); err != nil {
			t.Errorf("SetPIN: %v", err)
		}
	})

	t.Run("reset", func(t *testing.T) {
		if err := yk.Reset(); err != nil {
			t.Fatal(err)
		}
		st := cardStatus(t, dir)
		if !st.PIN.Default || !st.PUK.Default || !st.ManagementKey.Default || st.ManagementKey.Algorithm != "aes192" {
			t.Errorf("after Reset: %+v", st)
		}
		if len(st.Slots) != 1 || st.Slots[0].Slot != "f9" {
			t.Errorf("after Reset the slots are %+v, want only the attestation key", st.Slots)
		}
		if _, err := yk.KeyInfo(piv.SlotAuthentication); !errors.Is(err, piv.ErrNotFound) {
			t.Errorf("KeyInfo(9a) after Reset: %v, want ErrNotFound", err)
		}
	})
}

func retired(t *testing.T, key uint32) piv.Slot {
	s, ok := piv.RetiredKeyManagementSlot(key)
	if !ok {
		t.Fatalf("no retired slot %x", key)
	}
	return s
}

func publicEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// signAndVerify signs with a card key through piv-go and checks the signature with pub.
func signAndVerify(t *testing.T, s crypto.Signer, pub crypto.PublicKey) {
	t.Helper()
	msg := []byte("signed through piv-go")
	digest := sha256.Sum256(msg)
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		sig, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if !ecdsa.VerifyASN1(pub, digest[:], sig) {
			t.Error("ECDSA signature does not verify")
		}
	case ed25519.PublicKey:
		sig, err := s.Sign(rand.Reader, msg, crypto.Hash(0))
		if err != nil {
			t.Fatal(err)
		}
		if !ed25519.Verify(pub, msg, sig) {
			t.Error("Ed25519 signature does not verify")
		}
	case *rsa.PublicKey:
		sig, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig); err != nil {
			t.Errorf("RSA PKCS#1 v1.5 signature: %v", err)
		}
		sig, err = s.Sign(rand.Reader, digest[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256})
		if err != nil {
			t.Fatal(err)
		}
		if err := rsa.VerifyPSS(pub, crypto.SHA256, digest[:], sig, nil); err != nil {
			t.Errorf("RSA-PSS signature: %v", err)
		}
	default:
		t.Fatalf("unexpected key type %T", pub)
	}
}

// TestPivGoTouchRefused: with `serve --touch refuse` nobody touches the card, and a key with
// touch policy "always" does not sign, while one without touch does.
func TestPivGoTouchRefused(t *testing.T) {
	need(t, peerPcscliteDevLib)
	dir := newCard(t)
	serve(t, dir, "--touch", "refuse")
	yk := openPivGo(t)
	defer yk.Close()
	for _, tc := range []struct {
		slot  piv.Slot
		touch piv.TouchPolicy
		ok    bool
	}{{piv.SlotAuthentication, piv.TouchPolicyAlways, false}, {piv.SlotCardAuthentication, piv.TouchPolicyNever, true}} {
		pub, err := yk.GenerateKey(piv.DefaultManagementKey, tc.slot, piv.Key{Algorithm: piv.AlgorithmEC256, PINPolicy: piv.PINPolicyNever, TouchPolicy: tc.touch})
		if err != nil {
			t.Fatal(err)
		}
		priv, err := yk.PrivateKey(tc.slot, pub, piv.KeyAuth{})
		if err != nil {
			t.Fatal(err)
		}
		digest := sha256.Sum256([]byte("touch"))
		_, err = priv.(crypto.Signer).Sign(rand.Reader, digest[:], crypto.SHA256)
		if tc.ok != (err == nil) {
			t.Errorf("touch policy %v: sign error %v", tc.touch, err)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "6985")) {
			t.Errorf("refused touch: %v, want 6985", err)
		}
	}
}
