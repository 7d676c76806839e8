package interop

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"tokenlab/emulator/piv"
	"tokenlab/emulator/yubikey"
	"tokenlab/middleware/pivclient"
	tlssh "tokenlab/ssh"
)

// SSH with card keys: OpenSSH (ssh -I p11-kit-client.so, ssh-agent) into tokenlab's server,
// tokenlab's client into Debian's sshd, and AsyncSSH as the RFC 6187 peer both ways.

var (
	peerSSHAgent  = peer{"ssh-agent", "openssh-client"}
	peerSSHAdd    = peer{"ssh-add", "openssh-client"}
	peerPython3   = peer{"/usr/bin/python3", "python3"}
	peerAsyncSSH  = peer{"/usr/lib/python3/dist-packages/asyncssh/__init__.py", "python3-asyncssh"}
	peerPyOpenSSL = peer{"/usr/lib/python3/dist-packages/OpenSSL/__init__.py", "python3-openssl"}
)

// sshCA is a test CA that issues the card's and the peers' certificates.
type sshCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  string // path of the CA certificate in PEM
}

func newSSHCA(t *testing.T) *sshCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tokenlab SSH test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	path := filepath.Join(t.TempDir(), "ca.pem")
	appsWrite(t, path, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), 0o600)
	return &sshCA{cert: c, key: key, pem: path}
}

// issue certifies pub: a user certificate for cn, or a host certificate for 127.0.0.1.
func (ca *sshCA) issue(t *testing.T, pub crypto.PublicKey, cn string, host bool) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if host {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

// softwareIdentity writes a software key and its certificate as PEM files for AsyncSSH.
func (ca *sshCA) softwareIdentity(t *testing.T, curve elliptic.Curve, cn string, host bool) (keyPath, certPath string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(curve, rand.Reader)
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyPath, certPath = filepath.Join(dir, "key.pem"), filepath.Join(dir, "cert.pem")
	appsWrite(t, keyPath, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), 0o600)
	c := ca.issue(t, key.Public(), cn, host)
	appsWrite(t, certPath, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})), 0o600)
	return keyPath, certPath
}

// The SSH card: user keys 9A P-256 (PIN once) and 9C P-384 (PIN always), host keys 9E P-256
// (PIN never) and 9D P-384 (PIN once), 82 Ed25519 and 83 RSA 2048 (PIN once, plain keys);
// every ECDSA and RSA key has a certificate of ca (users CN "alice", hosts 127.0.0.1).
var sshCardKeys = []struct {
	slot, alg, pin byte
	host           bool
}{
	{pivclient.SlotAuthentication, pivclient.AlgECCP256, pivclient.PINPolicyOnce, false},
	{pivclient.SlotSignature, pivclient.AlgECCP384, pivclient.PINPolicyAlways, false},
	{pivclient.SlotCardAuthentication, pivclient.AlgECCP256, pivclient.PINPolicyNever, true},
	{pivclient.SlotKeyManagement, pivclient.AlgECCP384, pivclient.PINPolicyOnce, true},
	{0x82, pivclient.AlgEd25519, pivclient.PINPolicyOnce, false},
	{0x83, pivclient.AlgRSA2048, pivclient.PINPolicyOnce, false},
}

