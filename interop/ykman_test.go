package interop

import (
	"crypto/ecdsa"
	"path/filepath"
	"strings"
	"testing"
)

// TestYkman drives the card with Yubico's ykman 4.0.9. vpcd offers two reader slots, so ykman
// sees two YubiKey readers and needs --device SERIAL, which it resolves through the management
// application's device info.
func TestYkman(t *testing.T) {
	need(t, peerYkman)
	dir := newCard(t, "--serial", "27182818")
	serve(t, dir)
	ykman := func(args ...string) string {
		t.Helper()
		return run(t, "ykman", append([]string{"--device", "27182818"}, args...)...)
	}
	tmp := t.TempDir()

	out := ykman("info")
	for _, want := range []string{"Serial number: 27182818", "Firmware version: 5.7.1", "PIV         \tEnabled"} {
		if !strings.Contains(out, want) {
			t.Errorf("ykman info lacks %q:\n%s", want, out)
		}
	}
	out = ykman("piv", "info")
	for _, want := range []string{"PIV version: 5.7.1", "PIN tries remaining: 3/3", "WARNING: Using default PIN!", "Management key algorithm: AES192"} {
		if !strings.Contains(out, want) {
			t.Errorf("ykman piv info lacks %q:\n%s", want, out)
		}
	}

	pubPath := filepath.Join(tmp, "9a.pem")
	ykman("piv", "keys", "generate", "-a", "ECCP256", "-m", defaultMgmKey, "--pin-policy", "ONCE", "9a", pubPath)
	pub := readPublicKey(t, pubPath).(*ecdsa.PublicKey)
	if s := cardStatus(t, dir).slot("9a"); s == nil || s.Algorithm != "eccp256" || s.PINPolicy != "once" || s.Origin != "generated" {
		t.Fatalf("after keys generate, card status says 9a is %+v", s)
	}

	// certificates generate signs the certificate with the card's 9A key.
	ykman("piv", "certificates", "generate", "-s", "CN=ykman", "-P", "123456", "-m", defaultMgmKey, "9a", pubPath)
	if s := cardStatus(t, dir).slot("9a"); s == nil || s.Subject != "CN=ykman" {
		t.Fatalf("after certificates generate, card status says 9a is %+v", s)
	}
	certPath := filepath.Join(tmp, "9a.crt")
	ykman("piv", "certificates", "export", "9a", certPath)
	cert := readCertificate(t, certPath)
	if err := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
		t.Errorf("self-signed certificate made through the card does not verify: %v", err)
	}
	if !cert.PublicKey.(*ecdsa.PublicKey).Equal(pub) {
		t.Error("certificate is not for the generated key")
	}
	if out := ykman("piv", "info"); !strings.Contains(out, "Subject DN:\tCN=ykman") {
		t.Errorf("piv info does not show the certificate:\n%s", out)
	}

	attPath := filepath.Join(tmp, "att.pem")
	ykman("piv", "keys", "attest", "9a", attPath)
	if att := readCertificate(t, attPath); !att.PublicKey.(*ecdsa.PublicKey).Equal(pub) || att.Subject.CommonName != "YubiKey PIV Attestation 9a" {
		t.Errorf("attestation: subject %q", att.Subject)
	}

	ykman("piv", "access", "change-pin", "-P", "123456", "-n", "654321")
	if st := cardStatus(t, dir); st.PIN.Default || st.PIN.Retries != 3 {
		t.Errorf("after change-pin: %+v", st.PIN)
	}
	if out := ykman("piv", "info"); strings.Contains(out, "default PIN") {
		t.Errorf("piv info still warns about the default PIN:\n%s", out)
	}
}
