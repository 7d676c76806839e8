package interop

import (
	"bufio"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"tokenlab/emulator/piv"
	"tokenlab/emulator/yubikey"
	"tokenlab/ike"
	"tokenlab/middleware"
	"tokenlab/middleware/pivclient"
	"tokenlab/middleware/prompt"
)

// strongSwan's charon and the packages of the plugins the tests load (ike-ssh.md §3.1).
var (
	peerCharon       = peer{"/usr/lib/ipsec/charon", "strongswan-charon"}
	peerSwanctl      = peer{"/usr/sbin/swanctl", "strongswan-swanctl"}
	peerUnshare      = peer{"/usr/bin/unshare", "util-linux"}
	peerCharonGCM    = peer{"/usr/lib/ipsec/plugins/libstrongswan-gcm.so", "libstrongswan-standard-plugins"}
	peerCharonChaPo  = peer{"/usr/lib/ipsec/plugins/libstrongswan-chapoly.so", "libstrongswan-extra-plugins"}
	peerCharonMSCHAP = peer{"/usr/lib/ipsec/plugins/libstrongswan-eap-mschapv2.so", "libcharon-extauth-plugins"}
	peerCharonLibIPs = peer{"/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so", "libcharon-extra-plugins"}
)

func needCharon(t testing.TB) {
	t.Helper()
	need(t, peerCharon, peerSwanctl, peerUnshare, peerCharonGCM, peerCharonChaPo, peerCharonMSCHAP, peerCharonLibIPs)
}

// ikePKI is the test's certificates: a CA, the gateway's P-256 certificate for gw.test, and
// the client's P-256 and P-384 certificates for client@test. The client key that tokenlab
// uses lives on the card; charon's copy of a client identity has a software key.
type ikePKI struct {
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	gwKey  *ecdsa.PrivateKey
	gwCert []byte
	// software client keys and certificates, for charon as the initiator
	clientKey  map[string]*ecdsa.PrivateKey
	clientCert map[string][]byte
}

var (
	pkiOnce sync.Once
	pkiVal  *ikePKI
)

func testIKEPKI(t testing.TB) *ikePKI {
	pkiOnce.Do(func() {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1),
			Subject:   pkix.Name{Country: []string{"CH"}, Organization: []string{"Test"}, CommonName: "Test CA"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
		if err != nil {
			panic(err)
		}
		ca, _ := x509.ParseCertificate(der)
		p := &ikePKI{ca: ca, caKey: k, clientKey: map[string]*ecdsa.PrivateKey{}, clientCert: map[string][]byte{}}
		p.gwKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		p.gwCert = p.issue(p.gwKey.Public(), "gw.test", "gw.test", "127.0.0.1")
		for name, c := range map[string]elliptic.Curve{"p256": elliptic.P256(), "p384": elliptic.P384()} {
			ck, _ := ecdsa.GenerateKey(c, rand.Reader)
			p.clientKey[name], p.clientCert[name] = ck, p.issue(ck.Public(), "client@test", "client@test")
		}
		pkiVal = p
	})
	return pkiVal
}

var serial int64 = 100

