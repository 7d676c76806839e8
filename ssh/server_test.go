package ssh

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"net"
	"strings"
	"sync"
	"testing"

	gossh "golang.org/x/crypto/ssh"
)

// TestLoginPlainKeys: each plain key type logs in from the x/crypto/ssh client path to
// tokenlab's server; a command's output, stdin and exit status travel.
func TestLoginPlainKeys(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	for _, tc := range []struct {
		name string
		key  crypto.Signer
	}{
		{"p256", ecKey(t, elliptic.P256())}, {"p384", ecKey(t, elliptic.P384())},
		{"ed25519", edKey}, {"rsa2048", rsaKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user := plainSigner(t, tc.key)
			host := ed25519Host(t)
			_, addr := startServer(t, ServerConfig{HostKeys: []gossh.Signer{host},
				Auth: &Keys{Authorized: map[string][]gossh.PublicKey{"alice": {user.PublicKey()}}}})
			c, err := Dial(context.Background(), addr, &ClientConfig{User: "alice", Signer: user, HostKeyCallback: fixedHostKey(host.PublicKey())})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if out, st := run(t, c, "whoami"); st != 0 || out != "alice "+gossh.FingerprintSHA256(user.PublicKey())+"\n" {
				t.Errorf("whoami: %q, status %d", out, st)
			}
			if out, st := run(t, c, "nonsense"); st != 3 || out != "unknown command\n" {
				t.Errorf("nonsense: %q, status %d, want stderr and 3", out, st)
			}
			var out strings.Builder
			in := strings.Repeat("0123456789", 50_000) // beyond one window
			if st, err := c.Run(context.Background(), RunOptions{Command: "cat", Stdin: strings.NewReader(in), Stdout: &out}); err != nil || st != 0 || out.String() != in {
				t.Errorf("cat: %d bytes back of %d, status %d, %v", out.Len(), len(in), st, err)
			}
			if out, _ := run(t, c, ""); out != "welcome alice\n" {
				t.Errorf("shell: %q", out)
			}
		})
	}
}

// TestX509UserKeyFromGoClient: an x/crypto/ssh client offers an RFC 6187 user key unchanged
// (the signing side needs no code of our own) and tokenlab's server validates it against
// the CA; the user name comes from the certificate: its UPN, else its CN.
func TestX509UserKeyFromGoClient(t *testing.T) {
	ca := newCA(t, "Users CA")
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	for _, tc := range []struct {
		name string
		key  crypto.Signer
		o    certOpts
		user string
	}{
		{"p256 upn", ecKey(t, elliptic.P256()), certOpts{cn: "Alice", upn: "alice@example.com"}, "alice@example.com"},
		{"p384 cn", ecKey(t, elliptic.P384()), certOpts{cn: "bob", eku: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, "bob"},
		{"rsa2048 cn", rsaKey, certOpts{cn: "carol"}, "carol"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewX509Signer(tc.key, []*x509.Certificate{ca.issue(t, tc.key.Public(), tc.o), ca.cert})
			if err != nil {
				t.Fatal(err)
			}
			host := ed25519Host(t)
			_, addr := startServer(t, ServerConfig{HostKeys: []gossh.Signer{host}, Auth: &Keys{CAs: ca.pool}})
			c, err := Dial(context.Background(), addr, &ClientConfig{Signer: s, HostKeyCallback: fixedHostKey(host.PublicKey())})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if out, _ := run(t, c, "whoami"); out != tc.user+" "+tc.user+"\n" {
				t.Errorf("whoami %q, want %q", out, tc.user)
			}
			// The same certificate may not claim another user.
			if _, err := Dial(context.Background(), addr, &ClientConfig{User: "root", Signer: s, HostKeyCallback: fixedHostKey(host.PublicKey())}); err == nil {
				t.Error("the certificate logged in as root")
			}
		})
	}
}

