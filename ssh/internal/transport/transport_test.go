package transport

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/crypto/cryptobyte"
	gossh "golang.org/x/crypto/ssh"
)

// socketPair returns two connected stream sockets: unlike net.Pipe they buffer, so both ends
// can send their version and KEXINIT before reading, as SSH implementations do.
func socketPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b := conn(fds[0]), conn(fds[1])
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func ed25519Signer(t testing.TB) gossh.Signer {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	s, err := gossh.NewSignerFromSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func fixedHostKey(k gossh.PublicKey) func(gossh.PublicKey) error {
	return func(got gossh.PublicKey) error {
		if !bytes.Equal(got.Marshal(), k.Marshal()) {
			return errors.New("wrong host key")
		}
		return nil
	}
}

// pair runs our client and our server on a socket pair.
func pair(t *testing.T, ccfg, scfg *Config) (*Conn, *Conn) {
	t.Helper()
	a, b := socketPair(t)
	var srv *Conn
	var serr error
	done := make(chan struct{})
	go func() { srv, serr = Server(b, scfg); close(done) }()
	cli, cerr := Client(a, ccfg)
	<-done
	if cerr != nil || serr != nil {
		t.Fatalf("handshake: client %v, server %v", cerr, serr)
	}
	return cli, srv
}

// TestOwnEnds: every key exchange method and cipher between our two ends; packets cross in
// both directions while the client re-keys every few kilobytes, and every packet arrives in
// order.
func TestOwnEnds(t *testing.T) {
	host := ed25519Signer(t)
	for _, kex := range DefaultKeyExchanges {
		for _, ci := range DefaultCiphers {
			t.Run(kex+"/"+ci, func(t *testing.T) {
				ccfg := &Config{KeyExchanges: []string{kex}, Ciphers: []string{ci}, HostKeyAlgorithms: []string{gossh.KeyAlgoED25519},
					VerifyHostKey: fixedHostKey(host.PublicKey()), RekeyThreshold: 8 << 10}
				scfg := &Config{HostKeys: []gossh.Signer{host}, ExtInfo: [][2]string{{"server-sig-algs", "ssh-ed25519"}}}
				cli, srv := pair(t, ccfg, scfg)
				if !bytes.Equal(cli.SessionID(), srv.SessionID()) || len(cli.SessionID()) == 0 {
					t.Fatal("session IDs differ")
				}
				if !cli.strict || !srv.strict {
					t.Error("strict key exchange not negotiated between our ends")
				}
				const n = 300
				var writers, all sync.WaitGroup
				readersDone := make(chan struct{}, 2)
				send := func(c *Conn, tag byte) {
					defer writers.Done()
					for i := range n {
						p := append([]byte{90, tag}, bytes.Repeat([]byte{byte(i)}, 100+i)...)
						if err := c.WritePacket(p); err != nil {
							t.Errorf("write %d: %v", i, err)
							return
						}
					}
				}
				// A reader keeps reading after the last packet: key exchanges run on the
				// reading side, and the peer may still start one.
				recv := func(c *Conn, tag byte) {
					defer func() { readersDone <- struct{}{} }()
					for i := 0; ; i++ {
						p, err := c.ReadPacket()
						if err != nil {
							if i < n {
								t.Errorf("read %d: %v", i, err)
							}
							return
						}
						want := append([]byte{90, tag}, bytes.Repeat([]byte{byte(i)}, 100+i)...)
						if i >= n || !bytes.Equal(p, want) {
							t.Errorf("packet %d: % x..., want % x...", i, p[:4], want[:4])
						}
						if i == n-1 {
							all.Done()
						}
					}
				}
				writers.Add(2)
				all.Add(2)
				go send(cli, 'c')
				go send(srv, 's')
				go recv(srv, 'c')
				go recv(cli, 's')
				writers.Wait()
				all.Wait()
				kc, ks := cli.KeyExchanges(), srv.KeyExchanges()
				cli.Close()
				srv.Close()
				<-readersDone
				<-readersDone
				if kc < 3 || ks < 3 {
					t.Errorf("key exchanges: client %d, server %d; want at least 3", kc, ks)
				}
				if got := cli.Extensions()["server-sig-algs"]; got != "ssh-ed25519" {
					t.Errorf("server-sig-algs %q", got)
				}
			})
		}
	}
}

// TestAgainstXCryptoServer: our client against golang.org/x/crypto/ssh's server: it asks for
// user authentication, gets in with "none", opens a session and plays ping-pong with the
// server, which answers each byte with a kilobyte and re-keys every 256 bytes it sends. The
// server starts its re-keys from its own goroutine, so the rounds go on until five key
// exchanges are done rather than for a fixed count.
func TestAgainstXCryptoServer(t *testing.T) {
	for _, hk := range []struct {
		name   string
		signer func() gossh.Signer
		algo   string
	}{
		{"ed25519", func() gossh.Signer { return ed25519Signer(t) }, gossh.KeyAlgoED25519},
		{"p384", func() gossh.Signer {
			k, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
			s, _ := gossh.NewSignerFromSigner(k)
			return s
		}, gossh.KeyAlgoECDSA384},
		{"rsa-sha2-512", func() gossh.Signer {
			k, _ := rsa.GenerateKey(rand.Reader, 2048)
			s, _ := gossh.NewSignerFromSigner(k)
			return s
		}, gossh.KeyAlgoRSASHA512},
	} {
		t.Run(hk.name, func(t *testing.T) {
			host := hk.signer()
			a, b := socketPair(t)
			scfg := &gossh.ServerConfig{NoClientAuth: true}
			scfg.RekeyThreshold = 256
			scfg.AddHostKey(host)
			go func() {
				_, chans, reqs, err := gossh.NewServerConn(b, scfg)
				if err != nil {
					t.Errorf("x/crypto server: %v", err)
					return
				}
				go gossh.DiscardRequests(reqs)
				nc := <-chans
				ch, creqs, err := nc.Accept()
				if err != nil {
					t.Error(err)
					return
				}
				go gossh.DiscardRequests(creqs)
				var one [1]byte
				for {
					if _, err := ch.Read(one[:]); err != nil {
						ch.Close()
						return
					}
					ch.Write(bytes.Repeat(one[:], 1024))
				}
			}()
			c, err := Client(a, &Config{HostKeyAlgorithms: []string{hk.algo}, VerifyHostKey: fixedHostKey(host.PublicKey())})
			if err != nil {
				t.Fatal(err)
			}
			if c.HostKeyAlgorithm() != hk.algo {
				t.Errorf("host key algorithm %s, want %s", c.HostKeyAlgorithm(), hk.algo)
			}
			pingPong(t, c, func(i int) bool { return c.KeyExchanges() >= 5 || i == 1000 })
			if c.KeyExchanges() < 5 {
				t.Errorf("only %d key exchanges in 1000 rounds; the server should have re-keyed every 256 bytes", c.KeyExchanges())
			}
		})
	}
}

// pingPong authenticates with "none", opens a session channel and sends one byte per round,
// expecting a kilobyte of it back each time, until done says so.
func pingPong(t *testing.T, c *Conn, done func(round int) bool) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.WritePacket(MarshalServiceRequest("ssh-userauth")))
	p, err := c.ReadPacket()
	must(err)
	if svc, err := ParseService(p, true); err != nil || svc != "ssh-userauth" {
		t.Fatalf("service accept: %q %v", svc, err)
	}
	var b cryptobyte.Builder
	b.AddUint8(50)
	addString(&b, []byte("tester"))
	addString(&b, []byte("ssh-connection"))
	addString(&b, []byte("none"))
	must(c.WritePacket(b.BytesOrPanic()))
	for {
		p, err = c.ReadPacket()
		must(err)
		if p[0] == 52 {
			break
		}
		if p[0] != 53 { // banner
			t.Fatalf("auth none: message %d", p[0])
		}
	}
	b = cryptobyte.Builder{}
	b.AddUint8(90)
	addString(&b, []byte("session"))
	b.AddUint32(7)       // our channel
	b.AddUint32(4 << 20) // window
	b.AddUint32(32 << 10)
	must(c.WritePacket(b.BytesOrPanic()))
	var peer uint32
	for {
		p, err = c.ReadPacket()
		must(err)
		if p[0] == 91 {
			s := cryptobyte.String(p[1:])
			var ours uint32
			if !s.ReadUint32(&ours) || !s.ReadUint32(&peer) {
				t.Fatal("bad open confirmation")
			}
			break
		}
	}
	for i := 0; !done(i); i++ {
		b = cryptobyte.Builder{}
		b.AddUint8(94)
		b.AddUint32(peer)
		addString(&b, []byte{byte(i)})
		must(c.WritePacket(b.BytesOrPanic()))
		var got []byte
		for len(got) < 1024 {
			p, err = c.ReadPacket()
			must(err)
			switch p[0] {
			case 94:
				s := cryptobyte.String(p[1:])
				var ch uint32
				var data []byte
				if !s.ReadUint32(&ch) || !readString(&s, &data) {
					t.Fatal("bad channel data")
				}
				got = append(got, data...)
			case 93, 98, 80: // window adjust, channel request, global request
			default:
				t.Fatalf("round %d: unexpected message %d", i, p[0])
			}
		}
		if !bytes.Equal(got, bytes.Repeat([]byte{byte(i)}, 1024)) {
			t.Fatalf("round %d: %d bytes back", i, len(got))
		}
	}
}