// issue makes a certificate for pub with CN cn and subjectAltNames (an IP, an email or a DNS
// name).
func (p *ikePKI) issue(pub crypto.PublicKey, cn string, sans ...string) []byte {
	serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial),
		Subject:   pkix.Name{Country: []string{"CH"}, Organization: []string{"Test"}, CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature}
	for _, s := range sans {
		switch {
		case net.ParseIP(s) != nil:
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(s))
		case strings.Contains(s, "@"):
			tmpl.EmailAddresses = append(tmpl.EmailAddresses, s)
		default:
			tmpl.DNSNames = append(tmpl.DNSNames, s)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, pub, p.caKey)
	if err != nil {
		panic(err)
	}
	return der
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func pemKey(k *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

// charon is a strongSwan daemon the test started: its own strongswan.conf, a private /run
// (unshare -m, ike-ssh.md §3.1), high ports, a vici socket in its directory.
type charon struct {
	dir      string
	vici     string
	port     int
	nattPort int
	log      string
	cmd      *exec.Cmd
	done     chan error
}

// charonOpts shape a charon.
type charonOpts struct {
	// settings are extra `key = value` lines of the charon section (fragment_size, …).
	settings []string
	// swanctl is swanctl.conf: connections, secrets, pools. The certificates are in the
	// swanctl directory: x509ca/ca.pem, x509/gw.pem with ecdsa/gw.pem, x509/client-p256.pem
	// and x509/client-p384.pem with ecdsa/client-*.pem.
	swanctl string
}

// freeUDPPort returns a loopback UDP port that was free a moment ago.
func freeUDPPort(t testing.TB) int {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

func startCharon(t *testing.T, o charonOpts) *charon {
	t.Helper()
	needCharon(t)
	dir, err := os.MkdirTemp("", "tokenlab-charon-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	c := &charon{dir: dir, vici: filepath.Join(dir, "charon.vici"), port: freeUDPPort(t), log: filepath.Join(dir, "charon.log")}
	for c.nattPort = freeUDPPort(t); c.nattPort == c.port; c.nattPort = freeUDPPort(t) {
	}
	p := testIKEPKI(t)
	files := map[string][]byte{
		"swanctl/x509ca/ca.pem":         pemCert(p.ca.Raw),
		"swanctl/x509/gw.pem":           pemCert(p.gwCert),
		"swanctl/ecdsa/gw.pem":          pemKey(p.gwKey),
		"swanctl/x509/client-p256.pem":  pemCert(p.clientCert["p256"]),
		"swanctl/ecdsa/client-p256.pem": pemKey(p.clientKey["p256"]),
		"swanctl/x509/client-p384.pem":  pemCert(p.clientCert["p384"]),
		"swanctl/ecdsa/client-p384.pem": pemKey(p.clientKey["p384"]),
		"swanctl/swanctl.conf":          []byte(o.swanctl),
		"strongswan.conf":               []byte(c.strongswanConf(o.settings)),
	}
	for name, b := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out, err := os.Create(filepath.Join(dir, "stdout.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	// charon always writes /run/charon.pid: a private /run lets it run beside any other charon.
	c.cmd = exec.Command(peerUnshare.path, "-m", "--propagation", "private", "sh", "-c",
		"mount -t tmpfs tmpfs /run && exec "+peerCharon.path)
	c.cmd.Env = append(os.Environ(), "STRONGSWAN_CONF="+filepath.Join(dir, "strongswan.conf"))
	c.cmd.Stdout, c.cmd.Stderr = out, out
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.done = make(chan error, 1)
	go func() { c.done <- c.cmd.Wait() }()
	t.Cleanup(func() {
		c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
			c.cmd.Process.Kill()
			<-c.done
			t.Errorf("charon ignored SIGTERM for 5s and was killed")
		}
		if t.Failed() {
			t.Logf("--- charon log ---\n%s", tail(c.log, 60))
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if fi, err := os.Stat(c.vici); err == nil && fi.Mode()&os.ModeSocket != 0 {
			break
		}
		select {
		case err := <-c.done:
			t.Fatalf("charon exited at start (%v):\n%s\n%s", err, tail(filepath.Join(dir, "stdout.log"), 20), tail(c.log, 20))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("charon did not open its vici socket within 10s:\n%s", tail(c.log, 20))
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.swanctl(t, "--load-all")
	return c
}

func (c *charon) strongswanConf(settings []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `charon {
  load_modular = no
  load = random nonce openssl pem pkcs1 pkcs8 x509 revocation constraints pubkey curve25519 chapoly gcm aes sha1 sha2 hmac kdf kernel-libipsec kernel-netlink socket-default vici eap-identity eap-mschapv2 attr
  port = %d
  port_nat_t = %d
  install_routes = no
  install_virtual_ip = no
  retransmit_timeout = 1
  retransmit_tries = 3
`, c.port, c.nattPort)
	for _, s := range settings {
		fmt.Fprintf(&b, "  %s\n", s)
	}
	fmt.Fprintf(&b, `  plugins {
    vici {
      socket = unix://%s
    }
  }
  filelog {
    log {
      path = %s
      default = 1
      ike = 2
      enc = 1
      cfg = 2
      flush_line = yes
      time_format = %%H:%%M:%%S
    }
  }
}
`, c.vici, c.log)
	return b.String()
}

// swanctl runs swanctl against this charon and fails the test when it fails.
func (c *charon) swanctl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := c.swanctlErr(args...)
	if err != nil {
		t.Fatalf("swanctl %s: %v\n%s\n--- charon log ---\n%s", strings.Join(args, " "), err, out, tail(c.log, 40))
	}
	return out
}

func (c *charon) swanctlErr(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, peerSwanctl.path, append(args, "--uri", "unix://"+c.vici)...)
	cmd.Env = append(os.Environ(), "SWANCTL_DIR="+filepath.Join(c.dir, "swanctl"),
		"STRONGSWAN_CONF="+filepath.Join(c.dir, "strongswan.conf"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// addr is charon's IKE address.
func (c *charon) addr() netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(c.port))
}

// logHas reports whether charon's log matched re.
func (c *charon) logHas(re string) bool {
	b, _ := os.ReadFile(c.log)
	return regexp.MustCompile(re).Match(b)
}

// logCount counts the log lines that match re.
func (c *charon) logCount(re string) int {
	f, err := os.Open(c.log)
	if err != nil {
		return 0
	}
	defer f.Close()
	rx := regexp.MustCompile(re)
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if rx.MatchString(sc.Text()) {
			n++
		}
	}
	return n
}

// card is an in-process YubiKey with a client key in 9A (PIN policy once) and its
// certificate, reached through a middleware Token under a profile.
type card struct {
	dev  *yubikey.Device
	cert []byte
}

func newIKECard(t testing.TB, curve string) *card {
	t.Helper()
	d, err := yubikey.New(yubikey.Options{Serial: 4711})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c := pivclient.New(d.Card)
	if _, err := c.Select(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.AuthenticateManagementKey(ctx, pivclient.AlgAES192, piv.DefaultManagementKey); err != nil {
		t.Fatal(err)
	}
	alg := pivclient.AlgECCP256
	if curve == "p384" {
		alg = pivclient.AlgECCP384
	}
	pub, err := c.GenerateKey(ctx, pivclient.SlotAuthentication, alg, pivclient.PINPolicyOnce, pivclient.TouchPolicyNever)
	if err != nil {
		t.Fatal(err)
	}
	der := testIKEPKI(t).issue(pub, "client@test", "client@test")
	if err := c.SetCertificate(ctx, pivclient.SlotAuthentication, der); err != nil {
		t.Fatal(err)
	}
	d.Card.Reset()
	return &card{dev: d, cert: der}
}

// token opens the card for one application under a profile, with a prompter.
func (c *card) token(t testing.TB, profile string, p prompt.Prompter, rec *middleware.Recorder, session *middleware.LogonSession) *middleware.Token {
	t.Helper()
	pol, err := middleware.Profile(profile)
	if err != nil {
		t.Fatal(err)
	}
	opts := middleware.Options{Application: "ike", Policy: pol, Prompter: p, Session: session}
	if rec != nil {
		opts.Audit = rec
	}
	tok, err := middleware.Open(context.Background(), c.dev.Card.Dial, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tok.Close(context.Background()) })
	return tok
}

// pinPrompter answers every PIN prompt with the default PIN and counts them.
func pinPrompter() prompt.Prompter {
	return prompt.Func(func(context.Context, prompt.Request) ([]byte, error) { return []byte("123456"), nil })
}

// initiatorConfig is a tokenlab initiator with its key on a card, through the middleware.
func initiatorConfig(t testing.TB, tok *middleware.Token, cert []byte) *ike.Config {
	t.Helper()
	signer, err := tok.Signer(context.Background(), pivclient.SlotAuthentication)
	if err != nil {
		t.Fatal(err)
	}
	gw, _ := ike.ParseIdentity("gw.test")
	me, _ := ike.ParseIdentity("client@test")
	return &ike.Config{Signer: signer, Certificates: [][]byte{cert}, CAs: []*x509.Certificate{testIKEPKI(t).ca},
		LocalID: me, RemoteID: &gw, Token: tok, RetransmitBase: 500 * time.Millisecond,
		LocalTS: mustTS(t, "10.1.0.0/24"), RemoteTS: mustTS(t, "127.0.0.1/32")}
}

func mustTS(t testing.TB, s string) []ike.TrafficSelector {
	ts, err := ike.ParseSelectors(s)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

func dialCharon(t testing.TB, cfg *ike.Config, c *charon) *ike.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := ike.Dial(ctx, cfg, netip.MustParseAddrPort("127.0.0.1:0"), c.addr())
	if err != nil {
		t.Fatalf("dial charon: %v\n--- charon log ---\n%s", err, tail(c.log, 40))
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

// responderConns is charon's swanctl.conf as a responder: certificates, PSK and EAP-MSCHAPv2
// gateways on 127.0.0.1, every proposal of the issue with every DH group.
const allProposals = "aes128-sha256-ecp256-ecp384-ecp521-curve25519-modp2048, aes256-sha256-ecp256-ecp384-ecp521-curve25519-modp2048, aes128gcm16-prfsha256-ecp256-ecp384-ecp521-curve25519-modp2048, aes256gcm16-prfsha384-ecp256-ecp384-ecp521-curve25519-modp2048, chacha20poly1305-prfsha256-ecp256-ecp384-ecp521-curve25519-modp2048"

func responderConns(extra string) string {
	return `connections {
  rw-cert {
    version = 2
    local_addrs = 127.0.0.1
    proposals = ` + allProposals + `
    local {
      auth = pubkey
      certs = gw.pem
      id = gw.test
    }
    remote {
      auth = pubkey
      id = client@test
      cacerts = ca.pem
    }
    children {
      net {
        local_ts = 127.0.0.1/32
        remote_ts = 10.1.0.0/24
        esp_proposals = aes128gcm16, aes256gcm16, chacha20poly1305, aes128-sha256
      }
    }
  }
` + extra + `
}
`
}

// TestIKEInitiatorCertificates: tokenlab's initiator, its key on the card behind the
// middleware, authenticates to charon with ECDSA P-256 and P-384 certificates, as RFC 7427
// digital signatures and as RFC 4754 ECDSA signatures, and checks charon's.
func TestIKEInitiatorCertificates(t *testing.T) {
	c := startCharon(t, charonOpts{swanctl: responderConns("")})
	for _, curve := range []string{"p256", "p384"} {
		for _, mode := range []ike.SignatureMode{ike.SignatureRFC7427, ike.SignatureRFC4754} {
			name := fmt.Sprintf("%s/%v", curve, map[ike.SignatureMode]string{ike.SignatureRFC7427: "rfc7427", ike.SignatureRFC4754: "rfc4754"}[mode])
			t.Run(name, func(t *testing.T) {
				cd := newIKECard(t, curve)
				rec := &middleware.Recorder{}
				tok := cd.token(t, "strict-2fa", pinPrompter(), rec, nil)
				cfg := initiatorConfig(t, tok, cd.cert)
				cfg.SignatureMode = mode
				s := dialCharon(t, cfg, c)
				if got := s.RemoteID().String(); got != "gw.test" {
					t.Errorf("remote identity %q", got)
				}
				if n := rec.Count("", middleware.EventSign); n != 1 {
					t.Errorf("%d signatures on the card, want 1", n)
				}
				want := map[string]string{"p256": "256", "p384": "384"}[curve]
				re := "authentication of 'client@test' with ECDSA_WITH_SHA" + want + "_DER successful"
				if mode == ike.SignatureRFC4754 {
					re = "authentication of 'client@test' with ECDSA-" + want + " signature successful"
				}
				if !c.logHas(re) {
					t.Errorf("charon's log lacks %q:\n%s", re, tail(c.log, 30))
				}
				if len(s.Children()) != 1 {
					t.Errorf("%d Child SAs, want 1", len(s.Children()))
				}
			})
		}
	}
}
