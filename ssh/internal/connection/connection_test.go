package connection

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	gossh "golang.org/x/crypto/ssh"

	"tokenlab/ssh/internal/transport"
)

// fakePC is a transport that hands the Mux the packets of in and records what it writes.
type fakePC struct {
	in chan []byte

	mu  sync.Mutex
	out [][]byte
}

func newFakePC() *fakePC { return &fakePC{in: make(chan []byte, 16)} }

func (f *fakePC) ReadPacket() ([]byte, error) {
	p, ok := <-f.in
	if !ok {
		return nil, errors.New("closed")
	}
	return p, nil
}

func (f *fakePC) WritePacket(p []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.out) > 1000 {
		return errors.New("write limit reached")
	}
	f.out = append(f.out, append([]byte(nil), p...))
	return nil
}

func (f *fakePC) QueuePacket(p []byte) error { return f.WritePacket(p) }
func (f *fakePC) Close() error               { return nil }

func (f *fakePC) written() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.out...)
}

func channelOpen(sender, window, maxPacket uint32) []byte {
	var b cryptobyte.Builder
	b.AddUint8(msgChannelOpen)
	addString(&b, []byte("session"))
	b.AddUint32(sender)
	b.AddUint32(window)
	b.AddUint32(maxPacket)
	return b.BytesOrPanic()
}

// TestPeerMaxPacketBounds: a channel open whose maximum packet size leaves no room for data (0
// made Channel.Write send empty CHANNEL_DATA forever) or is beyond 2^31 is refused with
// OPEN_FAILURE and never reaches the application; sizes in range are accepted.
func TestPeerMaxPacketBounds(t *testing.T) {
	for _, tc := range []struct {
		maxPacket uint32
		ok        bool
	}{{0, false}, {1, false}, {8, false}, {9, true}, {32 << 10, true}, {1 << 31, true}, {1<<31 + 1, false}, {1<<32 - 1, false}} {
		pc := newFakePC()
		m := New(pc)
		done := make(chan error, 1)
		go func() { done <- m.Run() }()
		pc.in <- channelOpen(7, 1<<20, tc.maxPacket)
		close(pc.in)
		<-done
		var got *NewChannel
		for nc := range m.Incoming() {
			got = nc
		}
		out := pc.written()
		if tc.ok {
			if got == nil || len(out) != 0 {
				t.Errorf("max packet %d: not offered to the application (%d packets written)", tc.maxPacket, len(out))
			}
			continue
		}
		if got != nil || len(out) != 1 || out[0][0] != msgOpenFailure {
			t.Errorf("max packet %d: offered=%v, written %d packets (first % x), want one OPEN_FAILURE", tc.maxPacket, got != nil, len(out), first(out))
		}
	}
}

// TestWriteWithSmallMaxPacket: Write splits data into packets of the peer's maximum size and
// ends; with the smallest size allowed it still makes progress.
func TestWriteWithSmallMaxPacket(t *testing.T) {
	pc := newFakePC()
	m := New(pc)
	go m.Run()
	defer close(pc.in)
	pc.in <- channelOpen(7, 1<<20, minPeerMaxPacket)
	ch, err := (<-m.Incoming()).Accept()
	if err != nil {
		t.Fatal(err)
	}
	if n, err := ch.Write([]byte("hello, world")); n != 12 || err != nil {
		t.Fatalf("Write: %d %v", n, err)
	}
	if out := pc.written(); len(out) != 3 { // the confirmation and two data packets
		t.Fatalf("%d packets written, want 3", len(out))
	}
}

// TestOpenConfirmationMaxPacket: a peer that confirms our channel with maximum packet size 0
// breaks the connection instead of leaving a channel that cannot carry data.
func TestOpenConfirmationMaxPacket(t *testing.T) {
	pc := newFakePC()
	m := New(pc)
	done := make(chan error, 1)
	go func() { done <- m.Run() }()
	opened := make(chan error, 1)
	go func() {
		_, err := m.OpenChannel("session", nil)
		opened <- err
	}()
	for len(pc.written()) == 0 {
		time.Sleep(time.Millisecond)
	}
	var b cryptobyte.Builder
	b.AddUint8(msgOpenConfirm)
	b.AddUint32(1) // our channel
	b.AddUint32(5) // theirs
	b.AddUint32(1 << 20)
	b.AddUint32(0)
	pc.in <- b.BytesOrPanic()
	if err := <-done; err == nil {
		t.Fatal("the connection survived a confirmation with maximum packet size 0")
	}
	if err := <-opened; err == nil {
		t.Fatal("OpenChannel succeeded")
	}
}

func first(out [][]byte) []byte {
	if len(out) == 0 {
		return nil
	}
	return out[0]
}

// TestRepliesDuringOwnRekey: the Mux's reading goroutine answers some messages itself (a
// global request's failure, OPEN_FAILURE, CLOSE). When this side has started a key exchange
// (its re-key threshold crossed) and the peer's next packet needs such an answer, the answer
// must not wait for the key exchange, which runs on that same goroutine: it did, and the
// connection hung for good.
func TestRepliesDuringOwnRekey(t *testing.T) {
	var keepalive cryptobyte.Builder
	keepalive.AddUint8(msgGlobalRequest)
	addString(&keepalive, []byte("keepalive@openssh.com"))
	keepalive.AddUint8(1)
	for _, tc := range []struct {
		name  string
		msg   []byte
		reply byte
	}{
		{"keepalive", keepalive.BytesOrPanic(), msgRequestFailure},
		{"open with max packet 0", channelOpen(3, 1<<20, 0), msgOpenFailure},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, cli := transportPair(t, 4<<10)
			m := New(st)
			go m.Run()
			// The server sends more than its re-key threshold: it sends KEXINIT and from then
			// on queues what it writes until the key exchange ends.
			if err := st.WritePacket(append([]byte{msgIgnoreForTest}, make([]byte, 5<<10)...)); err != nil {
				t.Fatal(err)
			}
			// Before it has read the server's KEXINIT, the client sends a message the server's
			// reader answers (OpenSSH's ServerAliveInterval sends exactly this keepalive).
			if err := cli.WritePacket(tc.msg); err != nil {
				t.Fatal(err)
			}
			got := make(chan byte, 16)
			go func() {
				defer close(got)
				for {
					p, err := cli.ReadPacket() // runs the client's half of the key exchange
					if err != nil {
						return
					}
					got <- p[0]
				}
			}()
			deadline := time.After(5 * time.Second)
			for {
				select {
				case typ, ok := <-got:
					if !ok {
						t.Fatal("connection ended")
					}
					if typ == tc.reply {
						if n := cli.KeyExchanges(); n < 2 {
							t.Errorf("answered, but %d key exchanges", n)
						}
						return
					}
				case <-deadline:
					t.Fatalf("no answer within 5 s: the server's reader waits for its own key exchange (key exchanges: %d)", st.KeyExchanges())
				}
			}
		})
	}
}

// msgIgnoreForTest is a connection-layer number the client's reader skips in these tests: the
// bulk packet that pushes the server over its re-key threshold.
const msgIgnoreForTest = msgChannelData

// transportPair connects tokenlab's transport client and server over TCP; the server re-keys
// after rekey bytes.
func transportPair(t *testing.T, rekey uint64) (srv, cli *transport.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, hk, _ := ed25519.GenerateKey(rand.Reader)
	host, _ := gossh.NewSignerFromSigner(hk)
	srvCh := make(chan *transport.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvCh <- nil
			return
		}
		st, err := transport.Server(c, &transport.Config{HostKeys: []gossh.Signer{host}, RekeyThreshold: rekey})
		if err != nil {
			t.Error(err)
			c.Close()
		}
		srvCh <- st
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cli, err = transport.Client(nc, &transport.Config{HostKeyAlgorithms: []string{gossh.KeyAlgoED25519},
		VerifyHostKey: func(gossh.PublicKey) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	srv = <-srvCh
	if srv == nil {
		t.FailNow()
	}
	t.Cleanup(func() { srv.Close(); cli.Close() })
	return srv, cli
}
