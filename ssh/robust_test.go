package ssh

import (
	"context"
	"crypto/elliptic"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	gossh "golang.org/x/crypto/ssh"

	"tokenlab/ssh/internal/transport"
)

// rawSession dials addr with tokenlab's own transport, authenticates as user with signer and
// opens a session channel with the given window and maximum packet size. It returns the
// transport and the server's channel id, or ok false when the server refused the channel.
func rawSession(t *testing.T, addr, user string, signer gossh.Signer, window, maxPacket uint32) (tc *transport.Conn, peer uint32, ok bool) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	tc, err = transport.Client(nc, &transport.Config{HostKeyAlgorithms: []string{gossh.KeyAlgoED25519, gossh.KeyAlgoECDSA256},
		VerifyHostKey: func(gossh.PublicKey) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := clientAuth(tc, user, signer); err != nil {
		t.Fatal(err)
	}
	var b cryptobyte.Builder
	b.AddUint8(90)
	addString(&b, []byte("session"))
	b.AddUint32(0)
	b.AddUint32(window)
	b.AddUint32(maxPacket)
	if err := tc.WritePacket(b.BytesOrPanic()); err != nil {
		t.Fatal(err)
	}
	for {
		p, err := tc.ReadPacket()
		if err != nil {
			t.Fatal(err)
		}
		switch p[0] {
		case 91:
			s := cryptobyte.String(p[1:])
			var ours uint32
			s.ReadUint32(&ours)
			s.ReadUint32(&peer)
			return tc, peer, true
		case 92:
			return tc, 0, false
		}
	}
}

// channelRequest sends a channel request on the server's channel peer.
func channelRequest(t *testing.T, tc *transport.Conn, peer uint32, typ string, want bool, args ...string) {
	t.Helper()
	var b cryptobyte.Builder
	b.AddUint8(98)
	b.AddUint32(peer)
	addString(&b, []byte(typ))
	if want {
		b.AddUint8(1)
	} else {
		b.AddUint8(0)
	}
	for _, a := range args {
		addString(&b, []byte(a))
	}
	if err := tc.WritePacket(b.BytesOrPanic()); err != nil {
		t.Fatal(err)
	}
}

func aliceServer(t *testing.T, cfg ServerConfig) (*Server, string, gossh.Signer) {
	t.Helper()
	alice := plainSigner(t, ecKey(t, elliptic.P256()))
	cfg.HostKeys = []gossh.Signer{ed25519Host(t)}
	cfg.Auth = &Keys{Authorized: map[string][]gossh.PublicKey{"alice": {alice.PublicKey()}}}
	srv, addr := startServer(t, cfg)
	return srv, addr, alice
}

// TestCloseAllStalledClient: a client that stops reading its socket while its session floods
// output left a server writer blocked in the socket's Write with the transport's write lock;
// Disconnect took the same lock, so card removal (CloseConns) hung for as long as the client
// liked, and so did every connection after it. Removal must close sessions within a second.
func TestCloseAllStalledClient(t *testing.T) {
	flood := func(ctx context.Context, s *Session) int {
		buf := make([]byte, 32<<10)
		for {
			if _, err := s.Stdout.Write(buf); err != nil {
				return 1
			}
		}
	}
	srv, addr, alice := aliceServer(t, ServerConfig{Handler: flood})
	for range 2 {
		tc, peer, _ := rawSession(t, addr, "alice", alice, 1<<32-1, 32<<10)
		channelRequest(t, tc, peer, "exec", false, "flood")
	}
	time.Sleep(time.Second) // let the socket buffers fill
	start := time.Now()
	if n := srv.CloseAll("card removed"); n != 2 {
		t.Fatalf("closed %d connections", n)
	}
	for srv.Conns() > 0 && time.Since(start) < 3*time.Second {
		time.Sleep(10 * time.Millisecond)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("the stalled clients' sessions took %v to close (%d left)", d, srv.Conns())
	}
}

// TestZeroMaxPacketSessionRefused: a session channel opened with maximum packet size 0 made
// the server send empty CHANNEL_DATA forever; it is refused.
func TestZeroMaxPacketSessionRefused(t *testing.T) {
	_, addr, alice := aliceServer(t, ServerConfig{})
	if _, _, ok := rawSession(t, addr, "alice", alice, 1<<20, 0); ok {
		t.Fatal("the server accepted a channel with maximum packet size 0")
	}
	if _, _, ok := rawSession(t, addr, "alice", alice, 1<<20, 9); !ok {
		t.Fatal("the server refused a channel with maximum packet size 9")
	}
}

// TestExecHandlerUserLast: the user name the command sees is the authenticated one whatever
// the session's environment holds (ExecHandler used to put the client's variables after it).
func TestExecHandlerUserLast(t *testing.T) {
	var out strings.Builder
	s := &Session{Identity: Identity{User: "alice", Key: ed25519Host(t).PublicKey(), Name: "x"},
		Command: `printf %s "$TOKENLAB_SSH_USER"`, Env: map[string]string{"TOKENLAB_SSH_USER": "root"},
		Stdin: strings.NewReader(""), Stdout: &out, Stderr: &out}
	ExecHandler("/bin/sh")(context.Background(), s)
	if got := out.String(); got != "alice" {
		t.Fatalf("the command sees TOKENLAB_SSH_USER=%q, authenticated user is alice", got)
	}
}

// TestAcceptEnv: env requests are taken only for the names AcceptEnv allows (LANG and LC_* by
// default, as OpenSSH's AcceptEnv in Debian), never for TOKENLAB_ names.
func TestAcceptEnv(t *testing.T) {
	for _, tc := range []struct {
		accept []string
		name   string
		ok     bool
	}{
		{nil, "LANG", true},
		{nil, "LC_ALL", true},
		{nil, "TOKENLAB_SSH_USER", false},
		{nil, "PATH", false},
		{nil, "LD_PRELOAD", false},
		{nil, "LANGUAGE", false},
		{[]string{"*"}, "TOKENLAB_SSH_USER", false},
		{[]string{"*"}, "EDITOR", true},
		{[]string{"GIT_*"}, "GIT_AUTHOR", true},
		{nil, "LC_\x01", false},
		{nil, "", false},
	} {
		accept := tc.accept
		if accept == nil {
			accept = DefaultAcceptEnv
		}
		if got := acceptEnv(accept, tc.name); got != tc.ok {
			t.Errorf("AcceptEnv %q, %q: %v", accept, tc.name, got)
		}
	}
	// Through the server: the refused request is answered with failure, and the command does
	// not see it.
	envHandler := func(ctx context.Context, s *Session) int {
		io.WriteString(s.Stdout, s.Env["LANG"]+"|"+s.Env["TOKENLAB_SSH_USER"]+"|"+s.Env["PATH"])
		return 0
	}
	_, addr, alice := aliceServer(t, ServerConfig{Handler: envHandler})
	tc, peer, _ := rawSession(t, addr, "alice", alice, 1<<20, 32<<10)
	channelRequest(t, tc, peer, "env", true, "LANG", "C.UTF-8")
	channelRequest(t, tc, peer, "env", true, "TOKENLAB_SSH_USER", "root")
	channelRequest(t, tc, peer, "env", true, "PATH", "/tmp/evil")
	channelRequest(t, tc, peer, "exec", true, "env")
	var replies []byte
	var out []byte
	for {
		p, err := tc.ReadPacket()
		if err != nil {
			t.Fatal(err)
		}
		if p[0] == 99 || p[0] == 100 {
			replies = append(replies, p[0])
		}
		if p[0] == 94 {
			out = append(out, p[9:]...)
		}
		if p[0] == 96 || p[0] == 97 {
			break
		}
	}
	if string(replies) != string([]byte{99, 100, 100, 99}) {
		t.Errorf("replies % d, want success, failure, failure, success", replies)
	}
	if string(out) != "C.UTF-8||" {
		t.Errorf("the handler sees %q", out)
	}
}

// TestClosedSessionEndsCommand: when CloseAll (card removal) closes a connection, its
// command's process group is hung up and the server forgets the connection, also when a
// child keeps the session's output open, and with a terminal when a child left the session's
// process group and keeps the terminal open.
func TestClosedSessionEndsCommand(t *testing.T) {
	for _, tc := range []struct {
		name string
		pty  *PTY
		cmd  string
		dies bool // the child is in the command's process group
	}{
		{"pipes", nil, "sleep 20 & echo $! > PIDFILE; wait", true},
		{"pty", &PTY{Term: "xterm", Cols: 80, Rows: 24}, "sleep 20 & echo $! > PIDFILE; wait", true},
		{"pty, child in its own session", &PTY{Term: "xterm", Cols: 80, Rows: 24}, "setsid sleep 20 & echo $! > PIDFILE; wait", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := exec.LookPath("setsid"); err != nil && !tc.dies {
				t.Fatalf("setsid is missing: install the Debian package util-linux (%v)", err)
			}
			srv, addr, alice := aliceServer(t, ServerConfig{Handler: ExecHandler("/bin/sh")})
			c, err := Dial(context.Background(), addr, &ClientConfig{User: "alice", Signer: alice, HostKeyCallback: gossh.InsecureIgnoreHostKey()})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			pidFile := t.TempDir() + "/pid"
			go c.Run(context.Background(), RunOptions{Command: strings.ReplaceAll(tc.cmd, "PIDFILE", pidFile), PTY: tc.pty})
			var pid int
			for i := 0; i < 50 && pid == 0; i++ {
				time.Sleep(100 * time.Millisecond)
				if b, err := os.ReadFile(pidFile); err == nil {
					pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
				}
			}
			if pid == 0 {
				t.Fatal("command did not start")
			}
			defer syscall.Kill(pid, syscall.SIGKILL)
			if n := srv.CloseAll("the smart card holding the key was removed"); n != 1 {
				t.Fatalf("closed %d connections", n)
			}
			deadline := time.Now().Add(time.Second)
			for srv.Conns() > 0 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if srv.Conns() != 0 {
				t.Fatalf("a second after the session was closed the server still counts %d connection(s)", srv.Conns())
			}
			for tc.dies && running(pid) && time.Now().Before(deadline.Add(time.Second)) {
				time.Sleep(20 * time.Millisecond)
			}
			if tc.dies && running(pid) {
				t.Fatal("the command's child still runs")
			}
		})
	}
}

