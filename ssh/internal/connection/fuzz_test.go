package connection

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"tokenlab/ssh/internal/transport"
)

// scriptPC feeds the Mux the packets of a script and counts what it writes. Its first read
// waits for the Mux's first write, the harness's own CHANNEL_OPEN, so that the script's
// confirmations find their channel.
type scriptPC struct {
	packets [][]byte
	opened  chan struct{}
	once    sync.Once

	mu     sync.Mutex
	writes int
}

// maxScriptWrites is far more than any script can ask for: more means a loop.
const maxScriptWrites = 10000

func (s *scriptPC) ReadPacket() ([]byte, error) {
	<-s.opened
	if len(s.packets) == 0 {
		return nil, io.EOF
	}
	p := s.packets[0]
	s.packets = s.packets[1:]
	return p, nil
}

func (s *scriptPC) WritePacket(p []byte) error {
	s.once.Do(func() { close(s.opened) })
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.writes++; s.writes > maxScriptWrites {
		return errors.New("too many writes")
	}
	return nil
}

func (s *scriptPC) QueuePacket(p []byte) error { return s.WritePacket(p) }
func (s *scriptPC) Close() error               { return nil }

// splitScript cuts a fuzz input into packets, each after a 2-byte length.
func splitScript(in []byte) [][]byte {
	var out [][]byte
	for len(in) >= 2 {
		n := int(binary.BigEndian.Uint16(in))
		in = in[2:]
		if n > len(in) {
			n = len(in)
		}
		out = append(out, in[:n])
		in = in[n:]
	}
	return out
}

func joinScript(packets [][]byte) []byte {
	var out []byte
	for _, p := range packets {
		out = binary.BigEndian.AppendUint16(out, uint16(len(p)))
		out = append(out, p...)
	}
	return out
}

// FuzzMux: a Mux that has opened a channel of its own and accepts the peer's is fed any
// sequence of connection-layer messages (channel open, confirmation and failure, data, window
// adjust, EOF, close, channel and global requests and their replies). Oracles: no panic, the
// Mux and every goroutine using its channels end when the messages run out, and it writes a
// bounded number of packets.
func FuzzMux(f *testing.F) {
	f.Add(joinScript([][]byte{channelOpen(0, 1<<20, 32<<10)}))
	f.Fuzz(func(t *testing.T, in []byte) {
		pc := &scriptPC{packets: splitScript(in), opened: make(chan struct{})}
		m := New(pc)
		var wg sync.WaitGroup
		use := func(ch *Channel) {
			defer wg.Done()
			go func() {
				for r := range ch.Requests() {
					r.Reply(r.Type == "exec")
				}
			}()
			ch.Write([]byte("hello"))
			ch.Stderr().Write([]byte("oops"))
			ch.CloseWrite()
			io.Copy(io.Discard, ch)
			ch.Close()
		}
		wg.Add(2)
		go func() {
			defer wg.Done()
			ch, err := m.OpenChannel("session", nil)
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				ch.SendRequest("exec", true, []byte("\x00\x00\x00\x04true"))
				use(ch)
			}()
		}()
		go func() {
			defer wg.Done()
			for nc := range m.Incoming() {
				ch, err := nc.Accept()
				if err != nil {
					continue
				}
				wg.Add(1)
				go use(ch)
			}
		}()
		m.Run()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("goroutines using the channels still run 5 s after the connection ended")
		}
		if pc.writes > maxScriptWrites {
			t.Fatalf("%d packets written for %d read", pc.writes, len(splitScript(in)))
		}
	})
}

// The seeds in testdata/fuzz/FuzzMux are what a Mux read from x/crypto/ssh's client (which
// opens a session, asks for a terminal, sets a variable, runs a command with input and sends
// a keepalive) and from x/crypto/ssh's server (which confirms the Mux's session, answers its
// request, sends data and closes). -record writes them again.
var record = flag.Bool("record", false, "record the fuzz seeds of testdata/fuzz from x/crypto/ssh")

// recordingPC keeps a copy of every packet read.
type recordingPC struct {
	*transport.Conn
	mu   sync.Mutex
	read [][]byte
}

func (r *recordingPC) ReadPacket() ([]byte, error) {
	p, err := r.Conn.ReadPacket()
	if err == nil {
		r.mu.Lock()
		r.read = append(r.read, bytes.Clone(p))
		r.mu.Unlock()
	}
	return p, err
}

func (r *recordingPC) script() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	var conn [][]byte
	for _, p := range r.read {
		if p[0] >= msgGlobalRequest { // what follows user authentication
			conn = append(conn, p)
		}
	}
	return joinScript(conn)
}

func writeSeed(t *testing.T, name string, in []byte) {
	dir := filepath.Join("testdata", "fuzz", "FuzzMux")
	os.MkdirAll(dir, 0o755)
	h := sha256.Sum256(in)
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%s-%x", name, h[:4])), fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", in), 0o644); err != nil {
		t.Fatal(err)
	}
}

// noneAuth answers the user authentication of x/crypto/ssh's client with success.
func noneAuth(t *testing.T, st *transport.Conn) {
	for {
		p, err := st.ReadPacket()
		if err != nil {
			t.Fatal(err)
		}
		switch p[0] {
		case 5:
			st.WritePacket(transport.MarshalServiceAccept("ssh-userauth"))
		case 50:
			st.WritePacket([]byte{52})
			return
		}
	}
}

func TestRecordSeeds(t *testing.T) {
	if !*record {
		t.Skip("-record not given")
	}
	// x/crypto/ssh's client against a Mux.
	server, nc := rawServer(t)
	cfg := &gossh.ClientConfig{User: "u", HostKeyCallback: gossh.InsecureIgnoreHostKey()}
	go func() {
		c, chans, reqs, err := gossh.NewClientConn(nc, "x", cfg)
		if err != nil {
			t.Error(err)
			return
		}
		cl := gossh.NewClient(c, chans, reqs)
		cl.SendRequest("keepalive@openssh.com", true, nil)
		s, err := cl.NewSession()
		if err != nil {
			t.Error(err)
			return
		}
		s.RequestPty("xterm", 24, 80, gossh.TerminalModes{gossh.ECHO: 0})
		s.Setenv("LANG", "C.UTF-8")
		s.Stdin = bytes.NewReader(bytes.Repeat([]byte("input "), 2000))
		s.Run("cat")
		cl.Close()
	}()
	st := server()
	noneAuth(t, st)
	rec := &recordingPC{Conn: st}
	m := New(rec)
	go func() {
		for nc := range m.Incoming() {
			ch, err := nc.Accept()
			if err != nil {
				continue
			}
			go func() {
				for r := range ch.Requests() {
					r.Reply(true)
					if r.Type == "exec" {
						go func() {
							io.Copy(ch, ch)
							ch.SendRequest("exit-status", false, []byte{0, 0, 0, 0})
							ch.CloseWrite()
							ch.Close()
						}()
					}
				}
			}()
		}
	}()
	m.Run()
	writeSeed(t, "xcrypto-client", rec.script())

	// x/crypto/ssh's server, to a Mux that opens a session.
	client, sc := rawClient(t)
	go func() {
		scfg := &gossh.ServerConfig{NoClientAuth: true}
		scfg.AddHostKey(hostKey(t))
		_, chans, reqs, err := gossh.NewServerConn(sc, scfg)
		if err != nil {
			t.Error(err)
			return
		}
		go gossh.DiscardRequests(reqs)
		for nc := range chans {
			ch, creqs, _ := nc.Accept()
			go func() {
				for r := range creqs {
					r.Reply(true, nil)
					ch.Write([]byte("hello"))
					ch.Stderr().Write([]byte("oops"))
					ch.SendRequest("exit-status", false, []byte{0, 0, 0, 1})
					ch.CloseWrite()
					ch.Close()
				}
			}()
		}
	}()
	cli := client()
	cli.WritePacket(transport.MarshalServiceRequest("ssh-userauth"))
	cli.ReadPacket()
	cli.WritePacket([]byte("\x32\x00\x00\x00\x01u\x00\x00\x00\x0essh-connection\x00\x00\x00\x04none"))
	cli.ReadPacket()
	rec = &recordingPC{Conn: cli}
	m = New(rec)
	go m.Run()
	ch, err := m.OpenChannel("session", nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for r := range ch.Requests() {
			r.Reply(false)
		}
	}()
	ch.SendRequest("exec", true, []byte("\x00\x00\x00\x04true"))
	io.Copy(io.Discard, ch)
	ch.Close()
	time.Sleep(100 * time.Millisecond)
	cli.Close()
	<-m.Done()
	writeSeed(t, "xcrypto-server", rec.script())
}

func hostKey(t *testing.T) gossh.Signer {
	_, hk, _ := ed25519.GenerateKey(rand.Reader)
	s, err := gossh.NewSignerFromSigner(hk)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// rawServer runs tokenlab's transport server on one end of a TCP connection and returns a
// function that waits for its handshake, and the other end for a client to run on.
func rawServer(t *testing.T) (func() *transport.Conn, net.Conn) {
	a, b := tcpPair(t)
	st := make(chan *transport.Conn, 1)
	go func() {
		s, err := transport.Server(b, &transport.Config{HostKeys: []gossh.Signer{hostKey(t)}})
		if err != nil {
			t.Error(err)
		}
		st <- s
	}()
	return func() *transport.Conn { return <-st }, a
}

// rawClient runs tokenlab's transport client on one end of a TCP connection and returns a
// function that waits for its handshake, and the other end for a server to run on.
func rawClient(t *testing.T) (func() *transport.Conn, net.Conn) {
	a, b := tcpPair(t)
	ct := make(chan *transport.Conn, 1)
	go func() {
		c, err := transport.Client(a, &transport.Config{HostKeyAlgorithms: []string{gossh.KeyAlgoED25519},
			VerifyHostKey: func(gossh.PublicKey) error { return nil }})
		if err != nil {
			t.Error(err)
		}
		ct <- c
	}()
	return func() *transport.Conn { return <-ct }, b
}

func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}
