//go:build record

package connection

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"tokenlab/internal/fuzzseed"
	"tokenlab/ssh/internal/transport"
)

// The seeds in testdata/fuzz/FuzzMux are what a Mux read from x/crypto/ssh's client (which
// opens a session, asks for a terminal, sets a variable, runs a command with input and sends
// a keepalive) and from x/crypto/ssh's server (which confirms the Mux's session, answers its
// request, sends data and closes). To write them again:
//
//	go test -tags record -run TestRecordSeeds ./ssh/internal/connection/

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
	if err := fuzzseed.Write("FuzzMux", name, in); err != nil {
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
