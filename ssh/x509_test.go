package ssh

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	gossh "golang.org/x/crypto/ssh"
)

// goldenData is what testdata/asyncssh/golden.py signed.
var goldenData = []byte("tokenlab RFC 6187 golden signature")

func readGolden(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "asyncssh", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAsyncSSHGolden: key blobs and signatures made by AsyncSSH 2.10 (golden.py) parse,
// re-marshal byte for byte, validate against AsyncSSH's CA, and verify; a changed message does
// not.
func TestAsyncSSHGolden(t *testing.T) {
	ca, err := x509.ParseCertificate(readGolden(t, "ca.der"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	for _, tc := range []struct{ name, algo string }{
		{"p256", KeyAlgoX509ECDSA256}, {"p384", KeyAlgoX509ECDSA384}, {"rsa2048", KeyAlgoX509RSA2048SHA256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			blob := readGolden(t, tc.name+".blob")
			k, err := ParseX509Key(blob)
			if err != nil {
				t.Fatal(err)
			}
			if k.Type() != tc.algo || len(k.Chain) != 2 || len(k.OCSP) != 0 {
				t.Fatalf("type %s, %d certificates, %d OCSP", k.Type(), len(k.Chain), len(k.OCSP))
			}
			if !bytes.Equal(k.Marshal(), blob) {
				t.Error("Marshal differs from the parsed blob")
			}
			again, err := NewX509Key(k.Chain, nil)
			if err != nil || !bytes.Equal(again.Marshal(), blob) {
				t.Errorf("NewX509Key from the parsed chain gives another blob (%v)", err)
			}
			if err := VerifyChain(k, roots, PurposeClient, time.Now()); err != nil {
				t.Error(err)
			}
			if got := CertificateUser(k.Certificate()); got != "asyncuser" {
				t.Errorf("user %q, want asyncuser (CN)", got)
			}
			sig, err := parseSignature(readGolden(t, tc.name+".sig"))
			if err != nil {
				t.Fatal(err)
			}
			if sig.Format != SignatureFormat(tc.algo) {
				t.Errorf("AsyncSSH signed as %s, want %s", sig.Format, SignatureFormat(tc.algo))
			}
			if err := k.Verify(goldenData, sig); err != nil {
				t.Errorf("AsyncSSH's signature: %v", err)
			}
			if err := k.Verify(append([]byte("x"), goldenData...), sig); err == nil {
				t.Error("signature verified over other data")
			}
			if err := verifyUserSignature(k, tc.algo, goldenData, readGolden(t, tc.name+".sig")); err != nil {
				t.Errorf("verifyUserSignature: %v", err)
			}
		})
	}
}

// TestX509KeyAlgorithms: each supported key gets its algorithm, round-trips, and its signer's
// signatures verify with the parsed key (and not with another message); unsupported keys are
// refused.
func TestX509KeyAlgorithms(t *testing.T) {
	ca := newCA(t, "Test CA")
	rsa2048, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	for _, tc := range []struct {
		name string
		key  crypto.Signer
		algo string
	}{
		{"p256", ecKey(t, elliptic.P256()), KeyAlgoX509ECDSA256},
		{"p384", ecKey(t, elliptic.P384()), KeyAlgoX509ECDSA384},
		{"p521", ecKey(t, elliptic.P521()), KeyAlgoX509ECDSA521},
		{"rsa2048", rsa2048, KeyAlgoX509RSA2048SHA256},
		{"rsa1024", rsa1024, ""},
		{"ed25519", ed, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cert := ca.issue(t, tc.key.Public(), certOpts{cn: "u"})
			k, err := NewX509Key([]*x509.Certificate{cert, ca.cert}, [][]byte{{0x30, 0x00}})
			if tc.algo == "" {
				if err == nil {
					t.Fatalf("%s key accepted as %s", tc.name, k.Type())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			p, err := ParseX509Key(k.Marshal())
			if err != nil || p.Type() != tc.algo || len(p.OCSP) != 1 || len(p.Chain) != 2 {
				t.Fatalf("round trip: %v", err)
			}
			s, err := NewX509Signer(tc.key, []*x509.Certificate{cert})
			if err != nil {
				t.Fatal(err)
			}
			if s.PublicKey().Type() != tc.algo {
				t.Fatalf("signer type %s", s.PublicKey().Type())
			}
			sig, err := s.Sign(rand.Reader, goldenData)
			if err != nil {
				t.Fatal(err)
			}
			if sig.Format != SignatureFormat(tc.algo) {
				t.Errorf("signature format %s", sig.Format)
			}
			if err := p.Verify(goldenData, sig); err != nil {
				t.Error(err)
			}
			if err := p.Verify([]byte("other"), sig); err == nil {
				t.Error("verified over other data")
			}
			if _, err := s.SignWithAlgorithm(rand.Reader, goldenData, gossh.KeyAlgoED25519); err == nil {
				t.Error("signed for a foreign algorithm")
			}
		})
	}
	other := ecKey(t, elliptic.P256())
	if _, err := NewX509Signer(other, []*x509.Certificate{ca.issue(t, ecKey(t, elliptic.P256()).Public(), certOpts{cn: "u"})}); err == nil {
		t.Error("a signer accepted a certificate for another key")
	}
}

// x509Blob builds an RFC 6187 blob by hand, for malformed cases.
func x509Blob(algo string, certs [][]byte, ocspCount uint32, ocsp [][]byte, trailing []byte) []byte {
	var b cryptobyte.Builder
	addString(&b, []byte(algo))
	b.AddUint32(uint32(len(certs)))
	for _, c := range certs {
		addString(&b, c)
	}
	b.AddUint32(ocspCount)
	for _, o := range ocsp {
		addString(&b, o)
	}
	b.AddBytes(trailing)
	return b.BytesOrPanic()
}

// TestParseX509KeyRejects: every malformed or inconsistent blob is an ErrMalformedKey.
func TestParseX509KeyRejects(t *testing.T) {
	ca := newCA(t, "Test CA")
	p256 := ca.issue(t, ecKey(t, elliptic.P256()).Public(), certOpts{cn: "u"}).Raw
	good := x509Blob(KeyAlgoX509ECDSA256, [][]byte{p256}, 0, nil, nil)
	if _, err := ParseX509Key(good); err != nil {
		t.Fatalf("the good blob: %v", err)
	}
	many := make([][]byte, maxChain+1)
	for i := range many {
		many[i] = p256
	}
	for _, tc := range []struct {
		name string
		blob []byte
	}{
		{"empty", nil},
		{"algorithm only", good[:4+len(KeyAlgoX509ECDSA256)]},
		{"wrong algorithm for the key", x509Blob(KeyAlgoX509ECDSA384, [][]byte{p256}, 0, nil, nil)},
		{"unknown algorithm", x509Blob("x509v3-ssh-dss", [][]byte{p256}, 0, nil, nil)},
		{"no certificate", x509Blob(KeyAlgoX509ECDSA256, nil, 0, nil, nil)},
		{"too many certificates", x509Blob(KeyAlgoX509ECDSA256, many, 0, nil, nil)},
		{"not a certificate", x509Blob(KeyAlgoX509ECDSA256, [][]byte{{0x30, 0x03, 0x02, 0x01, 0x01}}, 0, nil, nil)},
		{"more OCSP responses than certificates", x509Blob(KeyAlgoX509ECDSA256, [][]byte{p256}, 2, [][]byte{{1}, {2}}, nil)},
		{"OCSP response missing", x509Blob(KeyAlgoX509ECDSA256, [][]byte{p256}, 1, nil, nil)},
		{"OCSP count missing", good[:len(good)-4]},
		{"trailing byte", append(append([]byte(nil), good...), 0)},
		{"truncated certificate", good[:len(good)-10]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseX509Key(tc.blob); !errors.Is(err, ErrMalformedKey) {
				t.Errorf("got %v, want ErrMalformedKey", err)
			}
		})
	}
}

// TestCertificateUser: the UPN otherName wins over the CN; without it the CN is the user.
func TestCertificateUser(t *testing.T) {
	ca := newCA(t, "Test CA")
	pub := ecKey(t, elliptic.P256()).Public()
	c := ca.issue(t, pub, certOpts{cn: "Alice Example", upn: "alice@example.com"})
	if got := UserPrincipalName(c); got != "alice@example.com" {
		t.Errorf("UPN %q", got)
	}
	if got := CertificateUser(c); got != "alice@example.com" {
		t.Errorf("user %q, want the UPN", got)
	}
	c = ca.issue(t, pub, certOpts{cn: "bob", dns: []string{"bob.example"}})
	if got := UserPrincipalName(c); got != "" {
		t.Errorf("UPN %q from a SAN without one", got)
	}
	if got := CertificateUser(c); got != "bob" {
		t.Errorf("user %q, want the CN", got)
	}
}

// TestVerifyChainPurpose: extended key usages decide the purpose; expired and foreign
// certificates fail.
func TestVerifyChainPurpose(t *testing.T) {
	ca := newCA(t, "Test CA")
	other := newCA(t, "Other CA")
	pub := ecKey(t, elliptic.P256()).Public()
	sshClient := asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 21}
	sshServer := asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 22}
	for _, tc := range []struct {
		name    string
		ca      *testCA
		o       certOpts
		purpose int
		ok      bool
	}{
		{"no EKU, client", ca, certOpts{cn: "u"}, PurposeClient, true},
		{"clientAuth, client", ca, certOpts{cn: "u", eku: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, PurposeClient, true},
		{"clientAuth, server", ca, certOpts{cn: "u", eku: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, PurposeServer, false},
		{"secureShellClient, client", ca, certOpts{cn: "u", otherEKU: []asn1.ObjectIdentifier{sshClient}}, PurposeClient, true},
		{"secureShellServer, client", ca, certOpts{cn: "u", otherEKU: []asn1.ObjectIdentifier{sshServer}}, PurposeClient, false},
		{"secureShellServer, server", ca, certOpts{cn: "h", otherEKU: []asn1.ObjectIdentifier{sshServer}}, PurposeServer, true},
		{"expired", ca, certOpts{cn: "u", expired: true}, PurposeClient, false},
		{"other CA", other, certOpts{cn: "u"}, PurposeClient, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := NewX509Key([]*x509.Certificate{tc.ca.issue(t, pub, tc.o)}, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = VerifyChain(k, ca.pool, tc.purpose, time.Now())
			if (err == nil) != tc.ok {
				t.Errorf("VerifyChain: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

var _ = ecdsa.PublicKey{}