// TestAgainstXCryptoClient: golang.org/x/crypto/ssh's client against our server, with every
// key exchange it offers and ours agree on; the client re-keys every 256 bytes while it sends
// global requests, which our server refuses one by one. x/crypto/ssh starts a re-key from its
// own goroutine when a write finds the threshold crossed, so how many requests make ten key
// exchanges varies: the test sends until the server has seen ten.
func TestAgainstXCryptoClient(t *testing.T) {
	host := ed25519Signer(t)
	for _, kex := range []string{KexCurve25519, KexECDHP256, KexECDHP384, KexECDHP521} {
		t.Run(kex, func(t *testing.T) {
			a, b := socketPair(t)
			errc := make(chan error, 1)
			srvc := make(chan *Conn, 1)
			go func() { errc <- serveNone(b, &Config{HostKeys: []gossh.Signer{host}}, srvc) }()
			ccfg := &gossh.ClientConfig{User: "tester", HostKeyCallback: gossh.FixedHostKey(host.PublicKey())}
			ccfg.KeyExchanges = []string{kex}
			ccfg.RekeyThreshold = 256
			conn, _, reqs, err := gossh.NewClientConn(a, "peer", ccfg)
			if err != nil {
				t.Fatal(err)
			}
			go gossh.DiscardRequests(reqs)
			srv := <-srvc
			for i := 0; srv.KeyExchanges() < 10; i++ {
				if i == 1000 {
					t.Fatalf("%d requests, only %d key exchanges", i, srv.KeyExchanges())
				}
				ok, _, err := conn.SendRequest("tokenlab-test", true, bytes.Repeat([]byte{byte(i)}, 500))
				if err != nil || ok {
					t.Fatalf("request %d: ok=%v err=%v", i, ok, err)
				}
			}
			conn.Close()
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// serveNone is a minimal server above Server: it accepts user authentication "none", hands
// its Conn to srvc, and answers every global request with failure until the client goes.
func serveNone(c net.Conn, cfg *Config, srvc chan<- *Conn) error {
	t, err := Server(c, cfg)
	if err != nil {
		close(srvc)
		return err
	}
	srvc <- t
	p, err := t.ReadPacket()
	if err != nil {
		return err
	}
	if _, err := ParseService(p, false); err != nil {
		return err
	}
	t.WritePacket(MarshalServiceAccept("ssh-userauth"))
	if p, err = t.ReadPacket(); err != nil || p[0] != 50 {
		return fmt.Errorf("auth request: %v", err)
	}
	t.WritePacket([]byte{52})
	for {
		p, err := t.ReadPacket()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if p[0] == 80 {
			t.WritePacket([]byte{82})
		}
	}
}

// A tampered packet is a MAC error and ends the connection with a disconnect.
func TestTamperedPacket(t *testing.T) {
	host := ed25519Signer(t)
	a, b := socketPair(t)
	// Flip one bit of everything the client writes after the handshake.
	tamper := &tamperConn{Conn: a}
	done := make(chan *Conn, 1)
	go func() {
		s, err := Server(b, &Config{HostKeys: []gossh.Signer{host}})
		if err != nil {
			t.Error(err)
		}
		done <- s
	}()
	cli, err := Client(tamper, &Config{HostKeyAlgorithms: []string{gossh.KeyAlgoED25519}, VerifyHostKey: fixedHostKey(host.PublicKey())})
	if err != nil {
		t.Fatal(err)
	}
	srv := <-done
	tamper.on = true
	cli.WritePacket([]byte{90, 1, 2, 3})
	if _, err := srv.ReadPacket(); !errors.Is(err, errMAC) {
		t.Fatalf("tampered packet: %v", err)
	}
	if _, err := cli.ReadPacket(); err == nil {
		t.Fatal("client's connection survived")
	} else if d, ok := err.(*DisconnectError); !ok || d.Reason != DisconnectMACError {
		t.Errorf("client got %v, want a MAC-error disconnect", err)
	}
}

type tamperConn struct {
	net.Conn
	on bool
}

func (c *tamperConn) Write(b []byte) (int, error) {
	if c.on && len(b) > 8 {
		b = bytes.Clone(b)
		b[8] ^= 1
	}
	return c.Conn.Write(b)
}

// The client refuses a server whose host key it does not know, with the protocol's disconnect.
func TestWrongHostKey(t *testing.T) {
	host, other := ed25519Signer(t), ed25519Signer(t)
	a, b := socketPair(t)
	errc := make(chan error, 1)
	go func() { _, err := Server(b, &Config{HostKeys: []gossh.Signer{host}}); errc <- err }()
	_, err := Client(a, &Config{HostKeyAlgorithms: []string{gossh.KeyAlgoED25519}, VerifyHostKey: fixedHostKey(other.PublicKey())})
	if err == nil || err.Error() != "wrong host key" {
		t.Fatalf("client: %v", err)
	}
	if err := <-errc; err == nil {
		t.Error("server finished its handshake with a client that refused it")
	}
}

func TestVersionLines(t *testing.T) {
	for _, tc := range []struct {
		in     string
		client bool
		want   string
		err    bool
	}{
		{"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10\r\n", false, "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10", false},
		{"hello\r\nSSH-2.0-x\r\n", true, "SSH-2.0-x", false},
		{"hello\r\nSSH-2.0-x\r\n", false, "", true},
		{"SSH-1.5-old\r\n", true, "", true},
		{"SSH-2.0-a\x01b\r\n", true, "", true},
		{string(bytes.Repeat([]byte{'a'}, 300)), true, "", true},
		{string(bytes.Repeat([]byte("x\n"), 40)) + "SSH-2.0-x\r\n", true, "", true},
	} {
		got, err := readVersion(bufioReader(tc.in), tc.client)
		if (err != nil) != tc.err || string(got) != tc.want {
			t.Errorf("%q (client %v): %q %v", tc.in, tc.client, got, err)
		}
	}
}

// The packet codec bounds what it reads: lengths beyond the limit, misaligned lengths and
// padding longer than the packet are malformed, never a panic or a huge allocation.
func TestPacketBounds(t *testing.T) {
	var none packetCipher
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"huge", []byte{0x7f, 0xff, 0xff, 0xf8}},
		{"misaligned", []byte{0, 0, 0, 13}},
		{"too short", []byte{0, 0, 0, 4}},
		{"padding", append([]byte{0, 0, 0, 12, 11}, make([]byte, 11)...)},
	} {
		if _, err := none.open(bytes.NewReader(tc.in), nil); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	b, err := none.seal(nil, []byte{90, 1}, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if len(b)%8 != 0 {
		t.Errorf("none packet of %d bytes is not aligned", len(b))
	}
	if p, err := none.open(bytes.NewReader(b), nil); err != nil || !bytes.Equal(p, []byte{90, 1}) {
		t.Errorf("round trip: % x %v", p, err)
	}
	if _, err := none.seal(nil, make([]byte, maxPacket), rand.Reader); err == nil {
		t.Error("sealed a packet beyond the limit")
	}
}

func TestHostKeyAlgorithms(t *testing.T) {
	k, _ := rsa.GenerateKey(rand.Reader, 2048)
	s, _ := gossh.NewSignerFromSigner(k)
	for _, a := range HostKeyAlgorithms(s) {
		if a == gossh.KeyAlgoRSA {
			t.Error("ssh-rsa (SHA-1) offered")
		}
	}
	if got := HostKeyAlgorithms(ed25519Signer(t)); len(got) != 1 || got[0] != gossh.KeyAlgoED25519 {
		t.Errorf("ed25519: %v", got)
	}
}

func bufioReader(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }
