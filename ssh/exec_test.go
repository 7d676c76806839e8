package ssh

import (
	"context"
	"crypto/elliptic"
	"strings"
	"testing"

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
