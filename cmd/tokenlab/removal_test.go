package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"tokenlab/apdu/cardsock"
	"tokenlab/middleware"
	"tokenlab/middleware/pivclient"
	"tokenlab/middleware/prompt"
	"tokenlab/ssh"
)

// removalLimit is how soon after `tokenlab card remove` a session of the card's key must end.
const removalLimit = time.Second

// sshServe is a `tokenlab serve --ssh` run in process on a card with a P-256 key in 9a: its
// authorized keys are that key and a software key (the bystander's).
type sshServe struct {
	card, sock, addr, hostPub string
	bystander                 gossh.Signer
	stop                      func() string // stops serve and returns its stderr
}

func startSSHServe(t *testing.T, extra ...string) *sshServe {
	t.Helper()
	dir := t.TempDir()
	s := &sshServe{card: makeIKEFiles(t).card, sock: filepath.Join(dir, "card.sock"), hostPub: filepath.Join(dir, "host.pub")}
	var out bytes.Buffer
	if code := run([]string{"ssh", "export", "--state", s.card, "--slot", "9a"}, &out, io.Discard); code != 0 {
		t.Fatalf("ssh export: exit %d", code)
	}
	_, bk, _ := ed25519.GenerateKey(rand.Reader)
	s.bystander, _ = gossh.NewSignerFromSigner(bk)
	out.Write(gossh.MarshalAuthorizedKey(s.bystander.PublicKey()))
	authorized := filepath.Join(dir, "authorized_keys")
	_, hk, _ := ed25519.GenerateKey(rand.Reader)
	blk, err := gossh.MarshalPrivateKey(hk, "")
	if err != nil {
		t.Fatal(err)
	}
	hs, _ := gossh.NewSignerFromSigner(hk)
	hostKey := filepath.Join(dir, "host")
	for path, b := range map[string][]byte{authorized: out.Bytes(), hostKey: pem.EncodeToMemory(blk),
		s.hostPub: gossh.MarshalAuthorizedKey(hs.PublicKey())} {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	var stderr syncBuffer
	done := make(chan error, 1)
	go func() {
		args := append([]string{"--state", s.card, "--vpcd", "off", "--card-socket", s.sock, "--ssh", "127.0.0.1:0",
			"--ssh-authorized-keys", authorized, "--ssh-host-key", hostKey}, extra...)
		err := serve(ctx, args, pw, &stderr)
		pw.Close()
		done <- err
	}()
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "SSH server on "); ok {
			s.addr, _, _ = strings.Cut(rest, ",")
			break
		}
	}
	if s.addr == "" {
		cancel()
		t.Fatalf("serve printed no SSH address: %v\n%s", <-done, stderr.String())
	}
	go io.Copy(io.Discard, pr)
	var once sync.Once
	s.stop = func() string {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("serve: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("serve did not stop within 10s")
			}
		})
		return stderr.String()
	}
	t.Cleanup(func() { s.stop() })
	return s
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// started returns a writer that closes ch at its first write.
func started(ch chan struct{}) io.Writer {
	var once sync.Once
	return writerFunc(func(p []byte) (int, error) {
		once.Do(func() { close(ch) })
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// session is a long command running on an SSH connection.
type session struct {
	c     *ssh.Client
	ended chan error
}

func openSession(t *testing.T, addr string, cfg *ssh.ClientConfig) *session {
	t.Helper()
	c, err := ssh.Dial(context.Background(), addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s := &session{c: c, ended: make(chan error, 1)}
	up := make(chan struct{})
	go func() {
		_, err := c.Run(context.Background(), ssh.RunOptions{Command: "echo up; sleep 30", Stdout: started(up)})
		s.ended <- err
	}()
	select {
	case <-up:
	case err := <-s.ended:
		t.Fatalf("session ended at once: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("session did not start within 10s")
	}
	return s
}

// cardSigner signs with the card's 9a key through the daemon's card socket.
func (s *sshServe) cardSigner(t *testing.T) gossh.Signer {
	t.Helper()
	ctx := context.Background()
	policy, _ := middleware.Profile("strict-2fa")
	t.Setenv("TOKENLAB_PIN", "123456")
	tok, err := middleware.Open(ctx, cardsock.Dialer(s.sock), middleware.Options{Application: "ssh", Policy: policy, Prompter: prompt.Env{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tok.Close(context.Background()) })
	signer, err := ssh.TokenSigner(ctx, tok, pivclient.SlotAuthentication, false)
	if err != nil {
		t.Fatal(err)
	}
	return signer
}

func (s *sshServe) hostKeyCallback(t *testing.T) gossh.HostKeyCallback {
	t.Helper()
	b, err := os.ReadFile(s.hostPub)
	if err != nil {
		t.Fatal(err)
	}
	k, _, _, _, err := gossh.ParseAuthorizedKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return gossh.FixedHostKey(k)
}

func cardRemove(t *testing.T, card string) time.Time {
	t.Helper()
	var out, errOut bytes.Buffer
	removed := time.Now()
	if code := run([]string{"card", "remove", "--state", card}, &out, &errOut); code != 0 {
		t.Fatalf("card remove: exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "removed from its reader") {
		t.Errorf("card remove said %q", out.String())
	}
	return removed
}

// TestCardRemoveClosesSSHSessions: `tokenlab card remove` against a running `tokenlab serve
// --ssh` closes, within one second, the session that authenticated with the card's key, and
// leaves the bystander's session (a software key) up.
func TestCardRemoveClosesSSHSessions(t *testing.T) {
	s := startSSHServe(t)
	me := currentUserName(t)
	victim := openSession(t, s.addr, &ssh.ClientConfig{User: me, Signer: s.cardSigner(t), HostKeyCallback: s.hostKeyCallback(t)})
	bystander := openSession(t, s.addr, &ssh.ClientConfig{User: me, Signer: s.bystander, HostKeyCallback: s.hostKeyCallback(t)})

	removed := cardRemove(t, s.card)
	select {
	case <-victim.ended:
		if d := time.Since(removed); d > removalLimit {
			t.Errorf("the card key's session ended %v after the removal, limit %v", d, removalLimit)
		}
	case <-time.After(removalLimit):
		t.Fatalf("the card key's session is still up %v after tokenlab card remove", removalLimit)
	}
	select {
	case err := <-bystander.ended:
		t.Fatalf("the bystander's session ended: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	var out bytes.Buffer
	if st, err := bystander.c.Run(context.Background(), ssh.RunOptions{Command: "echo still here", Stdout: &out}); err != nil || st != 0 || out.String() != "still here\n" {
		t.Errorf("bystander after the removal: %q %d %v", out.String(), st, err)
	}
	if log := s.stop(); !strings.Contains(log, `msg="card removed: sessions closed" sessions=1`) {
		t.Errorf("serve did not log the closed session:\n%s", log)
	}
}

// TestSSHConnectFollowsDaemonRemoval: with the server's option off, the server keeps the
// session, and `tokenlab ssh connect --card-socket` closes its own within one second of
// `tokenlab card remove` on the daemon, exiting non-zero with a message that says why.
func TestSSHConnectFollowsDaemonRemoval(t *testing.T) {
	s := startSSHServe(t, "--ssh-close-on-removal=false")
	me := currentUserName(t)
	t.Setenv("TOKENLAB_PIN", "123456")
	// A session the server would have closed with the option on.
	kept := openSession(t, s.addr, &ssh.ClientConfig{User: me, Signer: s.cardSigner(t), HostKeyCallback: s.hostKeyCallback(t)})

	up := make(chan struct{})
	var stderr syncBuffer
	exited := make(chan int, 1)
	go func() {
		exited <- run([]string{"ssh", "connect", "--card-socket", s.sock, "--slot", "9a", "--prompt", "env", "--user", me,
			"--host-key", s.hostPub, s.addr, "echo up; sleep 30"}, started(up), &stderr)
	}()
	select {
	case <-up:
	case code := <-exited:
		t.Fatalf("ssh connect exited %d at once: %s", code, stderr.String())
	case <-time.After(10 * time.Second):
		t.Fatal("ssh connect's session did not start within 10s")
	}
	removed := cardRemove(t, s.card)
	select {
	case code := <-exited:
		if d := time.Since(removed); d > removalLimit {
			t.Errorf("ssh connect exited %v after the removal, limit %v", d, removalLimit)
		}
		if code == 0 || !strings.Contains(stderr.String(), "smart card was removed") {
			t.Errorf("ssh connect: exit %d, stderr %q", code, stderr.String())
		}
	case <-time.After(removalLimit):
		t.Fatalf("ssh connect still runs %v after tokenlab card remove", removalLimit)
	}
	select {
	case err := <-kept.ended:
		t.Errorf("the server closed a session with --ssh-close-on-removal=false: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
}

func currentUserName(t *testing.T) string {
	t.Helper()
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	return u.Username
}

// The control socket's answers parse, and anything else is an error naming the answer.
func TestParseControlAnswer(t *testing.T) {
	got, err := parseControlAnswer("ok absent 3 5150 2 3\n")
	if err != nil || got != (cardControl{present: false, removals: 3, serial: 5150, pin: 2, puk: 3}) {
		t.Errorf("parseControlAnswer: %+v, %v", got, err)
	}
	if _, err := parseControlAnswer("error unknown request \"eject\"\n"); err == nil || err.Error() != `unknown request "eject"` {
		t.Errorf("error answer: %v", err)
	}
	for _, bad := range []string{"", "ok", "ok present 1 2", "ok maybe 1 2 3 3", "ok present 1 2 3 256", "ok present -1 2 3 3", "fine present 1 2 3 3"} {
		if _, err := parseControlAnswer(bad); err == nil || !strings.Contains(err.Error(), "malformed answer") {
			t.Errorf("parseControlAnswer(%q): %v, want a malformed answer", bad, err)
		}
	}
}
