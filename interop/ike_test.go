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
	"errors"
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
	peerCharonSSL    = peer{"/usr/lib/ipsec/plugins/libstrongswan-openssl.so", "libstrongswan-standard-plugins"}
	peerCharon25519  = peer{"/usr/lib/ipsec/plugins/libstrongswan-curve25519.so", "libstrongswan-extra-plugins"}
	peerCharonEAPID  = peer{"/usr/lib/ipsec/plugins/libstrongswan-eap-identity.so", "libcharon-extra-plugins"}
	peerCharonVici   = peer{"/usr/lib/ipsec/plugins/libstrongswan-vici.so", "strongswan-swanctl"}
)

func needCharon(t testing.TB) {
	t.Helper()
	need(t, peerCharon, peerSwanctl, peerUnshare, peerCharonGCM, peerCharonChaPo, peerCharonMSCHAP, peerCharonLibIPs,
		peerCharonSSL, peerCharon25519, peerCharonEAPID, peerCharonVici)
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

// allProposals is every proposal of the issue (FortiGate's dial-up set) with every DH group.
const allProposals = "aes128-sha256-ecp256-ecp384-ecp521-curve25519-modp2048, aes256-sha256-ecp256-ecp384-ecp521-curve25519-modp2048, aes128gcm16-prfsha256-ecp256-ecp384-ecp521-curve25519-modp2048, aes256gcm16-prfsha384-ecp256-ecp384-ecp521-curve25519-modp2048, chacha20poly1305-prfsha256-ecp256-ecp384-ecp521-curve25519-modp2048"

// responderConns is charon's swanctl.conf as a responder on 127.0.0.1: certificates both
// ways (rw-cert), PSK both ways (rw-psk), and FortiGate's dial-up shape (rw-eap: the gateway
// authenticates with a PSK, the user with EAP-MSCHAPv2, an address pool with DNS and split
// include). The Child SAs' local side is 127.0.0.1/32 because kernel-libipsec needs a local
// address inside its local traffic selector to route (ike-ssh.md §3.1). extra goes into the
// rw-cert connection (dpd_delay, …).
func responderConns(extra string) string {
	return `connections {
  rw-cert {
    version = 2
    local_addrs = 127.0.0.1
    proposals = ` + allProposals + `
    ` + extra + `
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
  rw-psk {
    version = 2
    local_addrs = 127.0.0.1
    proposals = ` + allProposals + `
    local {
      auth = psk
      id = gw-psk.test
    }
    remote {
      auth = psk
      id = psk-client
    }
    children {
      net {
        local_ts = 127.0.0.1/32
        remote_ts = 10.1.0.0/24
        esp_proposals = aes128gcm16, aes128-sha256
      }
    }
  }
  rw-eap {
    version = 2
    local_addrs = 127.0.0.1
    proposals = ` + allProposals + `
    pools = rw_pool
    local {
      auth = psk
      id = gw-eap.test
    }
    remote {
      auth = eap-mschapv2
      eap_id = %any
    }
    children {
      net {
        local_ts = 127.0.0.1/32
        esp_proposals = aes128-sha256, aes128gcm16
      }
    }
  }
}
pools {
  rw_pool {
    addrs = 10.40.40.2-10.40.40.20
    dns = 10.40.40.1
    subnet = 10.2.0.0/24, 10.4.0.0/16
  }
}
secrets {
  ike-psk {
    id-gw = gw-psk.test
    id-client = psk-client
    secret = "tokenlab-psk-0123456789"
  }
  ike-eap-gw {
    id = gw-eap.test
    secret = "fortigate-psk-0123456789"
  }
  eap-alice {
    id = alice
    secret = "alice-password"
  }
  eap-bob {
    id = bob
    secret = "bob-password` + bobCode + `"
  }
}
`
}

// bobCode is the one-time code that charon, as a responder that knows nothing of TOTP, takes
// as the end of bob's password: what a FortiGate's RADIUS server checks after the fact.
const bobCode = "492039"

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

// TestIKEInitiatorProposals: every proposal of the issue with DH 19, 20, 21, 31 and 14, each
// negotiated alone by tokenlab's initiator with charon, authenticated with a PSK both ways.
func TestIKEInitiatorProposals(t *testing.T) {
	c := startCharon(t, charonOpts{swanctl: responderConns("")})
	gw, _ := ike.ParseIdentity("gw-psk.test")
	me, _ := ike.ParseIdentity("psk-client")
	for _, prop := range []string{"aes128-sha256", "aes256-sha256", "aes128gcm16-prfsha256", "aes256gcm16-prfsha384", "chacha20poly1305-prfsha256"} {
		for _, g := range []string{"ecp256", "ecp384", "ecp521", "curve25519", "modp2048"} {
			t.Run(prop+"-"+g, func(t *testing.T) {
				p, err := ike.ParseProposal(prop+"-"+g, false)
				if err != nil {
					t.Fatal(err)
				}
				cfg := &ike.Config{PSK: []byte("tokenlab-psk-0123456789"), LocalID: me, RemoteID: &gw, Proposals: []ike.Proposal{p},
					LocalTS: mustTS(t, "10.1.0.0/24"), RemoteTS: mustTS(t, "127.0.0.1/32"), RetransmitBase: 500 * time.Millisecond}
				s := dialCharon(t, cfg, c)
				got := s.Suite()
				if got.String() != p.String() {
					t.Errorf("negotiated %v, want %v", got, p)
				}
				if s.PeerAuthMethod() != ike.AuthPSK {
					t.Errorf("charon authenticated with %v, want PSK", s.PeerAuthMethod())
				}
				if len(s.Children()) != 1 {
					t.Errorf("%d Child SAs, want 1", len(s.Children()))
				}
				if err := s.Ping(context.Background()); err != nil {
					t.Errorf("liveness check: %v", err)
				}
			})
		}
	}
	if n := c.logCount(`authentication of 'psk-client' with pre-shared key successful`); n != 25 {
		t.Errorf("charon accepted %d PSK authentications, want 25", n)
	}
}

// eapPrompter answers the EAP password and the one-time code prompts and records them.
func eapPrompter(password, code string) *prompt.Script {
	answers := []prompt.Answer{{PIN: password}}
	if code != "" {
		answers = append(answers, prompt.Answer{PIN: code})
	}
	return prompt.NewScript(answers...)
}

// TestIKEInitiatorEAP: FortiClient's side of a FortiGate dial-up login against charon: the
// gateway authenticates with a PSK, the user with EAP-MSCHAPv2, the password (and for bob the
// one-time code appended to it) asked through the middleware's Prompter; the configuration
// payload brings an address from 10.40.40.2–20, a DNS server and two split-include subnets.
func TestIKEInitiatorEAP(t *testing.T) {
	c := startCharon(t, charonOpts{swanctl: responderConns("")})
	gw, _ := ike.ParseIdentity("gw-eap.test")
	for _, tc := range []struct {
		user, password, code string
		otp                  ike.OTPMode
	}{
		{"alice", "alice-password", "", ike.OTPNone},
		{"bob", "bob-password", bobCode, ike.OTPAppend},
	} {
		t.Run(tc.user, func(t *testing.T) {
			pr := eapPrompter(tc.password, tc.code)
			id, _ := ike.ParseIdentity(tc.user)
			cfg := &ike.Config{PSK: []byte("fortigate-psk-0123456789"), LocalID: id, RemoteID: &gw, RequestConfig: true,
				EAP: &ike.EAPClient{Identity: tc.user, OTP: tc.otp, Prompter: pr}, RetransmitBase: 500 * time.Millisecond}
			s := dialCharon(t, cfg, c)
			if pr.Remaining() != 0 || len(pr.Requests()) != 1+len(tc.code)/len(bobCode) {
				t.Errorf("prompts %v, %d answers left", pr.Requests(), pr.Remaining())
			}
			conf := s.Configuration()
			pool := netip.MustParsePrefix("10.40.40.0/27")
			if !pool.Contains(conf.Address) || conf.Address.Less(netip.MustParseAddr("10.40.40.2")) {
				t.Errorf("assigned address %v, want one of 10.40.40.2-20", conf.Address)
			}
			if fmt.Sprint(conf.DNS) != "[10.40.40.1]" || fmt.Sprint(conf.Subnets) != "[10.2.0.0/24 10.4.0.0/16]" {
				t.Errorf("configuration %v", conf)
			}
			ch := s.Children()
			if len(ch) != 1 {
				t.Fatalf("%d Child SAs, want 1", len(ch))
			}
			if got := ike.SelectorsString(ch[0].LocalTS()); got != conf.Address.String()+"/32" {
				t.Errorf("child's local side %s, want the assigned address", got)
			}
			if !c.logHas("EAP method EAP_MSCHAPV2 succeeded, MSK established") ||
				!c.logHas("authentication of '"+tc.user+"' with EAP successful") {
				t.Errorf("charon's log lacks the EAP success:\n%s", tail(c.log, 30))
			}
		})
	}
	t.Run("wrong password", func(t *testing.T) {
		id, _ := ike.ParseIdentity("alice")
		cfg := &ike.Config{PSK: []byte("fortigate-psk-0123456789"), LocalID: id, RemoteID: &gw,
			EAP: &ike.EAPClient{Identity: "alice", Password: []byte("guess")}, RetransmitBase: 500 * time.Millisecond}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_, err := ike.Dial(ctx, cfg, netip.MustParseAddrPort("127.0.0.1:0"), c.addr())
		if !errors.Is(err, ike.ErrAuthentication) {
			t.Errorf("dial with a wrong EAP password: %v, want an authentication failure", err)
		}
	})
}

// TestIKEInitiatorChildless: an IKE SA without a Child SA (RFC 6023), which charon allows by
// default.
func TestIKEInitiatorChildless(t *testing.T) {
	c := startCharon(t, charonOpts{swanctl: responderConns("")})
	cd := newIKECard(t, "p256")
	cfg := initiatorConfig(t, cd.token(t, "strict-2fa", pinPrompter(), nil, nil), cd.cert)
	cfg.Childless = true
	s := dialCharon(t, cfg, c)
	if n := len(s.Children()); n != 0 {
		t.Errorf("%d Child SAs in a childless IKE SA", n)
	}
	out := c.swanctl(t, "--list-sas")
	if !strings.Contains(out, "rw-cert:") || strings.Contains(out, "net:") {
		t.Errorf("charon's SAs:\n%s", out)
	}
}

// TestIKEInitiatorFragmentation: with 300-byte fragments on our side and 400 on charon's
// (RFC 7383), IKE_AUTH with certificates travels in fragments both ways.
func TestIKEInitiatorFragmentation(t *testing.T) {
	c := startCharon(t, charonOpts{settings: []string{"fragment_size = 400"}, swanctl: responderConns("")})
	cd := newIKECard(t, "p384")
	cfg := initiatorConfig(t, cd.token(t, "strict-2fa", pinPrompter(), nil, nil), cd.cert)
	cfg.FragmentSize = 300
	s := dialCharon(t, cfg, c)
	if s.FragmentSize() != 300 {
		t.Errorf("fragment size %d", s.FragmentSize())
	}
	// charon's worker threads may take the fragments in any order: whichever comes last
	// completes the message, so the one that waits need not be #1.
	if !c.logHas(`received fragment #\d+ of \d+, waiting for complete IKE message`) || !c.logHas(`reassembled fragmented IKE message`) {
		t.Errorf("charon did not reassemble our fragments:\n%s", tail(c.log, 40))
	}
	if !c.logHas(`splitting IKE message \(\d+ bytes\) into \d+ fragments`) {
		t.Errorf("charon did not fragment its answer:\n%s", tail(c.log, 40))
	}
	if len(s.Children()) != 1 {
		t.Errorf("%d Child SAs", len(s.Children()))
	}
}

// events collects a session's events for a test to wait on.
type events struct {
	ch chan ike.Event
}

func newEvents() *events { return &events{ch: make(chan ike.Event, 256)} }

func (e *events) observe(ev ike.Event) {
	select {
	case e.ch <- ev:
	default:
	}
}

// wait returns the next event of kind k, failing after 15 s.
func (e *events) wait(t testing.TB, k ike.EventKind) ike.Event {
	t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case ev := <-e.ch:
			if ev.Kind == k {
				return ev
			}
		case <-timeout:
			t.Fatalf("no %v event within 15s", k)
		}
	}
}

// TestIKEInitiatorRekeyLivenessDelete: tokenlab rekeys the IKE SA and the Child SA, checks
// liveness and deletes; charon does the same to tokenlab (swanctl --rekey, its DPD, swanctl
// --terminate).
func TestIKEInitiatorRekeyLivenessDelete(t *testing.T) {
	c := startCharon(t, charonOpts{swanctl: responderConns("dpd_delay = 1s")})
	cd := newIKECard(t, "p256")
	cfg := initiatorConfig(t, cd.token(t, "strict-2fa", pinPrompter(), nil, nil), cd.cert)
	ev := newEvents()
	cfg.Observer = ev.observe
	s := dialCharon(t, cfg, c)
	ctx := context.Background()

	// Ours.
	if err := s.RekeyIKE(ctx); err != nil {
		t.Fatal(err)
	}
	spiI, spiR := s.SPIs()
	out := c.swanctl(t, "--list-sas")
	if !strings.Contains(out, fmt.Sprintf("%016x", spiI)) || !strings.Contains(out, fmt.Sprintf("%016x", spiR)) {
		t.Errorf("charon does not list the rekeyed IKE SA %016x_i %016x_r:\n%s", spiI, spiR, out)
	}
	old := s.Children()[0]
	nc, err := s.RekeyChild(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	out = c.swanctl(t, "--list-sas")
	if !strings.Contains(out, fmt.Sprintf("in  %08x", nc.OutSPI)) || !strings.Contains(out, fmt.Sprintf("out %08x", nc.InSPI)) ||
		childState(out, old.InSPI) == "INSTALLED" {
		t.Errorf("charon's Child SAs after our rekey (new %v, old %v):\n%s", nc, old, out)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if !c.logHas(`parsed INFORMATIONAL request \d+ \[ \]`) {
		t.Error("charon did not see our liveness check")
	}

	// Charon's.
	ev.wait(t, ike.EventLiveness) // its DPD after a second of silence
	c.swanctl(t, "--rekey", "--ike", "rw-cert")
	ev.wait(t, ike.EventIKERekeyed)
	c.swanctl(t, "--rekey", "--child", "net")
	ev.wait(t, ike.EventChildUp)
	ev.wait(t, ike.EventChildDown)
	if n := len(s.Children()); n != 1 {
		t.Errorf("%d Child SAs after charon's rekey", n)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("liveness on the IKE SA charon rekeyed: %v", err)
	}
	c.swanctl(t, "--terminate", "--ike", "rw-cert")
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the session survived charon's delete")
	}
	if s.Err() != nil {
		t.Errorf("deleted by the peer, Err() = %v", s.Err())
	}

	// Our delete.
	s2 := dialCharon(t, cfg, c)
	if err := s2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if out := c.swanctl(t, "--list-sas"); strings.Contains(out, "rw-cert") {
		t.Errorf("charon still has the IKE SA we deleted:\n%s", out)
	}
}

// childState finds the state of the Child SA with an outbound SPI in `swanctl --list-sas`
// output ("INSTALLED", "DELETED", or "" when it is not listed).
func childState(listing string, outSPI uint32) string {
	i := strings.Index(listing, fmt.Sprintf("out %08x", outSPI))
	if i < 0 {
		return ""
	}
	head := listing[:i]
	j := strings.LastIndex(head, "reqid ")
	if j < 0 {
		return ""
	}
	f := strings.Split(head[j:], ",")
	if len(f) < 2 {
		return ""
	}
	return strings.TrimSpace(f[1])
}

// listenIKE starts a tokenlab responder on a loopback port.
func listenIKE(t testing.TB, cfg *ike.Config) *ike.Responder {
	t.Helper()
	r, err := ike.Listen(cfg, netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// certResponder is a tokenlab responder that authenticates as gw.test with a certificate and
// accepts client@test's.
func certResponder(t testing.TB) *ike.Config {
	p := testIKEPKI(t)
	gw, _ := ike.ParseIdentity("gw.test")
	return &ike.Config{Signer: p.gwKey, Certificates: [][]byte{p.gwCert}, CAs: []*x509.Certificate{p.ca}, LocalID: gw,
		LocalTS: mustTS(t, "10.2.0.0/24"), RetransmitBase: 500 * time.Millisecond}
}

// initiatorConn is one connection of charon as the initiator towards a tokenlab responder.
func initiatorConn(name string, port uint16, proposals, local, remote, child, extra string) string {
	children := ""
	if child != "" {
		children = `
    children {
      net {
        ` + child + `
      }
    }`
	}
	return `  ` + name + ` {
    version = 2
    local_addrs = 127.0.0.1
    remote_addrs = 127.0.0.1
    remote_port = ` + fmt.Sprint(port) + `
    proposals = ` + proposals + `
    ` + extra + `
    local {
      ` + local + `
    }
    remote {
      ` + remote + `
    }` + children + `
  }
`
}

const childNet = "local_ts = 127.0.0.1/32\n        remote_ts = 10.2.0.0/24\n        esp_proposals = aes128gcm16, aes128-sha256\n        start_action = none"

// initiate runs `swanctl --initiate` for an IKE SA (and its child "net" when child) and returns
// the session the responder accepted.
func initiate(t testing.TB, c *charon, r *ike.Responder, conn string, child bool) *ike.Session {
	t.Helper()
	args := []string{"--initiate", "--ike", conn, "--timeout", "20"}
	if child {
		args = append(args, "--child", "net")
	}
	c.swanctl(t, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := r.Accept(ctx)
	if err != nil {
		t.Fatalf("the responder accepted no session after charon's %s: %v", conn, err)
	}
	return s
}

// TestIKEResponderCertificates: charon initiates to tokenlab's responder with ECDSA P-256 and
// P-384 client certificates; both sides sign with RFC 7427 digital signatures, or, when the
// responder announces no SIGNATURE_HASH_ALGORITHMS, with RFC 4754.
func TestIKEResponderCertificates(t *testing.T) {
	for _, mode := range []ike.SignatureMode{ike.SignatureRFC7427, ike.SignatureRFC4754} {
		name := map[ike.SignatureMode]string{ike.SignatureRFC7427: "rfc7427", ike.SignatureRFC4754: "rfc4754"}[mode]
		t.Run(name, func(t *testing.T) {
			cfg := certResponder(t)
			cfg.SignatureMode = mode
			r := listenIKE(t, cfg)
			port := r.Addrs()[0].Port()
			var conns string
			for _, curve := range []string{"p256", "p384"} {
				conns += initiatorConn("cert-"+curve, port, "aes256gcm16-prfsha384-ecp384",
					"auth = pubkey\n      certs = client-"+curve+".pem\n      id = client@test",
					"auth = pubkey\n      id = gw.test\n      cacerts = ca.pem", childNet, "")
			}
			c := startCharon(t, charonOpts{swanctl: "connections {\n" + conns + "}\n"})
			for _, curve := range []string{"p256", "p384"} {
				s := initiate(t, c, r, "cert-"+curve, true)
				if got := s.RemoteID().String(); got != "client@test" {
					t.Errorf("%s: remote identity %q", curve, got)
				}
				wantMethod := ike.AuthDigitalSignature
				if mode == ike.SignatureRFC4754 {
					wantMethod = map[string]ike.AuthMethod{"p256": ike.AuthECDSA256, "p384": ike.AuthECDSA384}[curve]
				}
				if got := s.PeerAuthMethod(); got != wantMethod {
					t.Errorf("%s: charon signed with %v, want %v", curve, got, wantMethod)
				}
				if bits := s.PeerCertificate().PublicKey.(*ecdsa.PublicKey).Curve.Params().BitSize; fmt.Sprintf("p%d", bits) != curve {
					t.Errorf("%s: charon's certificate has a P-%d key", curve, bits)
				}
				if ch := s.Children(); len(ch) != 1 || ike.SelectorsString(ch[0].RemoteTS()) != "127.0.0.1/32" {
					t.Errorf("%s: Child SAs %v", curve, ch)
				}
			}
			re := "authentication of 'gw.test' with ECDSA_WITH_SHA256_DER successful"
			if mode == ike.SignatureRFC4754 {
				re = "authentication of 'gw.test' with ECDSA-256 signature successful"
			}
			if n := c.logCount(re); n != 2 {
				t.Errorf("charon logged %q %d times, want 2", re, n)
			}
		})
	}
}

// TestIKEResponderProposals: charon initiates with each proposal of the issue and each DH
// group alone; tokenlab's responder (PSK) must settle on exactly that one.
func TestIKEResponderProposals(t *testing.T) {
	gw, _ := ike.ParseIdentity("gw-psk.test")
	cfg := &ike.Config{PSK: []byte("tokenlab-psk-0123456789"), LocalID: gw, LocalTS: mustTS(t, "10.2.0.0/24"), RetransmitBase: 500 * time.Millisecond}
	r := listenIKE(t, cfg)
	port := r.Addrs()[0].Port()
	props := []string{"aes128-sha256", "aes256-sha256", "aes128gcm16-prfsha256", "aes256gcm16-prfsha384", "chacha20poly1305-prfsha256"}
	groups := []string{"ecp256", "ecp384", "ecp521", "curve25519", "modp2048"}
	var conns string
	for i, p := range props {
		for j, g := range groups {
			conns += initiatorConn(fmt.Sprintf("p%d%d", i, j), port, p+"-"+g,
				"auth = psk\n      id = psk-client", "auth = psk\n      id = gw-psk.test", childNet, "")
		}
	}
	c := startCharon(t, charonOpts{swanctl: "connections {\n" + conns + "}\nsecrets {\n  ike-psk {\n    id-gw = gw-psk.test\n    id-client = psk-client\n    secret = \"tokenlab-psk-0123456789\"\n  }\n}\n"})
	for i, p := range props {
		for j, g := range groups {
			s := initiate(t, c, r, fmt.Sprintf("p%d%d", i, j), true)
			want, _ := ike.ParseProposal(p+"-"+g, false)
			if got := s.Suite().String(); got != want.String() {
				t.Errorf("charon proposed %s-%s, the responder chose %s", p, g, got)
			}
			if s.PeerAuthMethod() != ike.AuthPSK || len(s.Children()) != 1 {
				t.Errorf("%s-%s: peer auth %v, %d Child SAs", p, g, s.PeerAuthMethod(), len(s.Children()))
			}
			s.Close(context.Background())
		}
	}
}

// TestIKEResponderEAP: FortiGate's side: charon logs in as alice (password) and as bob
// (password with the current TOTP code appended, RFC 6238, 30 s steps, ±1 step); the
// responder authenticates itself with a PSK and hands out an address from its pool with DNS
// and split-include subnets. A code is accepted once only.
func TestIKEResponderEAP(t *testing.T) {
	clock := middleware.NewFakeClock(time.Date(2026, 1, 28, 9, 0, 0, 0, time.UTC))
	totp := &ike.TOTP{Secret: []byte("12345678901234567890"), Step: 30 * time.Second, Window: 1}
	gw, _ := ike.ParseIdentity("gw-eap.test")
	pool, _ := ike.ParsePool("10.40.40.2-10.40.40.20")
	cfg := &ike.Config{PSK: []byte("fortigate-psk-0123456789"), LocalID: gw, Pool: pool,
		DNS: []netip.Addr{netip.MustParseAddr("10.40.40.1")}, SplitInclude: []netip.Prefix{netip.MustParsePrefix("10.2.0.0/24"), netip.MustParsePrefix("10.4.0.0/16")},
		EAPServer: &ike.EAPServer{OTP: ike.OTPAppend, Clock: clock, Users: map[string]ike.EAPUser{
			"alice": {Password: []byte("alice-password")},
			"bob":   {Password: []byte("bob-password"), TOTP: totp},
		}}, RetransmitBase: 500 * time.Millisecond}
	r := listenIKE(t, cfg)
	port := r.Addrs()[0].Port()
	conf := func(code string) string {
		var conns string
		for _, u := range []string{"alice", "bob"} {
			conns += initiatorConn("eap-"+u, port, "aes128-sha256-modp2048, aes256gcm16-prfsha384-ecp384",
				"auth = eap-mschapv2\n      eap_id = "+u+"\n      id = "+u, "auth = psk\n      id = gw-eap.test", "", "vips = 0.0.0.0\n    childless = force")
		}
		return "connections {\n" + conns + "}\nsecrets {\n  ike-gw {\n    id-gw = gw-eap.test\n    id-alice = alice\n    id-bob = bob\n    secret = \"fortigate-psk-0123456789\"\n  }\n" +
			"  eap-alice {\n    id = alice\n    secret = \"alice-password\"\n  }\n  eap-bob {\n    id = bob\n    secret = \"bob-password" + code + "\"\n  }\n}\n"
	}
	code := totp.At(clock.Now())
	c := startCharon(t, charonOpts{swanctl: conf(code)})
	for _, u := range []string{"alice", "bob"} {
		s := initiate(t, c, r, "eap-"+u, false)
		if s.EAPIdentity() != u || s.PeerAuthMethod() != ike.AuthPSK {
			t.Errorf("%s: EAP identity %q, AUTH %v", u, s.EAPIdentity(), s.PeerAuthMethod())
		}
		a := s.Configuration().Address
		if !a.IsValid() || a.Less(netip.MustParseAddr("10.40.40.2")) || netip.MustParseAddr("10.40.40.20").Less(a) {
			t.Errorf("%s: assigned %v", u, a)
		}
		if out := c.swanctl(t, "--list-sas", "--ike", "eap-"+u); !strings.Contains(out, "["+a.String()+"]") {
			t.Errorf("%s: charon does not show its virtual IP %v:\n%s", u, a, out)
		}
	}
	if !c.logHas(`EAP-MS-CHAPv2 succeeded: 'Welcome2tokenlab'`) {
		t.Errorf("charon's log lacks the MS-CHAPv2 success message:\n%s", tail(c.log, 20))
	}
	// The same code again: refused (RFC 6238 §5.2).
	c.swanctl(t, "--terminate", "--ike", "eap-bob")
	if out, err := c.swanctlErr("--initiate", "--ike", "eap-bob", "--timeout", "20"); err == nil {
		t.Errorf("a reused one-time code was accepted:\n%s", out)
	}
	// The next step's code works.
	clock.Advance(30 * time.Second)
	if err := os.WriteFile(filepath.Join(c.dir, "swanctl", "swanctl.conf"), []byte(conf(totp.At(clock.Now()))), 0o600); err != nil {
		t.Fatal(err)
	}
	c.swanctl(t, "--load-creds", "--clear")
	if s := initiate(t, c, r, "eap-bob", false); s.EAPIdentity() != "bob" {
		t.Errorf("bob's next code: EAP identity %q", s.EAPIdentity())
	}
}

// TestIKEResponderChildlessFragmentation: charon initiates a childless IKE SA (RFC 6023), and
// one with a Child SA, through 400-byte fragments from charon and 300-byte fragments from us.
func TestIKEResponderChildlessFragmentation(t *testing.T) {
	cfg := certResponder(t)
	cfg.FragmentSize = 300
	r := listenIKE(t, cfg)
	port := r.Addrs()[0].Port()
	local := "auth = pubkey\n      certs = client-p384.pem\n      id = client@test"
	remote := "auth = pubkey\n      id = gw.test"
	conns := initiatorConn("childless", port, "aes256gcm16-prfsha384-ecp384", local, remote, "", "childless = force") +
		initiatorConn("child", port, "aes128-sha256-modp2048", local, remote, childNet, "")
	c := startCharon(t, charonOpts{settings: []string{"fragment_size = 400"}, swanctl: "connections {\n" + conns + "}\n"})
	s := initiate(t, c, r, "childless", false)
	if n := len(s.Children()); n != 0 {
		t.Errorf("%d Child SAs in a childless IKE SA", n)
	}
	s = initiate(t, c, r, "child", true)
	if n := len(s.Children()); n != 1 {
		t.Errorf("%d Child SAs", n)
	}
	if s.FragmentSize() != 300 {
		t.Errorf("fragment size %d", s.FragmentSize())
	}
	if n := c.logCount(`splitting IKE message \(\d+ bytes\) into \d+ fragments`); n < 2 {
		t.Errorf("charon fragmented %d messages, want its IKE_AUTH requests", n)
	}
	if n := c.logCount(`reassembled fragmented IKE message`); n < 2 {
		t.Errorf("charon reassembled %d of our messages, want our IKE_AUTH answers", n)
	}
}

// TestIKEResponderRekeyLivenessDelete: on an IKE SA charon initiated, tokenlab's responder
// rekeys the IKE SA and the Child SA, checks liveness and deletes; charon rekeys both, checks
// liveness (DPD) and deletes.
func TestIKEResponderRekeyLivenessDelete(t *testing.T) {
	cfg := certResponder(t)
	ev := newEvents()
	cfg.Observer = ev.observe
	r := listenIKE(t, cfg)
	conns := initiatorConn("cert", r.Addrs()[0].Port(), "chacha20poly1305-prfsha256-curve25519",
		"auth = pubkey\n      certs = client-p256.pem\n      id = client@test", "auth = pubkey\n      id = gw.test", childNet, "dpd_delay = 1s")
	c := startCharon(t, charonOpts{swanctl: "connections {\n" + conns + "}\n"})
	s := initiate(t, c, r, "cert", true)
	ctx := context.Background()

	if err := s.RekeyIKE(ctx); err != nil {
		t.Fatal(err)
	}
	spiI, spiR := s.SPIs()
	if out := c.swanctl(t, "--list-sas"); !strings.Contains(out, fmt.Sprintf("%016x_i %016x_r", spiI, spiR)) {
		t.Errorf("charon does not list the IKE SA we rekeyed (%016x_i %016x_r):\n%s", spiI, spiR, out)
	}
	old := s.Children()[0]
	nc, err := s.RekeyChild(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	if out := c.swanctl(t, "--list-sas"); childState(out, nc.InSPI) != "INSTALLED" || childState(out, old.InSPI) == "INSTALLED" {
		t.Errorf("charon's Child SAs after our rekey:\n%s", out)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}

	ev.wait(t, ike.EventLiveness)
	c.swanctl(t, "--rekey", "--ike", "cert")
	ev.wait(t, ike.EventIKERekeyed)
	c.swanctl(t, "--rekey", "--child", "net")
	ev.wait(t, ike.EventChildUp)
	ev.wait(t, ike.EventChildDown)
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("liveness after charon's rekey: %v", err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if out := c.swanctl(t, "--list-sas"); strings.Contains(out, "cert:") {
		t.Errorf("charon still has the IKE SA we deleted:\n%s", out)
	}
	s = initiate(t, c, r, "cert", true)
	c.swanctl(t, "--terminate", "--ike", "cert")
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the session survived charon's delete")
	}
}

// TestIKEPromptsPerProfile: the FortiClient reconnect case. The initiator's key is on the
// card; the tunnel is brought up and torn down three times by one application. Under
// strict-2fa the middleware asks for the PIN on every connection (three prompts, the card
// reset at each close); under safenet-single-logon once (the card stays verified and the
// next connection signs without asking). The audit trail counts.
func TestIKEPromptsPerProfile(t *testing.T) {
	c := startCharon(t, charonOpts{swanctl: responderConns("")})
	for _, tc := range []struct {
		profile      string
		prompts      int
		resets       int
		cardVerified int
	}{
		{"strict-2fa", 3, 3, 0},
		{"safenet-single-logon", 1, 0, 2},
	} {
		t.Run(tc.profile, func(t *testing.T) {
			cd := newIKECard(t, "p256")
			rec := &middleware.Recorder{}
			clock := middleware.NewFakeClock(time.Date(2026, 1, 28, 9, 0, 0, 0, time.UTC))
			pol, _ := middleware.Profile(tc.profile)
			tok, err := middleware.Open(context.Background(), cd.dev.Card.Dial, middleware.Options{
				Application: "forticlient", Policy: pol, Prompter: pinPrompter(), Audit: rec, Clock: clock})
			if err != nil {
				t.Fatal(err)
			}
			defer tok.Close(context.Background())
			for i := 0; i < 3; i++ {
				s := dialCharon(t, initiatorConfig(t, tok, cd.cert), c)
				if err := s.Close(context.Background()); err != nil {
					t.Fatal(err)
				}
				clock.Advance(time.Minute)
			}
			if n := rec.Count("forticlient", middleware.EventPrompt); n != tc.prompts {
				t.Errorf("%d PIN prompts over three connections, want %d", n, tc.prompts)
			}
			if n := rec.Count("forticlient", middleware.EventSign); n != 3 {
				t.Errorf("%d signatures, want 3", n)
			}
			if n := rec.Count("forticlient", middleware.EventCardReset); n != tc.resets {
				t.Errorf("%d card resets at tunnel close, want %d", n, tc.resets)
			}
			if n := rec.Count("forticlient", middleware.EventCardVerified); n != tc.cardVerified {
				t.Errorf("%d connections found the card still verified, want %d", n, tc.cardVerified)
			}
			if t.Failed() {
				for _, e := range rec.Events() {
					t.Log(e)
				}
			}
		})
	}
}
