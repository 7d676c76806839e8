package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"tokenlab/emulator/piv"
	"tokenlab/emulator/yubikey"
	"tokenlab/middleware/pivclient"
)

// ikeFiles are a CA, the gateway's certificate and key as PEM files, and a card in a state
// directory with a P-256 key in 9a (PIN policy once) and its certificate for client@test.
type ikeFiles struct {
	ca, gwCert, gwKey, card string
}

func makeIKEFiles(t *testing.T) ikeFiles {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(pub crypto.PublicKey, name string, serial int64) []byte {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
		if strings.Contains(name, "@") {
			tmpl.EmailAddresses = []string{name}
		} else {
			tmpl.DNSNames = []string{name}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	gwKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	gwKeyDER, _ := x509.MarshalECPrivateKey(gwKey)
	f := ikeFiles{ca: filepath.Join(dir, "ca.pem"), gwCert: filepath.Join(dir, "gw.pem"), gwKey: filepath.Join(dir, "gw.key"),
		card: filepath.Join(dir, "card")}
	for path, blk := range map[string]*pem.Block{
		f.ca:     {Type: "CERTIFICATE", Bytes: caDER},
		f.gwCert: {Type: "CERTIFICATE", Bytes: issue(gwKey.Public(), "gw.test", 2)},
		f.gwKey:  {Type: "EC PRIVATE KEY", Bytes: gwKeyDER},
	} {
		if err := os.WriteFile(path, pem.EncodeToMemory(blk), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	d, err := yubikey.Init(f.card, yubikey.Options{Serial: 4711}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()
	c := pivclient.New(d.Card)
	if _, err := c.Select(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.AuthenticateManagementKey(ctx, pivclient.AlgAES192, piv.DefaultManagementKey); err != nil {
		t.Fatal(err)
	}
	pub, err := c.GenerateKey(ctx, pivclient.SlotAuthentication, pivclient.AlgECCP256, pivclient.PINPolicyOnce, pivclient.TouchPolicyNever)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetCertificate(ctx, pivclient.SlotAuthentication, issue(pub, "client@test", 3)); err != nil {
		t.Fatal(err)
	}
	return f
}

// startListen runs `tokenlab ike listen` in process and returns its address and a function
// that waits for it to exit and returns its output.
func startListen(t *testing.T, args ...string) (string, func() (int, string)) {
	t.Helper()
	pr, pw := io.Pipe()
	var stderr bytes.Buffer
	done := make(chan int, 1)
	go func() {
		code := run(append([]string{"ike", "listen", "--listen", "127.0.0.1:0"}, args...), pw, &stderr)
		pw.Close()
		done <- code
	}()
	sc := bufio.NewScanner(pr)
	if !sc.Scan() {
		t.Fatalf("ike listen printed nothing: %d\n%s", <-done, stderr.String())
	}
	first := sc.Text()
	addr, ok := strings.CutPrefix(first, "listening on ")
	if !ok {
		t.Fatalf("ike listen: first line %q", first)
	}
	var rest bytes.Buffer
	copied := make(chan struct{})
	go func() {
		for sc.Scan() {
			rest.WriteString(sc.Text() + "\n")
		}
		close(copied)
	}()
	return addr, func() (int, string) {
		select {
		case code := <-done:
			<-copied
			return code, rest.String() + stderr.String()
		case <-time.After(30 * time.Second):
			t.Fatal("ike listen did not stop after its sessions")
			return 0, ""
		}
	}
}

var espKeyLine = regexp.MustCompile(`(?m)^esp (out|in ) spi (0x[0-9a-f]{8}) \S+ enc ([0-9a-f]+) integ (\S+)$`)

// espKeys maps "direction spi" to "enc integ" from --print-keys output.
func espKeys(out string) map[string]string {
	m := map[string]string{}
	for _, l := range espKeyLine.FindAllStringSubmatch(out, -1) {
		m[strings.TrimSpace(l[1])+" "+l[2]] = l[3] + " " + l[4]
	}
	return m
}

// TestIKEConnectListen runs `tokenlab ike listen` (certificate, address pool) and `tokenlab ike
// connect` with the key on a card behind the middleware, three connections in a row under
// each profile: the PIN prompts follow the profile, the configuration payload is reported,
// and both ends print the same Child SA keys.
func TestIKEConnectListen(t *testing.T) {
	f := makeIKEFiles(t)
	t.Setenv("TOKENLAB_PIN", "123456")
	for _, tc := range []struct {
		profile string
		prompts string
	}{
		{"strict-2fa", "PIN prompts: 3 over 3 connection(s), profile strict-2fa"},
		{"safenet-single-logon", "PIN prompts: 1 over 3 connection(s), profile safenet-single-logon"},
	} {
		t.Run(tc.profile, func(t *testing.T) {
			addr, wait := startListen(t, "--cert", f.gwCert, "--key", f.gwKey, "--ca", f.ca, "--id", "gw.test",
				"--pool", "10.40.40.2-10.40.40.20", "--dns", "10.40.40.1", "--split", "10.2.0.0/24,10.4.0.0/16",
				"--print-keys", "--sessions", "3")
			var stdout, stderr bytes.Buffer
			code := run([]string{"ike", "connect", "--remote", addr, "--local", "127.0.0.1:0", "--state", f.card,
				"--ca", f.ca, "--remote-id", "gw.test", "--id", "client@test", "--prompt", "env", "--profile", tc.profile,
				"--request-config", "--print-keys", "--connections", "3", "--negotiate-timeout", "10"}, &stdout, &stderr)
			out := stdout.String()
			if code != 0 {
				t.Fatalf("ike connect: exit %d\n%s\n%s", code, out, stderr.String())
			}
			lcode, lout := wait()
			if lcode != 0 {
				t.Errorf("ike listen: exit %d\n%s", lcode, lout)
			}
			defer func() {
				if t.Failed() {
					t.Logf("connect:\n%s\nlisten:\n%s", out, lout)
				}
			}()
			if !strings.Contains(out, tc.prompts) {
				t.Errorf("connect's summary lacks %q:\n%s", tc.prompts, out)
			}
			if n := strings.Count(out, "connected: gw.test at "+addr); n != 3 {
				t.Errorf("%d connections reported:\n%s", n, out)
			}
			if !regexp.MustCompile(`configuration: address 10\.40\.40\.\d+`).MatchString(out) || !strings.Contains(out, "10.4.0.0/16") {
				t.Errorf("connect does not report the configuration payload:\n%s", out)
			}
			if n := strings.Count(lout, "established: client@test"); n != 3 {
				t.Errorf("listen reports %d IKE SAs:\n%s", n, lout)
			}
			if n := strings.Count(lout, "closed: client@test (deleted)"); n != 3 {
				t.Errorf("listen reports %d deletes:\n%s", n, lout)
			}
			ck, lk := espKeys(out), espKeys(lout)
			if len(ck) != 6 || len(lk) != 6 {
				t.Fatalf("key lines: %d from connect, %d from listen\n%s\n%s", len(ck), len(lk), out, lout)
			}
			for k, v := range ck {
				dir, spi, _ := strings.Cut(k, " ")
				peer := map[string]string{"out": "in", "in": "out"}[dir] + " " + spi
				if lk[peer] != v {
					t.Errorf("%s keys %s, the gateway's %s has %q", k, v, peer, lk[peer])
				}
			}
		})
	}
}

// TestIKEListenEAPRequired: `tokenlab ike listen --psk-file F --eap-users U` is FortiGate's
// dial-up: the gateway authenticates with the PSK, the users with EAP. An initiator that has
// the PSK and sends its own AUTH is refused; a user who does EAP gets in.
func TestIKEListenEAPRequired(t *testing.T) {
	dir := t.TempDir()
	psk, users := filepath.Join(dir, "psk"), filepath.Join(dir, "users")
	os.WriteFile(psk, []byte("group-psk-every-user-has\n"), 0o600)
	os.WriteFile(users, []byte("alice alice-password\n"), 0o600)
	addr, wait := startListen(t, "--psk-file", psk, "--eap-users", users, "--id", "gw.test", "--sessions", "1")
	connect := func(args ...string) (int, string) {
		var stdout, stderr bytes.Buffer
		code := run(append([]string{"ike", "connect", "--remote", addr, "--local", "127.0.0.1:0", "--psk-file", psk,
			"--remote-id", "gw.test", "--childless", "--negotiate-timeout", "10"}, args...), &stdout, &stderr)
		return code, stdout.String() + stderr.String()
	}
	if code, out := connect("--id", "mallory"); code == 0 || !strings.Contains(out, "AUTHENTICATION_FAILED") {
		t.Errorf("PSK alone: exit %d, want AUTHENTICATION_FAILED\n%s", code, out)
	}
	t.Setenv("TOKENLAB_PIN", "alice-password")
	if code, out := connect("--eap-user", "alice", "--prompt", "env"); code != 0 || !strings.Contains(out, "connected: gw.test") {
		t.Errorf("EAP: exit %d\n%s", code, out)
	}
	if code, out := wait(); code != 0 || !strings.Contains(out, "established: alice (EAP alice)") {
		t.Errorf("ike listen: exit %d\n%s", code, out)
	}
}
