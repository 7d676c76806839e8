package ssh

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"io"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
	gossh "golang.org/x/crypto/ssh"
)

// testCA issues certificates for tests.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
	pool *x509.CertPool
}

func newCA(t testing.TB, cn string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return &testCA{cert: c, key: key, pool: pool}
}

// certOpts shape an issued certificate.
type certOpts struct {
	cn       string
	upn      string
	dns      []string
	ips      []net.IP
	eku      []x509.ExtKeyUsage
	otherEKU []asn1.ObjectIdentifier
	expired  bool
}

func (ca *testCA) issue(t testing.TB, pub crypto.PublicKey, o certOpts) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: o.cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: o.eku, UnknownExtKeyUsage: o.otherEKU,
		DNSNames: o.dns, IPAddresses: o.ips,
	}
	if o.expired {
		tmpl.NotAfter = time.Now().Add(-time.Minute)
	}
	if o.upn != "" {
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: oidSubjectAltName, Value: upnSAN(o.upn)})
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// upnSAN is a subject alternative name with one UPN otherName, as Windows CAs issue them.
func upnSAN(upn string) []byte {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oidUPN)
			b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.UTF8String, func(b *cryptobyte.Builder) { b.AddBytes([]byte(upn)) })
			})
		})
	})
	return b.BytesOrPanic()
}

func ecKey(t testing.TB, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func plainSigner(t testing.TB, k crypto.Signer) gossh.Signer {
	t.Helper()
	s, err := PlainSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func ed25519Host(t testing.TB) gossh.Signer {
	t.Helper()
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	return plainSigner(t, k)
}

// echoHandler answers "echo WORDS" with WORDS, "whoami" with the user and the key's name,
// "cat" by copying stdin, "wait" by blocking until the session ends, and exits 3 for
// anything else.
func echoHandler(ctx context.Context, s *Session) int {
	switch {
	case strings.HasPrefix(s.Command, "echo "):
		io.WriteString(s.Stdout, strings.TrimPrefix(s.Command, "echo ")+"\n")
		return 0
	case s.Command == "whoami":
		io.WriteString(s.Stdout, s.Identity.User+" "+s.Identity.Name+"\n")
		return 0
	case s.Command == "cat":
		io.Copy(s.Stdout, s.Stdin)
		return 0
	case s.Command == "wait":
		io.WriteString(s.Stdout, "waiting\n")
		<-ctx.Done()
		return 0
	case s.Command == "":
		io.WriteString(s.Stdout, "welcome "+s.Identity.User+"\n")
		return 0
	}
	io.WriteString(s.Stderr, "unknown command\n")
	return 3
}

// startServer runs a server on a loopback port until the test ends and returns its address.
func startServer(t testing.TB, cfg ServerConfig) (*Server, string) {
	t.Helper()
	if cfg.Handler == nil {
		cfg.Handler = echoHandler
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		srv.Serve(ctx, ln)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return srv, ln.Addr().String()
}

func fixedHostKey(want gossh.PublicKey) gossh.HostKeyCallback {
	return gossh.FixedHostKey(want)
}

// run runs cmd on c and returns its output and status.
func run(t testing.TB, c *Client, cmd string) (string, int) {
	t.Helper()
	var out strings.Builder
	status, err := c.Run(context.Background(), RunOptions{Command: cmd, Stdout: &out, Stderr: &out})
	if err != nil {
		t.Fatalf("run %q: %v", cmd, err)
	}
	return out.String(), status
}
