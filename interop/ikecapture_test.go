package interop

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"tokenlab/ike"
)

var ikeCaptures = flag.Bool("ike-captures", false, "rewrite ike/testdata/fuzz/captures/charon-* from TestIKECaptures")

// messageLog keeps the messages a tokenlab endpoint received (ike.Config.Record), protected
// ones decrypted, named as the fuzz seeds of package ike are.
type messageLog struct {
	mu   sync.Mutex
	name string
	n    int
	got  map[string][]byte
}

func (l *messageLog) record(b []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h, err := ike.ParseHeader(b)
	if err != nil {
		return
	}
	kind := "req"
	if h.IsResponse() {
		kind = "resp"
	}
	l.n++
	l.got[fmt.Sprintf("charon-%s-%02d-%s-%s.ike", l.name, l.n, h.Exchange, kind)] = append([]byte(nil), b...)
}

// TestIKECaptures records what charon sends tokenlab in both roles (certificates through
// fragments, EAP-MSCHAPv2 with a configuration payload, rekeys, liveness, deletes) and checks
// that tokenlab's decoder takes every message back through encode and decode unchanged. With
// -ike-captures the messages become the seeds of package ike's fuzz targets.
func TestIKECaptures(t *testing.T) {
	got := map[string][]byte{}
	logFor := func(name string) func([]byte) { return (&messageLog{name: name, got: got}).record }
	ctx := context.Background()

	// charon responds: certificates in 400-byte fragments, rekeys, liveness, delete.
	c := startCharon(t, charonOpts{settings: []string{"fragment_size = 400"}, swanctl: responderConns("")})
	cd := newIKECard(t, "p384")
	cfg := initiatorConfig(t, cd.token(t, "strict-2fa", pinPrompter(), nil, nil), cd.cert)
	cfg.Record = logFor("resp-cert")
	s := dialCharon(t, cfg, c)
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RekeyChild(ctx, s.Children()[0]); err != nil {
		t.Fatal(err)
	}
	if err := s.RekeyIKE(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// charon responds to EAP-MSCHAPv2 with a configuration payload.
	gw, _ := ike.ParseIdentity("gw-eap.test")
	id, _ := ike.ParseIdentity("alice")
	eap := &ike.Config{PSK: []byte("fortigate-psk-0123456789"), LocalID: id, RemoteID: &gw, RequestConfig: true,
		EAP: &ike.EAPClient{Identity: "alice", Password: []byte("alice-password")}, RetransmitBase: 500 * time.Millisecond,
		Record: logFor("resp-eap")}
	if err := dialCharon(t, eap, c).Close(ctx); err != nil {
		t.Fatal(err)
	}

	// charon initiates: certificates, a Child SA, its rekeys and delete.
	rc := certResponder(t)
	rc.Record = logFor("init-cert")
	r := listenIKE(t, rc)
	conns := initiatorConn("cert", r.Addrs()[0].Port(), "aes256gcm16-prfsha384-ecp384",
		"auth = pubkey\n      certs = client-p256.pem\n      id = client@test", "auth = pubkey\n      id = gw.test", childNet, "")
	ci := startCharon(t, charonOpts{swanctl: "connections {\n" + conns + "}\n"})
	rs := initiate(t, ci, r, "cert", true)
	ci.swanctl(t, "--rekey", "--child", "net")
	ci.swanctl(t, "--rekey", "--ike", "cert")
	ci.swanctl(t, "--terminate", "--ike", "cert")
	select {
	case <-rs.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("charon's delete did not end the session")
	}

	// charon initiates EAP-MSCHAPv2 and asks for an address.
	egw, _ := ike.ParseIdentity("gw-eap.test")
	pool, _ := ike.ParsePool("10.40.40.2-10.40.40.20")
	re := &ike.Config{PSK: []byte("fortigate-psk-0123456789"), LocalID: egw, Pool: pool,
		DNS: []netip.Addr{netip.MustParseAddr("10.40.40.1")}, RetransmitBase: 500 * time.Millisecond,
		EAPServer: &ike.EAPServer{Users: map[string]ike.EAPUser{"alice": {Password: []byte("alice-password")}}},
		Record:    logFor("init-eap")}
	er := listenIKE(t, re)
	econns := initiatorConn("eap", er.Addrs()[0].Port(), "aes128-sha256-modp2048",
		"auth = eap-mschapv2\n      eap_id = alice\n      id = alice", "auth = psk\n      id = gw-eap.test", "", "vips = 0.0.0.0\n    childless = force")
	ce := startCharon(t, charonOpts{swanctl: "connections {\n" + econns + "}\nsecrets {\n  ike-gw {\n    id-gw = gw-eap.test\n    id-alice = alice\n" +
		"    secret = \"fortigate-psk-0123456789\"\n  }\n  eap-alice {\n    id = alice\n    secret = \"alice-password\"\n  }\n}\n"})
	if s := initiate(t, ce, er, "eap", false); s.EAPIdentity() != "alice" {
		t.Errorf("EAP identity %q", s.EAPIdentity())
	}
	ce.swanctl(t, "--terminate", "--ike", "eap")

	counts := map[string]int{}
	for name, b := range got {
		h, _ := ike.ParseHeader(b)
		counts[h.Exchange.String()]++
		m, enc, err := ike.ParseMessage(b)
		if err != nil || enc != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		b1, err := m.Marshal()
		if err != nil {
			t.Errorf("%s: re-encoding: %v", name, err)
			continue
		}
		m1, _, err := ike.ParseMessage(b1)
		if err != nil {
			t.Errorf("%s: the re-encoded message does not parse: %v", name, err)
			continue
		}
		if b2, _ := m1.Marshal(); !bytes.Equal(b1, b2) || m.Summary() != m1.Summary() {
			t.Errorf("%s: decode→encode→decode changed the message: %s → %s", name, m.Summary(), m1.Summary())
		}
	}
	t.Logf("%d messages from charon: %v", len(got), counts)
	for _, x := range []string{"IKE_SA_INIT", "IKE_AUTH", "CREATE_CHILD_SA", "INFORMATIONAL"} {
		if counts[x] == 0 {
			t.Errorf("no %s message from charon recorded", x)
		}
	}
	if !*ikeCaptures {
		return
	}
	dir := filepath.Join("..", "ike", "testdata", "fuzz", "captures")
	old, _ := filepath.Glob(filepath.Join(dir, "charon-*.ike"))
	for _, f := range old {
		os.Remove(f)
	}
	for name, b := range got {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