// running reports whether process pid exists and is no zombie (an orphan's parent may be slow
// to reap it).
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z") && !strings.HasPrefix(rest, "X")
}

// TestMaxStartups: connections that have not authenticated are bounded per source address
// (and in all): one beyond the bound is closed before the handshake, and room comes back
// when one of them goes.
func TestMaxStartups(t *testing.T) {
	_, addr, _ := aliceServer(t, ServerConfig{MaxStartupsPerSource: 2})
	dialVersion := func() (net.Conn, string) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		b := make([]byte, 64)
		n, _ := c.Read(b)
		return c, string(b[:n])
	}
	a, va := dialVersion()
	_, vb := dialVersion()
	if !strings.HasPrefix(va, "SSH-2.0-") || !strings.HasPrefix(vb, "SSH-2.0-") {
		t.Fatalf("versions %q %q", va, vb)
	}
	if _, v := dialVersion(); v != "" {
		t.Fatalf("a third unauthenticated connection from one address got %q", v)
	}
	a.Close()
	time.Sleep(100 * time.Millisecond)
	if _, v := dialVersion(); !strings.HasPrefix(v, "SSH-2.0-") {
		t.Fatalf("after one went, a new connection got %q", v)
	}
}

// countingSigner counts host key signatures: on a card each costs a card operation.
type countingSigner struct {
	gossh.Signer
	n atomic.Int32
}

