package interop

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"tokenlab/emulator/yubikey"
	"tokenlab/middleware/pivclient"
)

// Peers of the PKCS#11 tests.
var (
	peerP11KitClient = peer{"/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so", "p11-kit-modules"}
	peerP11Kit       = peer{"p11-kit", "p11-kit"}
	peerSoftHSM      = peer{"/usr/lib/softhsm/libsofthsm2.so", "softhsm2"}
	peerSoftHSMUtil  = peer{"softhsm2-util", "softhsm2"}
	peerP11Tool      = peer{"p11tool", "gnutls-bin"}
	peerCertutil     = peer{"certutil", "libnss3-tools"}
	peerModutil      = peer{"modutil", "libnss3-tools"}
	peerSSH          = peer{"ssh", "openssh-client"}
	peerSSHKeygen    = peer{"ssh-keygen", "openssh-client"}
	peerSSHD         = peer{"/usr/sbin/sshd", "openssh-server"}
)

// p11Server is a `tokenlab serve` serving PKCS#11 on a socket of its own (no pcscd needed).
type p11Server struct {
	*server
	Socket string
	Audit  string // JSON-lines audit log
}

// Env returns the environment a PKCS#11 application needs to reach the server through
// p11-kit-client.so.
func (s *p11Server) Env() []string {
	return append(os.Environ(), "P11_KIT_SERVER_ADDRESS=unix:path="+s.Socket)
}

// serveP11 starts `tokenlab serve --vpcd off --pkcs11 SOCKET` on the card in dir, with extra
// flags (--profile, --prompt), and waits for the socket. It is stopped with SIGTERM at the end
// of the test and must exit cleanly.
func serveP11(t *testing.T, dir string, args ...string) *p11Server {
	t.Helper()
	tmp := t.TempDir()
	sock := filepath.Join(tmp, "p11.sock")
	audit := filepath.Join(tmp, "audit.jsonl")
	var log bytes.Buffer
	cmd := exec.Command(tokenlabBin, append([]string{"serve", "--state", dir, "--vpcd", "off", "--pkcs11", sock, "--audit-log", audit}, args...)...)
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &p11Server{server: &server{cmd: cmd, done: make(chan error, 1), log: &log}, Socket: sock, Audit: audit}
	go func() { s.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("tokenlab serve: %v\n%s", err, s.log)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		if fi, err := os.Stat(sock); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return s
		}
		select {
		case err := <-s.done:
			t.Fatalf("tokenlab serve exited: %v\n%s", err, &log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no PKCS#11 socket after 10s:\n%s", &log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// p11 runs a PKCS#11 application against the server with p11-kit-client.so as its module
// argument placed where the caller says ("{module}" in args).
func (s *p11Server) run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := s.runErr(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s\n--- tokenlab serve ---\n%s", name, strings.Join(args, " "), err, out, s.log)
	}
	return out
}

func (s *p11Server) runErr(name string, args ...string) (string, error) {
	for i, a := range args {
		args[i] = strings.ReplaceAll(a, "{module}", peerP11KitClient.path)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = s.Env()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// provisionP11 makes a card in a fresh state directory with keys for the PKCS#11 tests: a
// P-256 key with a certificate in 9A (PIN once), a P-384 key with a certificate in 9C (PIN
// always) and a P-256 key in 9D. It returns the directory and the certificates' keys.
func provisionP11(t *testing.T, initArgs ...string) string {
	t.Helper()
	dir := newCard(t, initArgs...)
	provision(t, dir, pivclient.SlotAuthentication, pivclient.AlgECCP256, pivclient.PINPolicyOnce, "tokenlab P-256")
	provision(t, dir, pivclient.SlotSignature, pivclient.AlgECCP384, pivclient.PINPolicyAlways, "tokenlab P-384")
	provision(t, dir, pivclient.SlotKeyManagement, pivclient.AlgECCP256, pivclient.PINPolicyOnce, "tokenlab key management")
	return dir
}

var _ = yubikey.Open
var _ = fmt.Sprint

func readDER(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}
