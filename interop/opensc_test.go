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

// TestOpenSC: OpenSC 0.23.0 recognises the card as a PIV card, lists the token and its objects
// through opensc-pkcs11.so, and makes an ECDSA signature with 9A's key that verifies against
// the certificate.
func TestOpenSC(t *testing.T) {
	need(t, peerOpenscTool, peerPkcs11Tool, peerOpenscPKCS11)
	dir := newCard(t)
	cert := provision(t, dir, pivclient.SlotAuthentication, pivclient.AlgECCP256, pivclient.PINPolicyOnce, "tokenlab OpenSC test")
	serve(t, dir)
	module := peerOpenscPKCS11.path

	if out := run(t, "opensc-tool", "-r", reader0, "-n"); !strings.Contains(out, "Personal Identity Verification Card") {
		t.Errorf("opensc-tool -n does not name a PIV card:\n%s", out)
	}

	out := run(t, "pkcs11-tool", "--module", module, "-L")
	for _, want := range []string{reader0, "token label        : tokenlab OpenSC test", "login required", "rng"} {
		if !strings.Contains(out, want) {
			t.Errorf("pkcs11-tool -L lacks %q:\n%s", want, out)
		}
	}
	out = run(t, "pkcs11-tool", "--module", module, "-O")
	for _, want := range []string{"Certificate Object", "CN=tokenlab OpenSC test", "Public Key Object; EC", "ID:         01"} {
		if !strings.Contains(out, want) {
			t.Errorf("pkcs11-tool -O lacks %q:\n%s", want, out)
		}
	}
	out = run(t, "pkcs11-tool", "--module", module, "--login", "--pin", "123456", "-O")
	if !strings.Contains(out, "Private Key Object; EC") {
		t.Errorf("pkcs11-tool --login -O shows no private key:\n%s", out)
	}

	digest := sha256.Sum256([]byte("signed by OpenSC through tokenlab"))
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
		t.Fatalf("CKM_ECDSA signature is %d bytes, want 64 (r||s)", len(sig))
	}
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(cert.PublicKey.(*ecdsa.PublicKey), digest[:], r, s) {
		t.Error("OpenSC's signature does not verify against the certificate's public key")
	}
}
