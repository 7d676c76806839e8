package interop

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// removalLimit is how soon after the card's removal a session of its key must be closed.
const removalLimit = time.Second

// sshSession is an OpenSSH client running a long command on tokenlab's server.
type sshSession struct {
	cmd  *exec.Cmd
	done chan error
	out  *strings.Builder
}

// startOpenSSH runs ssh with args and waits until the remote command printed "up".
func startOpenSSH(t *testing.T, env []string, args ...string) *sshSession {
	t.Helper()
	cmd := exec.Command(peerSSH.path, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &sshSession{cmd: cmd, done: make(chan error, 1), out: &stderr}
	up := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		ok := false
		for sc.Scan() {
			if !ok && sc.Text() == "up" {
				ok = true
				up <- true
			}
		}
		if !ok {
			up <- false
		}
		io.Copy(io.Discard, stdout)
		s.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-s.done
	})
	select {
	case ok := <-up:
		if !ok {
			t.Fatalf("ssh %s: no session:\n%s", strings.Join(args, " "), stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("ssh %s: no session within 30s:\n%s", strings.Join(args, " "), stderr.String())
	}
	return s
}

// endsWithin checks that the session ends within limit of since.
func (s *sshSession) endsWithin(t *testing.T, since time.Time, limit time.Duration, why string) {
	t.Helper()
	select {
	case <-s.done:
		s.done <- nil // for the cleanup
		if d := time.Since(since); d > limit {
			t.Errorf("the card key's session ended %v after %s, limit %v", d, why, limit)
		}
	case <-time.After(limit - time.Since(since)):
		t.Errorf("the card key's session is still up %v after %s", limit, why)
	}
}

// staysUp checks that the session is still running.
func (s *sshSession) staysUp(t *testing.T, what string) {
	t.Helper()
	select {
	case err := <-s.done:
		s.done <- err
		t.Errorf("%s ended: %v\n%s", what, err, s.out.String())
	case <-time.After(300 * time.Millisecond):
	}
}

// removalRig is `tokenlab serve` plugged into pcscd, serving PKCS#11 and running its SSH server
// with the card's 9A key and a software key (the bystander's) authorized, and OpenSSH's options
// for both clients.
type removalRig struct {
	dir, card9a, bystanderKey string
	env                       []string
	args                      []string // OpenSSH's common options
	srv                       *proc
	user                      string
}

func newRemovalRig(t *testing.T) *removalRig {
	t.Helper()
	need(t, peerSSH, peerSSHKeygen, peerP11KitClient, peerPkcs11Tool)
	needPcscd(t)
	ca := newSSHCA(t)
	r := &removalRig{dir: provisionSSH(t, ca), user: currentUser(t)}
	tmp := t.TempDir()
	r.card9a = filepath.Join(tmp, "card9a.pub")
	appsWrite(t, r.card9a, exportKey(t, r.dir, "9a")+"\n", 0o600)
	r.bystanderKey = filepath.Join(tmp, "bystander")
	run(t, peerSSHKeygen.path, "-q", "-t", "ed25519", "-N", "", "-f", r.bystanderKey)
	bpub, err := os.ReadFile(r.bystanderKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	authorized := filepath.Join(tmp, "authorized_keys")
	appsWrite(t, authorized, exportKey(t, r.dir, "9a")+"\n"+string(bpub), 0o600)
	port := appsFreePort(t)
	hostKey, knownHosts := hostKeyPair(t, port)
	sock := filepath.Join(tmp, "p11.sock")
	// pcscd notices the card's removal at serve's exit on its next poll; the next test must
	// not meet a stale card. (Registered first, so it runs after serve is stopped.)
	t.Cleanup(func() { waitCard(t, false) })
	r.srv = startProc(t, nil, tokenlabBin, "serve", "--state", r.dir, "--vpcd", fmt.Sprintf("127.0.0.1:%d", vpcdPort),
		"--pkcs11", sock, "--ssh", fmt.Sprintf("127.0.0.1:%d", port),
		"--ssh-authorized-keys", authorized, "--ssh-user", r.user, "--ssh-host-key", hostKey)
	r.srv.waitPort(t, port)
	waitCard(t, true)
	askpass := filepath.Join(tmp, "askpass.sh")
	appsWrite(t, askpass, "#!/bin/sh\necho 123456\n", 0o700)
	r.env = []string{"P11_KIT_SERVER_ADDRESS=unix:path=" + sock, "SSH_ASKPASS=" + askpass, "SSH_ASKPASS_REQUIRE=force", "DISPLAY=:0"}
	r.args = opensshArgs(port, knownHosts)
	return r
}

// sessions starts OpenSSH twice: with the card's 9A key through p11-kit-client.so, and with
// the bystander's software key.
func (r *removalRig) sessions(t *testing.T) (card, bystander *sshSession) {
	t.Helper()
	card = startOpenSSH(t, r.env, append(r.args, "-I", peerP11KitClient.path, "-i", r.card9a, "-o", "IdentitiesOnly=yes",
		r.user+"@127.0.0.1", "echo up; sleep 60")...)
	bystander = startOpenSSH(t, r.env, append(r.args, "-i", r.bystanderKey, "-o", "IdentitiesOnly=yes",
		r.user+"@127.0.0.1", "echo up; sleep 60")...)
	return card, bystander
}

// TestCardRemoveClosesOpenSSHSession: OpenSSH logged into `tokenlab serve --ssh` with the
// card's key through p11-kit-client.so loses its session within one second of `tokenlab card
// remove`, while OpenSSH with a software key keeps its own; pcscd sees the card leave and come
// back with `tokenlab card insert`, and the card's key logs in again after it.
func TestCardRemoveClosesOpenSSHSession(t *testing.T) {
	r := newRemovalRig(t)
	card, bystander := r.sessions(t)
	removed := time.Now()
	if out := run(t, tokenlabBin, "card", "remove", "--state", r.dir); !strings.Contains(out, "removed from its reader") {
		t.Errorf("card remove: %s", out)
	}
	card.endsWithin(t, removed, removalLimit, "tokenlab card remove")
	bystander.staysUp(t, "the bystander's session (a software key)")
	waitCard(t, false) // pcscd sees the removal through vpcd
	// and a PKCS#11 application sees an empty slot.
	p11 := exec.Command(peerPkcs11Tool.path, "--module", peerP11KitClient.path, "-L")
	p11.Env = append(os.Environ(), r.env...)
	if out, err := p11.CombinedOutput(); err != nil || !strings.Contains(string(out), "(empty)") {
		t.Errorf("pkcs11-tool -L after the removal (%v):\n%s", err, out)
	}

	run(t, tokenlabBin, "card", "insert", "--state", r.dir)
	waitCard(t, true)
	again := startOpenSSH(t, r.env, append(r.args, "-I", peerP11KitClient.path, "-i", r.card9a, "-o", "IdentitiesOnly=yes",
		r.user+"@127.0.0.1", "echo up")...)
	<-again.done
	again.done <- nil
	if log := r.srv.log(); !strings.Contains(log, `msg="card removed: sessions closed" sessions=1`) {
		t.Errorf("serve did not log the closed session:\n%s", log)
	}
}

// TestPcscdGoneClosesOpenSSHSession: when pcscd goes away, the card leaves the vpcd reader,
// which for the daemon is a removal: the session of the card's key is closed within one
// second, the bystander's stays. pcscd is started again, and the card is back in its reader.
func TestPcscdGoneClosesOpenSSHSession(t *testing.T) {
	r := newRemovalRig(t)
	card, bystander := r.sessions(t)
	stopped := time.Now()
	stopPcscd(t)
	card.endsWithin(t, stopped, removalLimit, "pcscd stopped")
	bystander.staysUp(t, "the bystander's session (a software key)")
	startPcscdAgain(t)
	waitCard(t, true)
	if log := r.srv.log(); !strings.Contains(log, `msg="card removed: sessions closed" sessions=1`) ||
		!strings.Contains(log, "card removed from vpcd reader") {
		t.Errorf("serve's log lacks the removal:\n%s", log)
	}
}
