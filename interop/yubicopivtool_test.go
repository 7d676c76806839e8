package interop

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-piv/piv-go/v2/piv"
)

const (
	defaultMgmKey = "010203040506070801020304050607080102030405060708"
	newMgmKey     = "0f0e0d0c0b0a09080706050403020100f0e0d0c0b0a09080"
)

// ypt runs yubico-piv-tool on the test's reader.
func ypt(t *testing.T, args ...string) string {
	t.Helper()
	return run(t, "yubico-piv-tool", append([]string{"-r", readerName}, args...)...)
}

// TestYubicoPIVTool drives the card with yubico-piv-tool 2.2.0 and checks after each action that
// the card's persisted state (tokenlab card status) agrees with what the tool did.
// yubico-piv-tool 2.2.0 only knows 3DES management keys, so the card is made with one.
func TestYubicoPIVTool(t *testing.T) {
	need(t, peerYubicoPIVTool)
	dir := newCard(t, "--mgmt-key-alg", "3des", "--serial", "13572468")
	serve(t, dir)
	tmp := t.TempDir()

	// status: version, serial and PIN tries as the card reports them.
	out := ypt(t, "-a", "status")
	st := cardStatus(t, dir)
	for _, want := range []string{"Version:\t" + st.Version, "Serial Number:\t13572468", "PIN tries left:\t3"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}

	// generate: a P-256 key in 9C, PIN policy "always" by default.
	pubPath := filepath.Join(tmp, "9c.pub")
	ypt(t, "-a", "generate", "-s", "9c", "-A", "ECCP256", "-o", pubPath)
	pub := readPublicKey(t, pubPath).(*ecdsa.PublicKey)
	if s := cardStatus(t, dir).slot("9c"); s == nil || s.Algorithm != "eccp256" || s.PINPolicy != "always" || s.Origin != "generated" {
		t.Fatalf("after generate, card status says 9c is %+v", s)
	}

	// selfsign-certificate: Debian's 2.2.0 build never asks the card to sign under OpenSSL 3
	// (yubico-piv-tool#388). Try it; if it fails that way, make the certificate with the card's
	// key through piv-go instead, and import it with yubico-piv-tool.
	certPath := filepath.Join(tmp, "9c.crt")
	out, err := runErr("yubico-piv-tool", "-r", readerName, "-a", "verify-pin", "-P", "123456",
		"-a", "selfsign-certificate", "-s", "9c", "-S", "/CN=yubico-piv-tool/", "-i", pubPath, "-o", certPath)
	if err != nil {
		if !strings.Contains(out, "Failed signing certificate.") {
			t.Fatalf("selfsign-certificate failed unexpectedly: %v\n%s", err, out)
		}
		t.Logf("selfsign-certificate hit yubico-piv-tool#388 (host side, OpenSSL 3); signing the certificate through piv-go")
		writeCertificate(t, certPath, selfSignWithPivGo(t, piv.SlotSignature, pub, "yubico-piv-tool"))
	}
	ypt(t, "-a", "import-certificate", "-s", "9c", "-i", certPath)
	if s := cardStatus(t, dir).slot("9c"); s == nil || s.Subject != "CN=yubico-piv-tool" {
		t.Fatalf("after import-certificate, card status says 9c is %+v", s)
	}
	if out := ypt(t, "-a", "read-certificate", "-s", "9c"); !strings.Contains(out, "BEGIN CERTIFICATE") {
		t.Errorf("read-certificate:\n%s", out)
	}
	// test-signature signs with 9C (PIN always: right after VERIFY) and checks it with the certificate.
	if out := ypt(t, "-a", "verify-pin", "-P", "123456", "-a", "test-signature", "-s", "9c", "-i", certPath); !strings.Contains(out, "Successful") {
		t.Errorf("test-signature:\n%s", out)
	}

	// attest: a certificate for 9C's key, issued by the F9 key, chained to the card's root.
	attPath := filepath.Join(tmp, "att.pem")
	ypt(t, "-a", "attest", "-s", "9c", "-o", attPath)
	f9Path := filepath.Join(tmp, "f9.pem")
	ypt(t, "-a", "read-certificate", "-s", "f9", "-o", f9Path)
	rootPath := filepath.Join(tmp, "root.pem")
	if err := os.WriteFile(rootPath, []byte(run(t, tokenlabBin, "card", "attestation-root", "--state", dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	att := readCertificate(t, attPath)
	verifyChain(t, att, readCertificate(t, f9Path), readCertificate(t, rootPath))
	if !att.PublicKey.(*ecdsa.PublicKey).Equal(pub) {
		t.Error("attestation certificate is not for 9C's key")
	}

	// change-pin, then a wrong PIN costs a try, the new one works.
	ypt(t, "-a", "change-pin", "-P", "123456", "-N", "654321")
	if st := cardStatus(t, dir); st.PIN.Default || st.PIN.Retries != 3 {
		t.Errorf("after change-pin: %+v", st.PIN)
	}
	if out, err := runErr("yubico-piv-tool", "-r", readerName, "-a", "verify-pin", "-P", "123456"); err == nil || !strings.Contains(out, "2 tries left") {
		t.Errorf("old PIN: err %v\n%s", err, out)
	}
	if st := cardStatus(t, dir); st.PIN.Retries != 2 {
		t.Errorf("after a wrong PIN, card status says %d tries", st.PIN.Retries)
	}
	ypt(t, "-a", "verify-pin", "-P", "654321")

	// unblock-pin: block the PIN, then set a new one with the PUK.
	for i := 0; i < 3; i++ {
		runErr("yubico-piv-tool", "-r", readerName, "-a", "verify-pin", "-P", "000000")
	}
	if st := cardStatus(t, dir); st.PIN.Retries != 0 {
		t.Fatalf("PIN not blocked after 3 wrong tries: %+v", st.PIN)
	}
	ypt(t, "-a", "unblock-pin", "-P", "12345678", "-N", "112233")
	if st := cardStatus(t, dir); st.PIN.Retries != 3 || st.PUK.Retries != 3 {
		t.Errorf("after unblock-pin: PIN %+v PUK %+v", st.PIN, st.PUK)
	}
	ypt(t, "-a", "verify-pin", "-P", "112233")

	// set-mgm-key: the old key stops working, the new one works.
	ypt(t, "-a", "set-mgm-key", "-n", newMgmKey)
	if st := cardStatus(t, dir); st.ManagementKey.Default || st.ManagementKey.Algorithm != "3des" {
		t.Errorf("after set-mgm-key: %+v", st.ManagementKey)
	}
	if out, err := runErr("yubico-piv-tool", "-r", readerName, "-a", "generate", "-s", "9d", "-A", "ECCP256"); err == nil {
		t.Errorf("generate with the old management key succeeded:\n%s", out)
	}
	ypt(t, "--key="+newMgmKey, "-a", "generate", "-s", "9d", "-A", "ECCP384")
	if s := cardStatus(t, dir).slot("9d"); s == nil || s.Algorithm != "eccp384" || s.PINPolicy != "once" {
		t.Errorf("after generate 9d with the new key: %+v", s)
	}

	// pin-retries: needs the PIN and the management key; resets PIN and PUK to defaults.
	ypt(t, "--key="+newMgmKey, "-a", "verify-pin", "-P", "112233", "-a", "pin-retries", "--pin-retries=5", "--puk-retries=4")
	if st := cardStatus(t, dir); st.PIN.MaxRetries != 5 || st.PUK.MaxRetries != 4 || !st.PIN.Default || !st.PUK.Default {
		t.Errorf("after pin-retries: PIN %+v PUK %+v", st.PIN, st.PUK)
	}

	// reset: refused while PIN or PUK works, done once both are blocked.
	if out, err := runErr("yubico-piv-tool", "-r", readerName, "-a", "reset"); err == nil {
		t.Errorf("reset succeeded with PIN and PUK unblocked:\n%s", out)
	}
	for i := 0; i < 5; i++ {
		runErr("yubico-piv-tool", "-r", readerName, "-a", "verify-pin", "-P", "000000")
	}
	for i := 0; i < 4; i++ {
		runErr("yubico-piv-tool", "-r", readerName, "-a", "unblock-pin", "-P", "00000000", "-N", "000000")
	}
	if st := cardStatus(t, dir); st.PIN.Retries != 0 || st.PUK.Retries != 0 {
		t.Fatalf("PIN and PUK not blocked: %+v %+v", st.PIN, st.PUK)
	}
	ypt(t, "-a", "reset")
	st = cardStatus(t, dir)
	if !st.PIN.Default || !st.PUK.Default || st.PIN.Retries != 3 || !st.ManagementKey.Default || st.ManagementKey.Algorithm != "3des" {
		t.Errorf("after reset: %+v", st)
	}
	if len(st.Slots) != 1 || st.Slots[0].Slot != "f9" {
		t.Errorf("after reset the slots are %+v, want only the attestation key", st.Slots)
	}
	if s := ypt(t, "-a", "status"); !strings.Contains(s, "PIN tries left:\t3") {
		t.Errorf("status after reset:\n%s", s)
	}
}

func readPEM(t *testing.T, path, typ string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != typ {
		t.Fatalf("%s: no %s PEM block in:\n%s", path, typ, b)
	}
	return blk.Bytes
}

func readPublicKey(t *testing.T, path string) any {
	t.Helper()
	k, err := x509.ParsePKIXPublicKey(readPEM(t, path, "PUBLIC KEY"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func readCertificate(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(readPEM(t, path, "CERTIFICATE"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func writeCertificate(t *testing.T, path string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// verifyChain checks leaf ← intermediate ← root with crypto/x509.
func verifyChain(t *testing.T, leaf, intermediate, root *x509.Certificate) {
	t.Helper()
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	roots.AddCert(root)
	inter.AddCert(intermediate)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("attestation chain: %v", err)
	}
}

// openPivGo opens the test reader with piv-go.
func openPivGo(t *testing.T) *piv.YubiKey {
	t.Helper()
	yk, err := piv.Open(reader0)
	if err != nil {
		t.Fatalf("piv-go: open %q: %v", reader0, err)
	}
	return yk
}

// selfSignWithPivGo makes a self-signed certificate for the key in slot, signed by the card.
func selfSignWithPivGo(t *testing.T, slot piv.Slot, pub *ecdsa.PublicKey, cn string) []byte {
	t.Helper()
	yk := openPivGo(t)
	defer yk.Close()
	priv, err := yk.PrivateKey(slot, pub, piv.KeyAuth{PIN: "123456"})
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

var _ = hex.EncodeToString