// TestCertificateUserTable: an explicit table maps certificate names to users; a name not in
// it logs in nowhere, and a certificate from another CA never. Entries tagged upn: and cn:
// match only that field, so a CN cannot pass for a UPN.
func TestCertificateUserTable(t *testing.T) {
	ca, other := newCA(t, "Users CA"), newCA(t, "Other CA")
	key := ecKey(t, elliptic.P256())
	host := ed25519Host(t)
	_, addr := startServer(t, ServerConfig{HostKeys: []gossh.Signer{host},
		Auth: &Keys{CAs: ca.pool, Users: map[string][]string{
			"alice@example.com": {"alice", "admin"}, "upn:bob@example.com": {"bob"}, "cn:carol": {"carol"}}}})
	dial := func(c *x509.Certificate, user string) error {
		s, err := NewX509Signer(key, []*x509.Certificate{c})
		if err != nil {
			t.Fatal(err)
		}
		cl, err := Dial(context.Background(), addr, &ClientConfig{User: user, Signer: s, HostKeyCallback: fixedHostKey(host.PublicKey())})
		if err == nil {
			cl.Close()
		}
		return err
	}
	alice := ca.issue(t, key.Public(), certOpts{cn: "Alice", upn: "alice@example.com"})
	for _, tc := range []struct {
		name string
		cert *x509.Certificate
		user string
		ok   bool
	}{
		{"mapped alice", alice, "alice", true},
		{"mapped admin", alice, "admin", true},
		{"unmapped user", alice, "root", false},
		{"the UPN itself is not in the table's users", alice, "alice@example.com", false},
		{"unmapped certificate", ca.issue(t, key.Public(), certOpts{cn: "mallory"}), "mallory", false},
		{"other CA", other.issue(t, key.Public(), certOpts{cn: "Alice", upn: "alice@example.com"}), "alice", false},
		{"tagged upn", ca.issue(t, key.Public(), certOpts{cn: "x", upn: "bob@example.com"}), "bob", true},
		{"a CN is not a tagged UPN", ca.issue(t, key.Public(), certOpts{cn: "bob@example.com"}), "bob", false},
		{"tagged cn", ca.issue(t, key.Public(), certOpts{cn: "carol"}), "carol", true},
		{"a UPN is not a tagged CN", ca.issue(t, key.Public(), certOpts{cn: "y", upn: "carol"}), "carol", false},
	} {
		if err := dial(tc.cert, tc.user); (err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// hostCert makes an RFC 6187 host key for 127.0.0.1.
func hostCert(t testing.TB, ca *testCA, key crypto.Signer, o certOpts) *X509Signer {
	t.Helper()
	if o.cn == "" {
		o.cn = "localhost"
	}
	s, err := NewX509Signer(key, []*x509.Certificate{ca.issue(t, key.Public(), o)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestX509HostKey: with HostCAs the client asks for RFC 6187 host keys, runs on tokenlab's own
// transport, and accepts only a certificate of a trusted CA that names the host.
func TestX509HostKey(t *testing.T) {
	ca, other := newCA(t, "Hosts CA"), newCA(t, "Other CA")
	user := plainSigner(t, ecKey(t, elliptic.P256()))
	auth := &Keys{Authorized: map[string][]gossh.PublicKey{"alice": {user.PublicKey()}}}
	loop := []net.IP{net.IPv4(127, 0, 0, 1)}
	for _, tc := range []struct {
		name string
		host *X509Signer
		ok   bool
	}{
		{"p256", hostCert(t, ca, ecKey(t, elliptic.P256()), certOpts{ips: loop}), true},
		{"p384 serverAuth", hostCert(t, ca, ecKey(t, elliptic.P384()), certOpts{ips: loop, eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}), true},
		{"clientAuth only", hostCert(t, ca, ecKey(t, elliptic.P256()), certOpts{ips: loop, eku: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}), false},
		{"other name", hostCert(t, ca, ecKey(t, elliptic.P256()), certOpts{dns: []string{"other.example"}}), false},
		{"other CA", hostCert(t, other, ecKey(t, elliptic.P256()), certOpts{ips: loop}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, addr := startServer(t, ServerConfig{HostKeys: []gossh.Signer{tc.host}, Auth: auth})
			c, err := Dial(context.Background(), addr, &ClientConfig{User: "alice", Signer: user, HostCAs: ca.pool})
			if !tc.ok {
				if err == nil {
					c.Close()
					t.Fatal("host key accepted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if c.HostKey().Type() != tc.host.PublicKey().Type() {
				t.Errorf("host key %s", c.HostKey().Type())
			}
			if out, st := run(t, c, "echo own transport"); st != 0 || out != "own transport\n" {
				t.Errorf("echo: %q %d", out, st)
			}
			in := strings.Repeat("abcdefgh", 600_000)
			var out strings.Builder
			if st, err := c.Run(context.Background(), RunOptions{Command: "cat", Stdin: strings.NewReader(in), Stdout: &out}); err != nil || st != 0 || out.String() != in {
				t.Errorf("cat: %d of %d bytes, status %d, %v", out.Len(), len(in), st, err)
			}
			if out, st := run(t, c, "nonsense"); st != 3 || out != "unknown command\n" {
				t.Errorf("nonsense: %q %d", out, st)
			}
		})
	}
}

// TestGoServerPresentsX509HostKey checks the other half of the signing-side claim: an
// x/crypto/ssh server given an X509Signer presents an RFC 6187 host key, which tokenlab's
// client verifies.
func TestGoServerPresentsX509HostKey(t *testing.T) {
	ca := newCA(t, "Hosts CA")
	host := hostCert(t, ca, ecKey(t, elliptic.P384()), certOpts{ips: []net.IP{net.IPv4(127, 0, 0, 1)}})
	user := plainSigner(t, ecKey(t, elliptic.P256()))
	cfg := &gossh.ServerConfig{PublicKeyCallback: func(_ gossh.ConnMetadata, k gossh.PublicKey) (*gossh.Permissions, error) {
		if string(k.Marshal()) == string(user.PublicKey().Marshal()) {
			return nil, nil
		}
		return nil, ErrNotAuthorized
	}}
	cfg.AddHostKey(host)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer nc.Close()
		sc, chans, reqs, err := gossh.NewServerConn(nc, cfg)
		if err != nil {
			done <- err
			return
		}
		go gossh.DiscardRequests(reqs)
		go func() {
			for nc := range chans {
				nc.Reject(gossh.Prohibited, "no sessions")
			}
		}()
		done <- sc.Wait()
	}()
	c, err := Dial(context.Background(), ln.Addr().String(), &ClientConfig{User: "alice", Signer: user, HostCAs: ca.pool})
	if err != nil {
		t.Fatalf("tokenlab client to x/crypto/ssh server with an RFC 6187 host key: %v", err)
	}
	if c.HostKey().Type() != KeyAlgoX509ECDSA384 {
		t.Errorf("host key %s", c.HostKey().Type())
	}
	c.Close()
	<-done
}

// countingAuth counts the keys an authorizer is asked about.
type countingAuth struct {
	Authorizer
	mu   sync.Mutex
	keys map[string]int
}

func (a *countingAuth) Authorize(user string, key gossh.PublicKey) (*Identity, error) {
	a.mu.Lock()
	a.keys[string(key.Marshal())]++
	a.mu.Unlock()
	return a.Authorizer.Authorize(user, key)
}

// TestMaxAuthTries: a client that tries every key of a card (x/crypto/ssh's PublicKeys with
// five keys, none authorized) is disconnected after the third failure, and the fourth key is
// never looked at.
func TestMaxAuthTries(t *testing.T) {
	host := ed25519Host(t)
	auth := &countingAuth{Authorizer: &Keys{}, keys: map[string]int{}}
	_, addr := startServer(t, ServerConfig{HostKeys: []gossh.Signer{host}, Auth: auth})
	var signers []gossh.Signer
	for range 5 {
		signers = append(signers, plainSigner(t, ecKey(t, elliptic.P256())))
	}
	_, err := gossh.Dial("tcp", addr, &gossh.ClientConfig{User: "alice", Auth: []gossh.AuthMethod{gossh.PublicKeys(signers...)},
		HostKeyCallback: fixedHostKey(host.PublicKey())})
	if err == nil {
		t.Fatal("logged in with no authorized key")
	}
	if len(auth.keys) != DefaultMaxAuthTries {
		t.Errorf("server looked at %d keys, want %d", len(auth.keys), DefaultMaxAuthTries)
	}
	if _, seen := auth.keys[string(signers[3].PublicKey().Marshal())]; seen {
		t.Error("the fourth key was looked at")
	}
}
