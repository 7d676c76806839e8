package interop

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"tokenlab/middleware/pivclient"
)

// TestYKCS11: Yubico's PKCS#11 module lists the card as a YubiKey with its serial and signs with
// 9A's P-256 key (CKA_ID 01).
func TestYKCS11(t *testing.T) {
	need(t, peerPkcs11Tool, peerYKCS11)
	dir := newCard(t, "--serial", "24681357")
	cert := provision(t, dir, pivclient.SlotAuthentication, pivclient.AlgECCP256, pivclient.PINPolicyOnce, "tokenlab ykcs11 test")
	serve(t, dir)
	module := peerYKCS11.path

	out := run(t, "pkcs11-tool", "--module", module, "-L")
	for _, want := range []string{"token label        : YubiKey PIV #24681357", "serial num         : 24681357", "Yubico"} {
		if !strings.Contains(out, want) {
			t.Errorf("pkcs11-tool -L lacks %q:\n%s", want, out)
		}
	}
	out = run(t, "pkcs11-tool", "--module", module, "--login", "--pin", "123456", "-O")
	for _, want := range []string{"Private Key Object; EC", "CN=tokenlab ykcs11 test", "Attestation"} {
		if !strings.Contains(out, want) {
			t.Errorf("pkcs11-tool -O lacks %q:\n%s", want, out)
		}
	}

	digest := sha256.Sum256([]byte("signed by ykcs11 through tokenlab"))
	tmp := t.TempDir()
	in, sigPath := filepath.Join(tmp, "digest"), filepath.Join(tmp, "sig")
	if err := os.WriteFile(in, digest[:], 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, "pkcs11-tool", "--module", module, "--login", "--pin", "123456", "--sign", "--mechanism", "ECDSA",
		"--id", "01", "--input-file", in, "--output-file", sigPath)
	sig, err := os.ReadFile(sigPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(sig) != 64 {
		t.Fatalf("signature is %d bytes, want 64 (r||s)", len(sig))
	}
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(cert.PublicKey.(*ecdsa.PublicKey), digest[:], r, s) {
		t.Error("ykcs11's signature does not verify against the certificate's public key")
	}
}
