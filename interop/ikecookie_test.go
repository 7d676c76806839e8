package interop

import (
	"crypto/rand"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"tokenlab/ike"
)

// TestIKECookieUnderFlood: a test sender floods tokenlab's responder with half-open
// IKE_SA_INIT requests (charon's recorded request under fresh SPIs), which turns cookies on
// (RFC 7296 §2.6); charon, a legitimate initiator, then connects by repeating its request with
// the COOKIE, while the half-open table stays at the threshold.
func TestIKECookieUnderFlood(t *testing.T) {
	req, err := os.ReadFile(filepath.Join("..", "ike", "testdata", "fuzz", "captures", "charon-init-cert-01-IKE_SA_INIT-req.ike"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := certResponder(t)
	cfg.CookieThreshold = 10
	r := listenIKE(t, cfg)
	to := r.Addrs()[0]

	sender, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	const n = 200
	buf := make([]byte, 4096)
	cookies := 0
	for i := 0; i < n; i++ {
		d := append([]byte{0, 0, 0, 0}, req...) // the non-ESP marker: neither port is 500
		rand.Read(d[4:12])                      // a fresh SPIi: a new half-open IKE SA
		if _, err := sender.WriteToUDPAddrPort(d, to); err != nil {
			t.Fatal(err)
		}
		sender.SetReadDeadline(time.Now().Add(5 * time.Second))
		l, _, err := sender.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		if m, _, err := ike.ParseMessage(buf[4:l]); err == nil && m.Notify(ike.NotifyCookie) != nil {
			cookies++
		}
	}
	st := r.Stats()
	if cookies != n-10 || st.HalfOpen != 10 {
		t.Fatalf("flood of %d: %d cookies, %d half-open; want %d and 10", n, cookies, st.HalfOpen, n-10)
	}

	conns := initiatorConn("cert", to.Port(), "aes256gcm16-prfsha384-ecp384",
		"auth = pubkey\n      certs = client-p256.pem\n      id = client@test", "auth = pubkey\n      id = gw.test", "", "childless = force")
	c := startCharon(t, charonOpts{swanctl: "connections {\n" + conns + "}\n"})
	s := initiate(t, c, r, "cert", false)
	if got := s.RemoteID().String(); got != "client@test" {
		t.Errorf("remote identity %q", got)
	}
	after := r.Stats()
	if after.CookiesOK != 1 || after.HalfOpenMax > 11 {
		t.Errorf("charon's connection: %d valid cookies (want 1), half-open peak %d", after.CookiesOK, after.HalfOpenMax)
	}
	if !c.logHas(`parsed IKE_SA_INIT response 0 \[ N\(COOKIE\) \]`) {
		t.Errorf("charon's log does not mention the cookie:\n%s", tail(c.log, 30))
	}
}
