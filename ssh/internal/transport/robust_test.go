package transport

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

func ownPair(t *testing.T, ccfg, scfg Config) (*Conn, *Conn) {
	t.Helper()
	host := ed25519Signer(t)
	ccfg.HostKeyAlgorithms = []string{gossh.KeyAlgoED25519}
	ccfg.VerifyHostKey = fixedHostKey(host.PublicKey())
	scfg.HostKeys = []gossh.Signer{host}
	return pair(t, &ccfg, &scfg)
}

// readAll reads packets from c into a channel until it fails.
func readAll(c *Conn) <-chan []byte {
	ch := make(chan []byte, 64)
	go func() {
		defer close(ch)
		for {
			p, err := c.ReadPacket()
			if err != nil {
				return
			}
			ch <- p
		}
	}()
	return ch
}

// TestOwnRekeyQueuesWrites: once our side has sent KEXINIT, writes go to a queue instead of
// waiting for the key exchange, so a goroutine that writes twice before it reads (as the
// reading goroutine of the layers above does when it answers) does not hang; the queued
// packets follow our NEWKEYS in order.
func TestOwnRekeyQueuesWrites(t *testing.T) {
	cli, srv := ownPair(t, Config{}, Config{RekeyThreshold: 1 << 10})
	in := readAll(cli)
	for i := range 20 {
		done := make(chan error, 1)
		go func() { done <- srv.WritePacket(append([]byte{90, byte(i)}, make([]byte, 600)...)) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("write %d waited for a key exchange that only this goroutine could run", i)
		}
	}
	go func() { // the server's reader runs its half of the key exchanges
		for {
			if _, err := srv.ReadPacket(); err != nil {
				return
			}
		}
	}()
	for i := range 20 {
		p := <-in
		if p == nil || p[1] != byte(i) {
			t.Fatalf("packet %d: % x", i, p[:min(len(p), 2)])
		}
	}
	if n := srv.KeyExchanges(); n < 5 {
		t.Errorf("%d key exchanges for 12 KiB with a 1 KiB threshold", n)
	}
}

// TestRekeyOnReceivedBytes: bytes received count toward the re-key threshold too (OpenSSH and
// x/crypto/ssh count both directions): a server that only reads still re-keys.
func TestRekeyOnReceivedBytes(t *testing.T) {
	cli, srv := ownPair(t, Config{RekeyThreshold: math64}, Config{RekeyThreshold: 4 << 10})
	got := readAll(srv)
	go func() {
		for range readAll(cli) {
		}
	}()
	// Key exchanges end asynchronously: send until the server has re-keyed twice, which it
	// would never do counting only what it sends.
	for i := 0; srv.KeyExchanges() < 3; i++ {
		if i == 2000 {
			t.Fatalf("the server received 2 MB with a 4 KiB threshold and re-keyed %d times", srv.KeyExchanges()-1)
		}
		if err := cli.WritePacket(append([]byte{90, byte(i)}, make([]byte, 1000)...)); err != nil {
			t.Fatal(err)
		}
		<-got
	}
}

const math64 = 1<<64 - 1

// TestDisconnectStalledPeer: a peer that reads nothing leaves a writer blocked in the socket's
// Write with the write lock held. Disconnect and Close still return at once (Disconnect gives
// its message half a second), and the blocked writer is released with an error.
func TestDisconnectStalledPeer(t *testing.T) {
	for _, how := range []string{"Disconnect", "Close"} {
		t.Run(how, func(t *testing.T) {
			_, srv := ownPair(t, Config{}, Config{})
			werr := make(chan error, 1)
			go func() {
				for {
					if err := srv.WritePacket(append([]byte{94}, make([]byte, 32<<10)...)); err != nil {
						werr <- err
						return
					}
				}
			}()
			time.Sleep(200 * time.Millisecond) // the socket buffers fill; the writer blocks
			start := time.Now()
			if how == "Disconnect" {
				srv.Disconnect(DisconnectByApplication, "card removed")
			} else {
				srv.Close()
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("%s took %v", how, d)
			}
			select {
			case <-werr:
			case <-time.After(time.Second):
				t.Fatal("the writer is still blocked")
			}
		})
	}
}

// TestWriteTimeout: with a write timeout, a peer that reads nothing ends the connection.
func TestWriteTimeout(t *testing.T) {
	_, srv := ownPair(t, Config{}, Config{})
	srv.SetWriteTimeout(200 * time.Millisecond)
	start := time.Now()
	for {
		if err := srv.WritePacket(append([]byte{94}, make([]byte, 32<<10)...)); err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("write failed with %v, want a timeout", err)
			}
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("writes to a peer that reads nothing went on for 5 s")
		}
	}
}