func provisionSSH(t *testing.T, ca *sshCA) string {
	t.Helper()
	dir := newCard(t)
	d, err := yubikey.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()
	c := pivclient.New(d.Card)
	if _, err := c.Select(ctx); err != nil {
		t.Fatal(err)
	}
	m, err := c.GetMetadata(ctx, pivclient.SlotCardManagement)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AuthenticateManagementKey(ctx, m.Algorithm, piv.DefaultManagementKey); err != nil {
		t.Fatal(err)
	}
	for _, k := range sshCardKeys {
		pub, err := c.GenerateKey(ctx, k.slot, k.alg, k.pin, pivclient.TouchPolicyNever)
		if err != nil {
			t.Fatal(err)
		}
		if k.alg == pivclient.AlgEd25519 {
			continue
		}
		if err := c.SetCertificate(ctx, k.slot, ca.issue(t, pub, "alice", k.host).Raw); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// exportKey runs `tokenlab ssh export` for slot.
func exportKey(t *testing.T, dir, slot string, extra ...string) string {
	t.Helper()
	return strings.TrimSpace(run(t, tokenlabBin, append([]string{"ssh", "export", "--state", dir, "--slot", slot}, extra...)...))
}

// proc is a long-running peer started by a test and stopped by PID when it ends.
type proc struct {
	cmd  *exec.Cmd
	done chan error
	mu   sync.Mutex
	out  bytes.Buffer
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *proc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// startProc starts name in its own process group; it gets SIGTERM (SIGKILL after 5 s) when
// the test ends.
func startProc(t *testing.T, env []string, name string, args ...string) *proc {
	t.Helper()
	p := &proc{done: make(chan error, 1)}
	p.cmd = exec.Command(name, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// waitPort waits until p listens on port.
func (p *proc) waitPort(t *testing.T, port int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !listening(port) {
		select {
		case err := <-p.done:
			p.done <- err // for the cleanup
			t.Fatalf("%s exited at start (%v):\n%s", p.cmd.Path, err, p.log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not listen on %d within 15s:\n%s", p.cmd.Path, port, p.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sshListen starts `tokenlab ssh listen` on a free port with args (and a new Ed25519 host key
// unless they put the host key on the card),
// and waits for it; it returns the port and the host key's .pub file.
func sshListen(t *testing.T, env []string, args ...string) (*proc, int, string) {
	t.Helper()
	port := appsFreePort(t)
	hostKey, _ := hostKeyPair(t, port)
	listen := []string{"ssh", "listen", "--listen", fmt.Sprintf("127.0.0.1:%d", port)}
	if !slices.Contains(args, "--host-slot") {
		listen = append(listen, "--host-key", hostKey)
	}
	p := startProc(t, env, tokenlabBin, append(listen, args...)...)
	p.waitPort(t, port)
	return p, port, hostKey + ".pub"
}

// serveSocket starts `tokenlab serve` with a card socket (and an audit log) for tokenlab's own
// SSH client and server.
func serveSocket(t *testing.T, dir string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "card.sock")
	p := startProc(t, nil, tokenlabBin, "serve", "--state", dir, "--vpcd", "off", "--card-socket", sock)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if fi, err := os.Stat(sock); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return sock
		}
		if time.Now().After(deadline) {
			t.Fatalf("no card socket after 10s:\n%s", p.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func currentUser(t *testing.T) string {
	t.Helper()
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	return u.Username
}

// opensshArgs are the options every OpenSSH client run gets: no user configuration, the
// server's host key pinned.
func opensshArgs(port int, knownHosts string) []string {
	return []string{"-F", "/dev/null", "-p", fmt.Sprint(port), "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + knownHosts,
		"-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no", "-o", "ConnectTimeout=10"}
}

// hostKeyPair makes an OpenSSH Ed25519 host key and a known_hosts file naming it for port.
func hostKeyPair(t *testing.T, port int) (key, knownHosts string) {
	t.Helper()
	dir := t.TempDir()
	key = filepath.Join(dir, "host_ed25519")
	run(t, peerSSHKeygen.path, "-q", "-t", "ed25519", "-N", "", "-f", key)
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(pub))
	knownHosts = filepath.Join(dir, "known_hosts")
	appsWrite(t, knownHosts, fmt.Sprintf("[127.0.0.1]:%d %s %s\n", port, f[0], f[1]), 0o600)
	return key, knownHosts
}

// TestSSHExport: `tokenlab ssh export --slot 9a` writes the OpenSSH .pub line that
// `ssh-keygen -D p11-kit-client.so` shows for the card's 9A key; --x509 writes the RFC 6187
// key of the slot's certificate.
func TestSSHExport(t *testing.T) {
	need(t, peerSSHKeygen, peerP11KitClient)
	ca := newSSHCA(t)
	dir := provisionSSH(t, ca)
	line := exportKey(t, dir, "9a")
	s := serveP11(t, dir)
	k, comment, _, _, err := gossh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	if _, ok := sshKeygenKeys(t, s)[string(k.Marshal())]; !ok || k.Type() != "ecdsa-sha2-nistp256" {
		t.Errorf("ssh-keygen -D does not show the exported %s key", k.Type())
	}
	if !strings.HasPrefix(comment, "tokenlab 9a YubiKey ") {
		t.Errorf("comment %q", comment)
	}
	f := strings.Fields(exportKey(t, dir, "9c", "--x509"))
	blob, err := base64.StdEncoding.DecodeString(f[1])
	if err != nil {
		t.Fatal(err)
	}
	xk, err := tlssh.ParseX509Key(blob)
	if err != nil || f[0] != tlssh.KeyAlgoX509ECDSA384 || xk.Type() != f[0] || xk.Certificate().Subject.CommonName != "alice" {
		t.Errorf("x509 export %q: %v", f[0], err)
	}
}

// TestOpenSSHIntoTokenlabServer: OpenSSH's ssh, with the card through `ssh -I
// p11-kit-client.so` and with ssh-agent after `ssh-add -s`, logs into `tokenlab ssh listen`,
// whose Ed25519 host key it checks against known_hosts, and runs a command there.
func TestOpenSSHIntoTokenlabServer(t *testing.T) {
	need(t, peerSSH, peerSSHKeygen, peerSSHAgent, peerSSHAdd, peerP11KitClient)
	ca := newSSHCA(t)
	dir := provisionSSH(t, ca)
	line := exportKey(t, dir, "9a")
	s := serveP11(t, dir)
	tmp := t.TempDir()
	pub := filepath.Join(tmp, "card9a.pub")
	appsWrite(t, pub, line+"\n", 0o600)
	me := currentUser(t)
	port := appsFreePort(t)
	hostKey, knownHosts := hostKeyPair(t, port)
	srv := startProc(t, nil, tokenlabBin, "ssh", "listen", "--listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--host-key", hostKey, "--authorized-keys", pub, "--user", me)
	srv.waitPort(t, port)
	askpass := filepath.Join(tmp, "askpass.sh")
	appsWrite(t, askpass, "#!/bin/sh\necho 123456\n", 0o700)
	env := []string{"SSH_ASKPASS=" + askpass, "SSH_ASKPASS_REQUIRE=force", "DISPLAY=:0"}

	t.Run("ssh -I", func(t *testing.T) {
		args := append(opensshArgs(port, knownHosts), "-I", "{module}", "-i", pub, "-o", "IdentitiesOnly=yes",
			me+"@127.0.0.1", "echo tokenlab-server-ok $TOKENLAB_SSH_USER")
		out := appsRun(t, s, env, peerSSH.path, args...)
		if !appsHasLine(out, "tokenlab-server-ok "+me) {
			t.Errorf("ssh -I:\n%s\n--- tokenlab ssh listen ---\n%s", out, srv.log())
		}
	})
	t.Run("ssh-agent", func(t *testing.T) {
		sock := filepath.Join(tmp, "agent.sock")
		// The agent loads the module itself (ssh-pkcs11-helper): it needs the server's address.
		startProc(t, []string{"P11_KIT_SERVER_ADDRESS=unix:path=" + s.Socket}, peerSSHAgent.path, "-D", "-a", sock)
		deadline := time.Now().Add(5 * time.Second)
		for {
			if _, err := os.Stat(sock); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("ssh-agent made no socket in 5s")
			}
			time.Sleep(20 * time.Millisecond)
		}
		agentEnv := append(env, "SSH_AUTH_SOCK="+sock)
		out := appsRun(t, s, agentEnv, peerSSHAdd.path, "-s", "{module}")
		if !strings.Contains(out, "Card added") {
			t.Fatalf("ssh-add -s: %s", out)
		}
		if out := appsRun(t, s, agentEnv, peerSSHAdd.path, "-L"); !strings.Contains(out, strings.Join(strings.Fields(line)[:2], " ")) {
			t.Fatalf("the agent does not hold the 9A key:\n%s", out)
		}
		args := append(opensshArgs(port, knownHosts), "-o", "BatchMode=yes", "-o", "IdentityAgent="+sock, "-i", pub, "-o", "IdentitiesOnly=yes",
			me+"@127.0.0.1", "echo tokenlab-agent-ok")
		if out := appsRun(t, s, agentEnv, peerSSH.path, args...); !appsHasLine(out, "tokenlab-agent-ok") {
			t.Errorf("ssh through the agent:\n%s\n--- tokenlab ssh listen ---\n%s", out, srv.log())
		}
	})
	if !strings.Contains(srv.log(), "ssh login") || !strings.Contains(srv.log(), "user="+me) {
		t.Errorf("the server logged no login of %s:\n%s", me, srv.log())
	}
}

// connectArgs is a `tokenlab ssh connect` through the card socket with the PIN from the
// environment.
func connectArgs(sock, slot, profile, audit string, extra ...string) []string {
	return append([]string{"ssh", "connect", "--card-socket", sock, "--slot", slot, "--profile", profile, "--prompt", "env", "--audit-log", audit}, extra...)
}

// runTokenlab runs the tokenlab binary with TOKENLAB_PIN set.
func runTokenlab(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, tokenlabBin, args...)
	cmd.Env = append(os.Environ(), "TOKENLAB_PIN=123456")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("tokenlab %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestTokenlabClientIntoSSHD: `tokenlab ssh connect` logs into Debian's sshd with the card's
// keys as plain keys — ECDSA P-256, Ed25519 (which OpenSSH 9.2 cannot take from PKCS#11) and
// RSA with rsa-sha2-512 — checking sshd's host key, and sshd logs the card key it accepted.
func TestTokenlabClientIntoSSHD(t *testing.T) {
	need(t, peerSSHD, peerSSHKeygen)
	ca := newSSHCA(t)
	dir := provisionSSH(t, ca)
	lines := map[string]string{}
	var all []string
	for _, slot := range []string{"9a", "82", "83"} {
		lines[slot] = exportKey(t, dir, slot)
		all = append(all, lines[slot])
	}
	sock := serveSocket(t, dir)
	d := appsStartSSHD(t, strings.Join(all, "\n"))
	audit := filepath.Join(t.TempDir(), "audit.jsonl")
	for _, slot := range []string{"9a", "82", "83"} {
		t.Run(slot, func(t *testing.T) {
			out := runTokenlab(t, connectArgs(sock, slot, "strict-2fa", audit, "--user", d.user, "--host-key", d.hostPub,
				fmt.Sprintf("127.0.0.1:%d", d.port), "echo sshd-ok $USER")...)
			if !appsHasLine(out, "sshd-ok "+d.user) {
				t.Errorf("output %q", out)
			}
			k, _, _, _, _ := gossh.ParseAuthorizedKey([]byte(lines[slot]))
			if log, _ := os.ReadFile(d.log); !appsLineWith(string(log), "Accepted publickey for "+d.user, gossh.FingerprintSHA256(k)) {
				t.Errorf("sshd did not accept the %s key of slot %s:\n%s", k.Type(), slot, tail(d.log, 20))
			}
		})
	}
}

// TestSSHPromptsThreeConnections: three `tokenlab ssh connect` processes in a row against
// tokenlab's server, each its own application: strict-2fa asks three times, safenet-single-
// logon once (the daemon's card stays verified between them), and the PIN-always 9C key asks
// at every signature under either profile.
func TestSSHPromptsThreeConnections(t *testing.T) {
	ca := newSSHCA(t)
	for _, tc := range []struct {
		profile, slot string
		want          int
	}{
		{"strict-2fa", "9a", 3},
		{"safenet-single-logon", "9a", 1},
		{"strict-2fa", "9c", 3},
		{"safenet-single-logon", "9c", 3},
	} {
		t.Run(tc.profile+"/"+tc.slot, func(t *testing.T) {
			dir := provisionSSH(t, ca)
			sock := serveSocket(t, dir)
			srv, port, hostPub := sshListen(t, nil, "--ca", ca.pem)
			audit := filepath.Join(t.TempDir(), "audit.jsonl")
			for i := range 3 {
				out := runTokenlab(t, connectArgs(sock, tc.slot, tc.profile, audit, "--x509", "--host-key", hostPub,
					fmt.Sprintf("127.0.0.1:%d", port), "echo", fmt.Sprintf("connection-%d", i))...)
				if !appsHasLine(out, fmt.Sprintf("connection-%d", i)) {
					t.Fatalf("connection %d: %q\n--- server ---\n%s", i, out, srv.log())
				}
			}
			events := appsAudit(t, audit)
			prompts, signs := 0, 0
			for _, e := range events {
				switch e.Kind {
				case "prompt":
					prompts++
				case "sign":
					signs++
					if e.Slot != tc.slot {
						t.Errorf("signature with slot %s", e.Slot)
					}
				}
			}
			if prompts != tc.want || signs != 3 {
				t.Errorf("%d prompts and %d signatures over three connections, want %d and 3:\n%s", prompts, signs, tc.want, events)
			}
		})
	}
}

// sshKeygenKeys runs `ssh-keygen -D` and returns the key lines it prints by wire-format key;
// its complaints about the Ed25519 key (OpenSSH 9.2 takes none from PKCS#11) are skipped.
func sshKeygenKeys(t *testing.T, s *p11Server) map[string]string {
	t.Helper()
	keys := map[string]string{}
	for _, line := range strings.Split(s.run(t, peerSSHKeygen.path, "-D", "{module}"), "\n") {
		if k, _, _, _, err := gossh.ParseAuthorizedKey([]byte(line)); err == nil {
			keys[string(k.Marshal())] = strings.TrimSpace(line)
		}
	}
	return keys
}

// TestOpenSSHPINAlways: OpenSSH 9.2 and a CKA_ALWAYS_AUTHENTICATE key (9C, PIN always)
// through p11-kit-client.so. `ssh -I` signs right after C_Login(CKU_USER) without the context
// login PKCS#11 asks for; tokenlab's PKCS#11 server lets that login's PIN serve this one
// signature (as real cards through OpenSC effectively do), so it works. ssh-agent after
// `ssh-add -s` logged in at add time, cannot prompt for the context login, and fails:
// "agent refused operation", no signature on the card. tokenlab's own client prompts right
// before every signature. The README explains it ("PIN-always keys and OpenSSH").
func TestOpenSSHPINAlways(t *testing.T) {
	need(t, peerSSH, peerSSHKeygen, peerSSHAgent, peerSSHAdd, peerP11KitClient)
	ca := newSSHCA(t)
	dir := provisionSSH(t, ca)
	line := exportKey(t, dir, "9c")
	tmp := t.TempDir()
	cardSock := filepath.Join(tmp, "card.sock")
	s := serveP11(t, dir, "--card-socket", cardSock)
	pub := filepath.Join(tmp, "card9c.pub")
	appsWrite(t, pub, line+"\n", 0o600)
	me := currentUser(t)
	srv, port, hostPub := sshListen(t, nil, "--authorized-keys", pub, "--user", me)
	knownHosts := filepath.Join(tmp, "known_hosts")
	hp, _ := os.ReadFile(hostPub)
	appsWrite(t, knownHosts, fmt.Sprintf("[127.0.0.1]:%d %s\n", port, strings.Join(strings.Fields(string(hp))[:2], " ")), 0o600)
	askpass := filepath.Join(tmp, "askpass.sh")
	appsWrite(t, askpass, "#!/bin/sh\necho 123456\n", 0o700)
	env := []string{"SSH_ASKPASS=" + askpass, "SSH_ASKPASS_REQUIRE=force", "DISPLAY=:0"}

	// ssh -I: the first signature after the login.
	args := append(opensshArgs(port, knownHosts), "-I", "{module}", "-i", pub, "-o", "IdentitiesOnly=yes", me+"@127.0.0.1", "echo direct-ok")
	if out := appsRun(t, s, env, peerSSH.path, args...); !appsHasLine(out, "direct-ok") {
		t.Errorf("ssh -I with the 9C key:\n%s\n--- server ---\n%s", out, srv.log())
	}
	if ev := appsAudit(t, s.Audit); !ev.has("application-pin", "9c", "") || !ev.has("sign", "9c", "") {
		t.Errorf("audit: want the login PIN serving the 9C signature, and the signature:\n%s", ev)
	}

	// ssh-agent: logged in at ssh-add time, no context login possible at signing time.
	sock := filepath.Join(tmp, "agent.sock")
	startProc(t, []string{"P11_KIT_SERVER_ADDRESS=unix:path=" + s.Socket}, peerSSHAgent.path, "-D", "-a", sock)
	for i := 0; i < 250; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	agentEnv := append(env, "SSH_AUTH_SOCK="+sock)
	if out := appsRun(t, s, agentEnv, peerSSHAdd.path, "-s", "{module}"); !strings.Contains(out, "Card added") {
		t.Fatalf("ssh-add -s: %s", out)
	}
	before := len(appsAudit(t, s.Audit))
	args = append(opensshArgs(port, knownHosts), "-o", "BatchMode=yes", "-o", "IdentityAgent="+sock, "-i", pub, "-o", "IdentitiesOnly=yes",
		me+"@127.0.0.1", "echo agent-ok")
	out, err := appsRunErr(s, agentEnv, peerSSH.path, args...)
	if err == nil || appsHasLine(out, "agent-ok") || !strings.Contains(out, "agent refused operation") || !strings.Contains(out, "Permission denied (publickey)") {
		t.Errorf("ssh through ssh-agent with the 9C key: %v, want OpenSSH's failure:\n%s", err, out)
	}
	if ev := appsAudit(t, s.Audit)[before:]; ev.has("sign", "9c", "") {
		t.Errorf("the agent got a 9C signature without a fresh PIN:\n%s", ev)
	}

	// tokenlab's client: a prompt right before each signature.
	audit := filepath.Join(tmp, "client-audit.jsonl")
	for i := range 2 {
		out := runTokenlab(t, connectArgs(cardSock, "9c", "safenet-single-logon", audit, "--user", me, "--host-key", hostPub,
			fmt.Sprintf("127.0.0.1:%d", port), "echo", fmt.Sprintf("tokenlab-always-%d", i))...)
		if !appsHasLine(out, fmt.Sprintf("tokenlab-always-%d", i)) {
			t.Errorf("tokenlab ssh connect with 9C: %q", out)
		}
	}
	var kinds []string
	for _, e := range appsAudit(t, audit) {
		if e.Kind == "prompt" || e.Kind == "sign" {
			kinds = append(kinds, e.Kind+" "+e.Slot)
		}
	}
	if got := strings.Join(kinds, ", "); got != "prompt 9c, sign 9c, prompt 9c, sign 9c" {
		t.Errorf("tokenlab client with the PIN-always key: %s, want a prompt before each signature", got)
	}
}

// asyncsshScript is the AsyncSSH peer (testdata/asyncssh_peer.py).
func asyncsshScript(t *testing.T) string {
	t.Helper()
	need(t, peerPython3, peerAsyncSSH, peerPyOpenSSL)
	p, err := filepath.Abs(filepath.Join("testdata", "asyncssh_peer.py"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAsyncSSHServer: tokenlab's client logs into an AsyncSSH server with the card's
// certificate as an RFC 6187 key — x509v3-ecdsa-sha2-nistp256 (9A) and -nistp384 (9C, PIN
// always) — and checks AsyncSSH's RFC 6187 host key, P-256 and P-384, against the CA (with
// --host-ca the client accepts no other kind of host key).
func TestAsyncSSHServer(t *testing.T) {
	script := asyncsshScript(t)
	ca := newSSHCA(t)
	dir := provisionSSH(t, ca)
	sock := serveSocket(t, dir)
	authorized := filepath.Join(t.TempDir(), "authorized_keys")
	appsWrite(t, authorized, "x509v3-ecdsa-sha2-nistp256 subject=CN=alice\nx509v3-ecdsa-sha2-nistp384 subject=CN=alice\n", 0o600)
	for _, tc := range []struct {
		name, slot, userAlg string
		hostCurve           elliptic.Curve
	}{
		{"user p256 host p256", "9a", tlssh.KeyAlgoX509ECDSA256, elliptic.P256()},
		{"user p384 host p384", "9c", tlssh.KeyAlgoX509ECDSA384, elliptic.P384()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hostKey, hostCert := ca.softwareIdentity(t, tc.hostCurve, "asyncssh host", true)
			port := appsFreePort(t)
			srv := startProc(t, nil, peerPython3.path, script, "server", fmt.Sprint(port), hostKey, hostCert, ca.pem, authorized)
			srv.waitPort(t, port)
			audit := filepath.Join(t.TempDir(), "audit.jsonl")
			out := runTokenlab(t, connectArgs(sock, tc.slot, "strict-2fa", audit, "--x509", "--host-ca", ca.pem,
				fmt.Sprintf("127.0.0.1:%d", port), "hello")...)
			if !appsHasLine(out, "asyncssh-ok user=alice cmd=hello") {
				t.Errorf("output %q\n--- AsyncSSH ---\n%s", out, srv.log())
			}
			if !strings.Contains(srv.log(), "Verifying request with "+tc.userAlg+" key") {
				t.Errorf("AsyncSSH did not verify a %s signature:\n%s", tc.userAlg, srv.log())
			}
			if ev := appsAudit(t, audit); !ev.has("prompt", "", "") || !ev.has("sign", tc.slot, "") {
				t.Errorf("audit: want a prompt and a %s signature:\n%s", tc.slot, ev)
			}
		})
	}
}

// TestAsyncSSHClient: AsyncSSH's client logs into `tokenlab ssh listen` with RFC 6187 user
// keys (P-256 and P-384 software keys certified by the CA) and checks tokenlab's RFC 6187 host
// key, which lives on the card: 9E (P-256, PIN never) and 9D (P-384, PIN once).
func TestAsyncSSHClient(t *testing.T) {
	script := asyncsshScript(t)
	ca := newSSHCA(t)
	dir := provisionSSH(t, ca)
	sock := serveSocket(t, dir)
	for _, tc := range []struct {
		name, hostSlot, hostAlg string
		userCurve               elliptic.Curve
		userAlg                 string
	}{
		{"host p256 user p256", "9e", tlssh.KeyAlgoX509ECDSA256, elliptic.P256(), tlssh.KeyAlgoX509ECDSA256},
		{"host p384 user p384", "9d", tlssh.KeyAlgoX509ECDSA384, elliptic.P384(), tlssh.KeyAlgoX509ECDSA384},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, port, _ := sshListen(t, []string{"TOKENLAB_PIN=123456"}, "--ca", ca.pem, "--card-socket", sock,
				"--host-slot", tc.hostSlot, "--host-x509", "--profile", "opensc-default", "--prompt", "env")
			key, cert := ca.softwareIdentity(t, tc.userCurve, "bob", false)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, peerPython3.path, script, "client", fmt.Sprint(port), "bob", key, cert, ca.pem, tc.hostAlg, "echo hi").CombinedOutput()
			if err != nil {
				t.Fatalf("AsyncSSH client: %v\n%s\n--- tokenlab ssh listen ---\n%s", err, out, srv.log())
			}
			// The client offers the x509v3 host key algorithm alone: connecting at all means
			// tokenlab's server signed the key exchange with the card's RFC 6187 key.
			if !appsHasLine(string(out), "hi") {
				t.Errorf("AsyncSSH client:\n%s", out)
			}
			if !strings.Contains(string(out), "Trying public key auth with "+tc.userAlg+" key") {
				t.Errorf("AsyncSSH did not use %s:\n%s", tc.userAlg, out)
			}
			if !strings.Contains(srv.log(), "user=bob key="+tc.userAlg+" name=bob") {
				t.Errorf("tokenlab's server did not log bob in with %s:\n%s", tc.userAlg, srv.log())
			}
		})
	}
}
