package interop

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/sha512"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPKCS11Tool: OpenSC's pkcs11-tool through Debian's p11-kit-client.so to tokenlab serve:
// list, mechanisms, objects, the built-in test, and ECDSA P-256 and P-384 signatures that verify
// against the certificates' keys.
func TestPKCS11Tool(t *testing.T) {
	need(t, peerPkcs11Tool, peerP11KitClient)
	dir := provisionP11(t)
	s := serveP11(t, dir)

	out := s.run(t, "pkcs11-tool", "--module", "{module}", "-L", "-M", "-O")
	for _, want := range []string{"token label        : YubiKey PIV #", "login required", "rng", "ECDSA", "SHA256-RSA-PKCS",
		"Certificate Object; type = X.509 cert", "CN=tokenlab P-256", "Public Key Object; EC  EC_POINT 384 bits", "EC_PARAMS:  06052b81040022"} {
		if !strings.Contains(out, want) {
			t.Errorf("pkcs11-tool -L -M -O lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "Private Key Object") {
		t.Errorf("private keys visible without login:\n%s", out)
	}
	out = s.run(t, "pkcs11-tool", "--module", "{module}", "--test", "--login", "--pin", "123456")
	if !strings.Contains(out, "No errors") {
		t.Errorf("pkcs11-tool --test:\n%s", out)
	}

	tmp := t.TempDir()
	for _, tc := range []struct {
		id     string
		digest []byte
		cn     string
	}{
		{"01", sum256("signed with P-256 through p11-kit"), "tokenlab P-256"},
		{"02", sum384("signed with P-384 through p11-kit"), "tokenlab P-384"},
	} {
		in, sig, cert := filepath.Join(tmp, "in"+tc.id), filepath.Join(tmp, "sig"+tc.id), filepath.Join(tmp, "cert"+tc.id)
		os.WriteFile(in, tc.digest, 0o600)
		s.run(t, "pkcs11-tool", "--module", "{module}", "--login", "--pin", "123456", "--sign", "--mechanism", "ECDSA",
			"--id", tc.id, "--input-file", in, "--output-file", sig)
		s.run(t, "pkcs11-tool", "--module", "{module}", "--read-object", "--type", "cert", "--id", tc.id, "--output-file", cert)
		c := readDER(t, cert)
		if c.Subject.CommonName != tc.cn {
			t.Errorf("certificate %s: %s", tc.id, c.Subject)
		}
		b, _ := os.ReadFile(sig)
		pub := c.PublicKey.(*ecdsa.PublicKey)
		n := len(b) / 2
		if !ecdsa.Verify(pub, tc.digest, new(big.Int).SetBytes(b[:n]), new(big.Int).SetBytes(b[n:])) {
			t.Errorf("signature with key %s does not verify against its certificate", tc.id)
		}
	}
}

func sum256(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }
func sum384(s string) []byte { h := sha512.Sum384([]byte(s)); return h[:] }