// rawPeer plays the server's side of the first key exchange by hand on a socket pair: it sends
// its version and the given packets in the clear, and reads the client's version.
func rawPeer(t *testing.T, packets ...[]byte) net.Conn {
	t.Helper()
	a, b := socketPair(t)
	go func() {
		io.WriteString(b, "SSH-2.0-raw\r\n")
		var none packetCipher
		for _, p := range packets {
			out, _ := none.seal(nil, p, bytes.NewReader(make([]byte, 64)))
			b.Write(out)
		}
		io.Copy(io.Discard, b)
	}()
	return a
}

// TestWrongGuessMustBeKexPacket: a KEXINIT with first_kex_packet_follows whose guess is wrong
// has its next packet ignored (RFC 4253 §7), but only a key exchange method's message may be
// dropped that way; another message is a protocol error, not silently lost.
func TestWrongGuessMustBeKexPacket(t *testing.T) {
	host := ed25519Signer(t)
	guess := &kexInit{kex: []string{KexECDHP521, KexCurve25519}, hostKey: []string{gossh.KeyAlgoED25519},
		cipherCS: DefaultCiphers, cipherSC: DefaultCiphers, macCS: macAdvertised, macSC: macAdvertised,
		compCS: []string{"none"}, compSC: []string{"none"}, firstKexFollows: true}
	for _, tc := range []struct {
		name string
		next []byte
		ok   bool
	}{
		{"kex packet", marshalECDHInit(make([]byte, 133)), true},
		{"service request", MarshalServiceRequest("ssh-userauth"), false},
		{"newkeys", []byte{msgNewKeys}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := rawPeer(t, guess.marshal(), tc.next)
			a.SetDeadline(time.Now().Add(2 * time.Second))
			_, err := Client(a, &Config{KeyExchanges: []string{KexCurve25519}, HostKeyAlgorithms: []string{gossh.KeyAlgoED25519},
				VerifyHostKey: fixedHostKey(host.PublicKey())})
			// The raw peer never finishes the exchange: with the guess's packet skipped the client
			// waits for the ECDH reply until the deadline.
			var ne net.Error
			timedOut := errors.As(err, &ne) && ne.Timeout()
			if timedOut != tc.ok {
				t.Fatalf("client: %v", err)
			}
		})
	}
}

// TestExtInfoPlacement: a client takes SSH_MSG_EXT_INFO only where RFC 8308 §2.4 puts it: as
// the server's first packet after its first NEWKEYS, and once more right before
// USERAUTH_SUCCESS. Anywhere else it ends the connection.
func TestExtInfoPlacement(t *testing.T) {
	first := [][2]string{{"server-sig-algs", "ssh-ed25519"}}
	second := marshalExtInfo([][2]string{{"server-sig-algs", "ssh-ed25519,rsa-sha2-256"}})
	for _, tc := range []struct {
		name    string
		packets [][]byte
		ok      bool
		want    string
	}{
		{"after NEWKEYS", [][]byte{{msgServiceAccept, 0, 0, 0, 0}}, true, "ssh-ed25519"},
		{"before USERAUTH_SUCCESS", [][]byte{{53}, second, {msgUserAuthSuccess}}, true, "ssh-ed25519,rsa-sha2-256"},
		{"before another message", [][]byte{{53}, second, {51}}, false, ""},
		{"after USERAUTH_SUCCESS", [][]byte{{msgUserAuthSuccess}, second}, false, ""},
		{"twice before USERAUTH_SUCCESS", [][]byte{second, second, {msgUserAuthSuccess}}, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cli, srv := ownPair(t, Config{}, Config{ExtInfo: first})
			for _, p := range tc.packets {
				srv.WritePacket(p)
			}
			srv.WritePacket([]byte{99})
			var err error
			for err == nil {
				var p []byte
				if p, err = cli.ReadPacket(); err == nil && p[0] == 99 {
					break
				}
			}
			if (err == nil) != tc.ok {
				t.Fatalf("client: %v", err)
			}
			if tc.ok && cli.Extensions()["server-sig-algs"] != tc.want {
				t.Errorf("server-sig-algs %q, want %q", cli.Extensions()["server-sig-algs"], tc.want)
			}
		})
	}
}

// TestPacketBufferGrowsWithData: a peer that announces a 256 KiB packet and sends nothing more
// does not get 256 KiB allocated for it.
func TestPacketBufferGrowsWithData(t *testing.T) {
	var none packetCipher
	hdr := []byte{0, 3, 0xff, 0xfc} // 256 KiB - 4: aligned for the none cipher
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 16 {
		if _, err := none.open(bytes.NewReader(append(hdr, make([]byte, 100)...)), nil); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / 16; per > 64<<10 {
		t.Errorf("%d bytes allocated per announced packet", per)
	}
	// A whole packet still reads, across the growth steps.
	payload := append([]byte{90}, bytes.Repeat([]byte("0123456789abcdef"), 10000)...)
	b, _ := none.seal(nil, payload, bytes.NewReader(make([]byte, 64)))
	if p, err := none.open(bytes.NewReader(b), nil); err != nil || !bytes.Equal(p, payload) {
		t.Fatalf("round trip: %v", err)
	}
}
