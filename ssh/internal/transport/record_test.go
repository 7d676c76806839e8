//go:build record

package transport

// The seeds in testdata/fuzz are the clear-text packets of real first key exchanges: x/crypto/ssh's
// client and server and OpenSSH's client against tokenlab's ends. To write them again:
//
//	go test -tags record -run TestRecordSeeds ./ssh/internal/transport/

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"net"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"tokenlab/internal/fuzzseed"
)

// teeConn keeps a copy of what it reads.
type teeConn struct {
	net.Conn
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *teeConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.mu.Lock()
	c.buf.Write(b[:n])
	c.mu.Unlock()
	return n, err
}

// clearPackets returns the packets before the first NEWKEYS in what a peer sent: its version
// line, then packets under the none cipher.
func (c *teeConn) clearPackets(t *testing.T) [][]byte {
	c.mu.Lock()
	r := bufio.NewReader(bytes.NewReader(c.buf.Bytes()))
	c.mu.Unlock()
	if _, err := readVersion(r, true); err != nil {
		t.Fatal(err)
	}
	var none packetCipher
	var out [][]byte
	for {
		p, err := none.open(r, nil)
		if err != nil || p[0] == msgNewKeys {
			return out
		}
		out = append(out, bytes.Clone(p))
	}
}

func writeSeed(t *testing.T, target, name string, p []byte) {
	if err := fuzzseed.Write(target, name, p); err != nil {
		t.Fatal(err)
	}
}

// TestRecordSeeds records the fuzz seeds.
func TestRecordSeeds(t *testing.T) {
	save := func(who string, pkts [][]byte) {
		for _, p := range pkts {
			switch p[0] {
			case msgKexInit:
				writeSeed(t, "FuzzParseKexInit", who, p)
			case msgKexECDHReply:
				writeSeed(t, "FuzzParseECDHReply", who, p)
			}
		}
	}
	host := ed25519Signer(t)
	// x/crypto/ssh's client, each key exchange.
	for _, kex := range []string{KexCurve25519, KexECDHP256, KexECDHP384} {
		a, b := socketPair(t)
		tb := &teeConn{Conn: b}
		done := make(chan struct{})
		go func() { Server(tb, &Config{HostKeys: []gossh.Signer{host}}); close(done) }()
		cfg := &gossh.ClientConfig{User: "u", HostKeyCallback: gossh.InsecureIgnoreHostKey()}
		cfg.KeyExchanges = []string{kex}
		go gossh.NewClientConn(a, "x", cfg)
		<-done
		save("xcrypto-client", tb.clearPackets(t))
	}
	// x/crypto/ssh's server, each host key type.
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for _, hk := range []struct {
		algo string
		key  func() gossh.Signer
	}{
		{gossh.KeyAlgoED25519, func() gossh.Signer { return host }},
		{gossh.KeyAlgoECDSA384, func() gossh.Signer { s, _ := gossh.NewSignerFromSigner(p384); return s }},
		{gossh.KeyAlgoRSASHA256, func() gossh.Signer { s, _ := gossh.NewSignerFromSigner(rsaKey); return s }},
	} {
		a, b := socketPair(t)
		ta := &teeConn{Conn: a}
		scfg := &gossh.ServerConfig{NoClientAuth: true}
		scfg.AddHostKey(hk.key())
		go gossh.NewServerConn(b, scfg)
		a.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := Client(ta, &Config{HostKeyAlgorithms: []string{hk.algo}, VerifyHostKey: func(gossh.PublicKey) error { return nil }}); err != nil {
			t.Fatal(err)
		}
		save("xcrypto-server", ta.clearPackets(t))
	}
	// OpenSSH's client.
	if _, err := exec.LookPath("ssh"); err == nil {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		done := make(chan *teeConn, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				done <- nil
				return
			}
			tc := &teeConn{Conn: c}
			Server(tc, &Config{HostKeys: []gossh.Signer{host}})
			time.Sleep(200 * time.Millisecond)
			c.Close()
			done <- tc
		}()
		port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		exec.Command("ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
			"-p", port, "u@127.0.0.1", "true").Run()
		if tc := <-done; tc != nil {
			save("openssh-client", tc.clearPackets(t))
		}
	}
}
