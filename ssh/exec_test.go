package ssh

import (
	"context"
	"crypto/elliptic"
	"net"
	"strings"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// TestExecHandler: commands run with sh -c and keep their exit status; a shell on a
// pseudo-terminal greets the user and runs what it is given on a real terminal.
func TestExecHandler(t *testing.T) {
	user := plainSigner(t, ecKey(t, elliptic.P256()))
	host := ed25519Host(t)
	_, addr := startServer(t, ServerConfig{HostKeys: []gossh.Signer{host}, Handler: ExecHandler("/bin/sh"),
		Auth: &Keys{Authorized: map[string][]gossh.PublicKey{"alice": {user.PublicKey()}}}})
	c, err := Dial(context.Background(), addr, &ClientConfig{User: "alice", Signer: user, HostKeyCallback: fixedHostKey(host.PublicKey())})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var stdout, stderr strings.Builder
	st, err := c.Run(context.Background(), RunOptions{Command: "echo $TOKENLAB_SSH_USER; echo oops >&2; exit 7", Stdout: &stdout, Stderr: &stderr})
	if err != nil || st != 7 || stdout.String() != "alice\n" || stderr.String() != "oops\n" {
		t.Errorf("exec: stdout %q, stderr %q, status %d, %v", stdout.String(), stderr.String(), st, err)
	}
	var out strings.Builder
	st, err = c.Run(context.Background(), RunOptions{PTY: &PTY{Term: "xterm", Cols: 100, Rows: 30},
		Stdin: strings.NewReader("stty size; tty; exit 5\n"), Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	o := out.String()
	if st != 5 || !strings.Contains(o, "tokenlab: welcome alice") || !strings.Contains(o, "30 100") || !strings.Contains(o, "/dev/pts/") {
		t.Errorf("pty shell: status %d, output %q", st, o)
	}
}

// A session that ends under its command (here the server stops) hangs up the command's whole
// process group: a child of the shell that would run for a minute does not keep the server's
// shutdown waiting.
func TestExecHandlerHangsUp(t *testing.T) {
	user := plainSigner(t, ecKey(t, elliptic.P256()))
	host := ed25519Host(t)
	srv, err := NewServer(ServerConfig{HostKeys: []gossh.Signer{host}, Handler: ExecHandler("/bin/sh"),
		Auth: &Keys{Authorized: map[string][]gossh.PublicKey{"alice": {user.PublicKey()}}}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan struct{})
	go func() { srv.Serve(ctx, ln); close(served) }()
	c, err := Dial(context.Background(), ln.Addr().String(), &ClientConfig{User: "alice", Signer: user, HostKeyCallback: fixedHostKey(host.PublicKey())})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	up := make(chan struct{})
	go c.Run(context.Background(), RunOptions{Command: "echo up; sleep 60; echo never", Stdout: writerFunc(func(p []byte) (int, error) {
		select {
		case <-up:
		default:
			close(up)
		}
		return len(p), nil
	})})
	<-up
	cancel()
	select {
	case <-served:
	case <-time.After(3 * time.Second):
		t.Fatal("the server still waits for a session's command 3s after it was told to stop")
	}
}