func (c *countingSigner) Sign(rand io.Reader, data []byte) (*gossh.Signature, error) {
	c.n.Add(1)
	return c.Signer.Sign(rand, data)
}

// TestNoHostKeySignatureBeforeKex: the host key (perhaps the card's) signs only once the
// client has sent its version, its KEXINIT and its ECDH public value; a client that connects
// and stops before costs no signature.
func TestNoHostKeySignatureBeforeKex(t *testing.T) {
	host := &countingSigner{Signer: ed25519Host(t)}
	alice := plainSigner(t, ecKey(t, elliptic.P256()))
	_, addr := startServer(t, ServerConfig{HostKeys: []gossh.Signer{host},
		Auth: &Keys{Authorized: map[string][]gossh.PublicKey{"alice": {alice.PublicKey()}}}})
	for _, send := range []string{"", "SSH-2.0-x\r\n", "SSH-2.0-x\r\n\x00\x00\x00\x0c\x0a\x14"} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, send)
		time.Sleep(100 * time.Millisecond)
		c.Close()
	}
	if n := host.n.Load(); n != 0 {
		t.Fatalf("%d host key signatures for clients that never sent KEX_ECDH_INIT", n)
	}
	c, err := Dial(context.Background(), addr, &ClientConfig{User: "alice", Signer: alice, HostKeyCallback: gossh.InsecureIgnoreHostKey()})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if n := host.n.Load(); n != 1 {
		t.Fatalf("%d host key signatures for one connection", n)
	}
}
