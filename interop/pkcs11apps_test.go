package interop

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"tokenlab/emulator/yubikey"
	"tokenlab/middleware/pivclient"
)

// Applications that load Debian's p11-kit-client.so and reach tokenlab serve's PKCS#11 socket:
// GnuTLS p11tool, OpenSSH (ssh-keygen -D, ssh -I against a real sshd) and NSS (modutil,
// certutil). The card is the one provisionP11 makes: 9A P-256, 9C P-384 PIN-always, 9D P-256,
// each with a certificate; CKA_ID 01, 02, 03.

// appsPeerSpy is OpenSC's logging PKCS#11 module, put between an application and
// p11-kit-client.so (PKCS11SPY names the real module) to see the calls the application makes.
var appsPeerSpy = peer{"/usr/lib/x86_64-linux-gnu/pkcs11-spy.so", "opensc-pkcs11"}

// TestP11ToolList: `p11tool --list-all --login` shows the private key, public key and
// certificate of each of the three slots, with the right curves and CKA_ALWAYS_AUTHENTICATE on
// 9C only; without --login the private keys stay hidden.
func TestP11ToolList(t *testing.T) {
	need(t, peerP11Tool, peerP11KitClient)
	s := serveP11(t, provisionP11(t))

	objs := appsP11toolObjects(appsRun(t, s, []string{"GNUTLS_PIN=123456"}, peerP11Tool.path, "--provider", "{module}", "--list-all", "--login"))
	for _, tc := range []struct {
		id, label, curve string
		alwaysAuth       bool
	}{
		{"01", "PIV AUTH", "SECP256R1", false},
		{"02", "SIGN", "SECP384R1", true},
		{"03", "KEY MAN", "SECP256R1", false},
	} {
		for _, want := range []struct{ typ, label, kind string }{
			// GnuTLS names a private key's curve only when a public key or certificate has
			// the same CKA_ID and CKA_LABEL; the card labels its objects as OpenSC does
			// ("PIV AUTH key", "PIV AUTH pubkey"), so the private key shows "EC/ECDSA".
			{"private", tc.label + " key", "Private key (EC/ECDSA"},
			{"public", tc.label + " pubkey", "Public key (EC/ECDSA-" + tc.curve + ")"},
			{"cert", "Certificate for " + tc.label, "X.509 Certificate (EC/ECDSA-" + tc.curve + ")"},
		} {
			o := objs.find(tc.id, want.typ)
			if o == nil {
				t.Errorf("p11tool --list-all --login: no %s object with id %s:\n%s", want.typ, tc.id, objs)
				continue
			}
			if o["Label"] != want.label || !strings.HasPrefix(o["Type"], want.kind) {
				t.Errorf("id %s type=%s: label %q, type %q; want %q, %q...", tc.id, want.typ, o["Label"], o["Type"], want.label, want.kind)
			}
			if want.typ != "private" {
				continue
			}
			if got := strings.Contains(o["Flags"], "CKA_ALWAYS_AUTH;"); got != tc.alwaysAuth {
				t.Errorf("id %s private key: CKA_ALWAYS_AUTH shown %v, want %v (flags %q)", tc.id, got, tc.alwaysAuth, o["Flags"])
			}
			for _, f := range []string{"CKA_PRIVATE;", "CKA_SENSITIVE;", "CKA_NEVER_EXTRACTABLE;"} {
				if !strings.Contains(o["Flags"], f) {
					t.Errorf("id %s private key lacks %s (flags %q)", tc.id, f, o["Flags"])
				}
			}
		}
	}
	if len(objs) != 9 {
		t.Errorf("p11tool --list-all --login: %d objects, want 9:\n%s", len(objs), objs)
	}

	public := appsP11toolObjects(s.run(t, peerP11Tool.path, "--provider", "{module}", "--list-all"))
	if len(public) != 6 {
		t.Errorf("p11tool --list-all without login: %d objects, want the 6 public ones:\n%s", len(public), public)
	}
	for _, o := range public {
		if strings.HasSuffix(o["URL"], ";type=private") {
			t.Errorf("private key visible without login: %s", o["URL"])
		}
	}
}

// TestP11ToolTestSign: `p11tool --login --test-sign` signs and verifies with the P-256 key of
// 9A and with the PIN-always P-384 key of 9C. OpenSC's pkcs11-spy between p11tool and
// p11-kit-client.so records the calls: for 9C GnuTLS calls C_SignInit, logs in again with
// CKU_CONTEXT_SPECIFIC, asks for the signature size, then signs (pin-caching.md §4), and the
// server must accept each step; for 9A there is no context login.
func TestP11ToolTestSign(t *testing.T) {
	need(t, peerP11Tool, peerP11KitClient, appsPeerSpy)
	s := serveP11(t, provisionP11(t))

	for _, tc := range []struct {
		id, slot string
		calls    []string
	}{
		{"01", "9a", []string{"C_Login CKU_USER CKR_OK", "C_SignInit CKR_OK", "C_Sign(NULL) CKR_OK", "C_Sign CKR_OK"}},
		{"02", "9c", []string{"C_Login CKU_USER CKR_OK", "C_SignInit CKR_OK", "C_Login CKU_CONTEXT_SPECIFIC CKR_OK",
			"C_Sign(NULL) CKR_OK", "C_Sign CKR_OK"}},
	} {
		t.Run(tc.slot, func(t *testing.T) {
			spy := filepath.Join(t.TempDir(), "spy.log")
			before := len(appsAudit(t, s.Audit))
			out := appsRun(t, s, []string{"GNUTLS_PIN=123456", "PKCS11SPY=" + peerP11KitClient.path, "PKCS11SPY_OUTPUT=" + spy},
				peerP11Tool.path, "--provider", appsPeerSpy.path, "--login", "--test-sign", "pkcs11:id=%"+tc.id+";type=private")
			for _, want := range []string{"Signing using ECDSA-SHA256... ok", "Verifying against private key parameters... ok",
				"Verifying against public key in the token... ok"} {
				if !strings.Contains(out, want) {
					t.Errorf("p11tool --test-sign id=%s lacks %q:\n%s", tc.id, want, out)
				}
			}
			b, err := os.ReadFile(spy)
			if err != nil {
				t.Fatal(err)
			}
			if got := appsSpySignCalls(string(b)); strings.Join(got, "\n") != strings.Join(tc.calls, "\n") {
				t.Errorf("p11tool --test-sign id=%s: login and sign calls\n%s\nwant\n%s", tc.id, strings.Join(got, "\n"), strings.Join(tc.calls, "\n"))
			}
			events := appsAudit(t, s.Audit)[before:]
			if !events.has("sign", tc.slot, "") {
				t.Errorf("no sign event for slot %s:\n%s", tc.slot, events)
			}
		})
	}
}

// appsSpySignCalls returns the C_Login, C_SignInit and C_Sign calls of a pkcs11-spy log, as
// "C_Login CKU_USER CKR_OK", "C_SignInit CKR_OK", "C_Sign(NULL) CKR_OK" (a length query) or
// "C_Sign CKR_OK".
func appsSpySignCalls(log string) []string {
	var calls []string
	var name, user string
	var query bool
	for _, line := range strings.Split(log, "\n") {
		line = strings.TrimSpace(line)
		if _, fn, ok := strings.Cut(line, ": "); ok && strings.HasPrefix(fn, "C_") && !strings.Contains(fn, " ") {
			name, user, query = fn, "", false
			continue
		}
		switch {
		case strings.HasPrefix(line, "[in] userType = "):
			user = strings.TrimPrefix(line, "[in] userType = ")
		case strings.HasPrefix(line, "[out] pSignature[*pulSignatureLen] NULL"):
			query = true
		case strings.HasPrefix(line, "Returned:"):
			f := strings.Fields(line)
			rv := f[len(f)-1]
			switch name {
			case "C_Login":
				calls = append(calls, name+" "+user+" "+rv)
			case "C_SignInit":
				calls = append(calls, name+" "+rv)
			case "C_Sign":
				if query {
					calls = append(calls, "C_Sign(NULL) "+rv)
				} else {
					calls = append(calls, "C_Sign "+rv)
				}
			}
			name = ""
		}
	}
	return calls
}

// TestSSHKeygenPKCS11: `ssh-keygen -D` prints the three card keys as OpenSSH public keys, once
// each, each equal to the key of the slot's certificate, labelled with the object's CKA_LABEL.
func TestSSHKeygenPKCS11(t *testing.T) {
	need(t, peerSSHKeygen, peerP11KitClient)
	dir := provisionP11(t)
	certs, _ := appsCertificates(t, dir)
	s := serveP11(t, dir)

	keys := appsSSHKeygenKeys(t, s)
	for _, tc := range []struct {
		slot         byte
		typ, comment string
	}{
		{pivclient.SlotAuthentication, "ecdsa-sha2-nistp256", "PIV AUTH pubkey"},
		{pivclient.SlotSignature, "ecdsa-sha2-nistp384", "SIGN pubkey"},
		{pivclient.SlotKeyManagement, "ecdsa-sha2-nistp256", "KEY MAN pubkey"},
	} {
		want, err := gossh.NewPublicKey(certs[tc.slot].PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		line, ok := keys[string(want.Marshal())]
		if !ok {
			t.Errorf("ssh-keygen -D lacks the key of slot %x (%s)", tc.slot, gossh.MarshalAuthorizedKey(want))
			continue
		}
		// OpenSSH takes the comment from CKA_LABEL of the public key object.
		if f := strings.SplitN(line, " ", 3); len(f) != 3 || f[0] != tc.typ || f[2] != tc.comment {
			t.Errorf("slot %x: %q, want type %s and comment %q", tc.slot, line, tc.typ, tc.comment)
		}
		delete(keys, string(want.Marshal()))
	}
	for _, line := range keys {
		t.Errorf("ssh-keygen -D printed a key that is not on the card: %s", line)
	}
}

// TestSSHLoginPKCS11: `ssh -I p11-kit-client.so` logs into a real sshd on loopback with the
// card's 9A key, the PIN coming from SSH_ASKPASS, and runs a command; the audit log shows the
// PIN and the signature with 9A.
func TestSSHLoginPKCS11(t *testing.T) {
	need(t, peerSSH, peerSSHKeygen, peerSSHD, peerP11KitClient)
	dir := provisionP11(t)
	certs, _ := appsCertificates(t, dir)
	s := serveP11(t, dir)
	tmp := t.TempDir()

	want, err := gossh.NewPublicKey(certs[pivclient.SlotAuthentication].PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	line, ok := appsSSHKeygenKeys(t, s)[string(want.Marshal())]
	if !ok {
		t.Fatalf("ssh-keygen -D does not show the 9A key")
	}
	pub := filepath.Join(tmp, "card9a.pub")
	appsWrite(t, pub, line+"\n", 0o600)
	d := appsStartSSHD(t, line)

	askpass := filepath.Join(tmp, "askpass.sh")
	appsWrite(t, askpass, "#!/bin/sh\necho 123456\n", 0o700)
	before := len(appsAudit(t, s.Audit))
	out := appsRun(t, s, []string{"SSH_ASKPASS=" + askpass, "SSH_ASKPASS_REQUIRE=force", "DISPLAY=:0"},
		peerSSH.path, "-F", "/dev/null", "-p", fmt.Sprint(d.port), "-I", "{module}", "-i", pub,
		"-o", "IdentitiesOnly=yes", "-o", "BatchMode=no", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no", "-o", "ConnectTimeout=10",
		d.user+"@127.0.0.1", "echo tokenlab-ok")
	if !appsHasLine(out, "tokenlab-ok") {
		t.Errorf("ssh did not run the command:\n%s\n--- sshd ---\n%s", out, tail(d.log, 30))
	}
	// sshd names the key it accepted: the card's 9A key, not some other identity of the user.
	accepted := fmt.Sprintf("Accepted publickey for %s from 127.0.0.1 port ", d.user)
	if log, _ := os.ReadFile(d.log); !appsLineWith(string(log), accepted, gossh.FingerprintSHA256(want)) {
		t.Errorf("sshd log lacks %q with the 9A key %s:\n%s", accepted, gossh.FingerprintSHA256(want), tail(d.log, 30))
	}

	events := appsAudit(t, s.Audit)[before:]
	pin, sign := -1, -1
	for i, e := range events {
		if !strings.HasPrefix(e.Application, "ssh ") {
			t.Errorf("event from %q, want ssh: %s", e.Application, e)
		}
		if pin < 0 && (e.Kind == "application-pin" || e.Kind == "verify") {
			pin = i
		}
		if sign < 0 && e.Kind == "sign" && e.Slot == "9a" {
			sign = i
		}
	}
	if pin < 0 || sign < 0 || pin > sign {
		t.Errorf("audit log: want the PIN (application-pin or verify) and then a sign event for slot 9a:\n%s", events)
	}
}

// TestNSSCertutil: NSS with p11-kit-client.so added to a fresh database by modutil. modutil
// sees the token; certutil -K, logging in with the PIN from a password file, lists the three
// private keys by CKA_ID and label; certutil -L lists the three certificates without a PIN, and
// each is the one on the card.
func TestNSSCertutil(t *testing.T) {
	need(t, peerModutil, peerCertutil, peerP11KitClient)
	dir := provisionP11(t)
	certs, serial := appsCertificates(t, dir)
	token := fmt.Sprintf("YubiKey PIV #%d", serial)
	s := serveP11(t, dir)
	tmp := t.TempDir()
	db := filepath.Join(tmp, "nssdb")
	if err := os.Mkdir(db, 0o700); err != nil {
		t.Fatal(err)
	}
	db = "sql:" + db
	pwfile := filepath.Join(tmp, "pin.txt")
	appsWrite(t, pwfile, "123456\n", 0o600)

	s.run(t, peerModutil.path, "-dbdir", db, "-create", "-force")
	s.run(t, peerModutil.path, "-dbdir", db, "-add", "tokenlab", "-libfile", "{module}", "-force")
	out := s.run(t, peerModutil.path, "-dbdir", db, "-list", "tokenlab")
	for _, want := range []string{"Library file: " + peerP11KitClient.path, "Token Name: " + token, "Login Type: Login required"} {
		if !strings.Contains(out, want) {
			t.Errorf("modutil -list tokenlab lacks %q:\n%s", want, out)
		}
	}

	before := len(appsAudit(t, s.Audit))
	out = appsRun(t, s, nil, peerCertutil.path, "-d", db, "-K", "-h", "all", "-f", pwfile)
	keys := appsNSSKeys(out, token)
	wantKeys := []string{"ec 01 PIV AUTH key", "ec 02 SIGN key", "ec 03 KEY MAN key"}
	if strings.Join(keys, "\n") != strings.Join(wantKeys, "\n") {
		t.Errorf("certutil -K -h all on token %q: keys\n%s\nwant\n%s\n--- output ---\n%s", token,
			strings.Join(keys, "\n"), strings.Join(wantKeys, "\n"), out)
	}
	if events := appsAudit(t, s.Audit)[before:]; !events.has("application-pin", "", "login") {
		t.Errorf("certutil -K did not log in with the PIN of the password file:\n%s", events)
	}

	// No password file: NSS tries to log in, has no terminal to ask on, and lists the
	// certificates a token shows without login.
	before = len(appsAudit(t, s.Audit))
	out = appsRun(t, s, nil, peerCertutil.path, "-d", db, "-L", "-h", "all")
	if events := appsAudit(t, s.Audit)[before:]; events.has("application-pin", "", "") || events.has("verify", "", "") {
		t.Errorf("certutil -L without a password file logged in:\n%s", events)
	}
	for slot, label := range map[byte]string{pivclient.SlotAuthentication: "PIV AUTH", pivclient.SlotSignature: "SIGN", pivclient.SlotKeyManagement: "KEY MAN"} {
		nick := token + ":Certificate for " + label
		if !appsNSSHasCert(out, nick) {
			t.Errorf("certutil -L -h all lacks %q:\n%s", nick, out)
			continue
		}
		// certutil looks a nickname up with no password argument, so on a token that requires
		// login it would prompt on the terminal; -h TOKEN makes it log in first with -f.
		pemOut := appsRun(t, s, nil, peerCertutil.path, "-d", db, "-L", "-n", nick, "-h", token, "-a", "-f", pwfile)
		block, _ := pem.Decode([]byte(pemOut)) // skips the terminal noise before the block
		if block == nil || !bytes.Equal(block.Bytes, certs[slot].Raw) {
			t.Errorf("certutil -L -n %q -a is not the certificate of slot %x:\n%s", nick, slot, pemOut)
		}
	}
	if n := strings.Count(out, token+":"); n != 3 {
		t.Errorf("certutil -L -h all: %d certificates on the token, want 3:\n%s", n, out)
	}
}

// appsNSSKeys returns the keys certutil -K lists under token, as "type ckaid nickname".
func appsNSSKeys(out, token string) []string {
	var keys []string
	in := false
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "certutil: Checking token ") {
			in = strings.HasPrefix(line, fmt.Sprintf("certutil: Checking token %q", token))
			continue
		}
		_, rest, ok := strings.Cut(line, ">")
		if !in || !strings.HasPrefix(line, "<") || !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) >= 3 {
			keys = append(keys, strings.Join(f, " "))
		}
	}
	return keys
}

// appsNSSHasCert reports whether certutil -L lists a certificate with nickname nick.
func appsNSSHasCert(out, nick string) bool {
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, nick+"  ") {
			return true
		}
	}
	return false
}

// appsP11toolObject is one "Object N:" block of p11tool --list-all: URL, Type, Label, Flags, ID.
type appsP11toolObject map[string]string

type appsP11toolList []appsP11toolObject

func appsP11toolObjects(out string) appsP11toolList {
	var objs appsP11toolList
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "Object ") {
			objs = append(objs, appsP11toolObject{})
			continue
		}
		k, v, ok := strings.Cut(strings.TrimSpace(line), ": ")
		if ok && len(objs) > 0 && strings.HasPrefix(line, "\t") {
			objs[len(objs)-1][k] = strings.TrimSpace(v)
		}
	}
	return objs
}

// find returns the object with CKA_ID id (hex) and URL type typ (private, public, cert).
func (l appsP11toolList) find(id, typ string) appsP11toolObject {
	for _, o := range l {
		if strings.Contains(o["URL"], ";id=%"+id+";") && strings.HasSuffix(o["URL"], ";type="+typ) {
			return o
		}
	}
	return nil
}

func (l appsP11toolList) String() string {
	var b strings.Builder
	for _, o := range l {
		fmt.Fprintf(&b, "%s\t%s\t%s\t%s\n", o["URL"], o["Type"], o["Label"], o["Flags"])
	}
	return b.String()
}

// appsSSHKeygenKeys runs `ssh-keygen -D` and returns its key lines by wire-format public key.
func appsSSHKeygenKeys(t *testing.T, s *p11Server) map[string]string {
	t.Helper()
	out := s.run(t, peerSSHKeygen.path, "-D", "{module}")
	keys := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		k, _, _, _, err := gossh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			t.Errorf("ssh-keygen -D: %q: %v", line, err)
			continue
		}
		if _, dup := keys[string(k.Marshal())]; dup {
			t.Errorf("ssh-keygen -D printed a key twice: %s", line)
		}
		keys[string(k.Marshal())] = line
	}
	if len(keys) == 0 {
		t.Fatalf("ssh-keygen -D printed no key:\n%s", out)
	}
	return keys
}

// appsSSHD is an OpenSSH server the test started on loopback with a private configuration.
type appsSSHD struct {
	port    int
	user    string
	log     string
	hostPub string // the host key's .pub file
}

// appsStartSSHD starts /usr/sbin/sshd in the foreground on a free loopback port, accepting only
// authorizedKey for the user running the test, and stops it when the test ends. Everything it
// reads or writes is in a temporary directory (ike-ssh.md §4.4); as root it needs Debian's
// privilege-separation directory /run/sshd, which the openssh-server service normally creates.
func appsStartSSHD(t *testing.T, authorizedKey string) *appsSSHD {
	t.Helper()
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	hostKey := filepath.Join(dir, "ssh_host_ed25519_key")
	run(t, peerSSHKeygen.path, "-q", "-t", "ed25519", "-N", "", "-f", hostKey)
	authorized := filepath.Join(dir, "authorized_keys")
	appsWrite(t, authorized, authorizedKey+"\n", 0o600)
	port := appsFreePort(t)
	config := filepath.Join(dir, "sshd_config")
	// StrictModes no: the temporary directory is under the world-writable /tmp.
	appsWrite(t, config, fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s
PidFile %s
AuthorizedKeysFile %s
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AllowUsers %s
LogLevel VERBOSE
`, port, hostKey, filepath.Join(dir, "sshd.pid"), authorized, u.Username), 0o600)
	run(t, peerSSHD.path, "-t", "-f", config)

	d := &appsSSHD{port: port, user: u.Username, log: filepath.Join(dir, "sshd.log"), hostPub: hostKey + ".pub"}
	logf, err := os.Create(d.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(peerSSHD.path, "-D", "-e", "-f", config)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("sshd ignored SIGTERM for 5s and was killed")
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !listening(port) {
		select {
		case err := <-done:
			t.Fatalf("sshd exited at start (%v):\n%s", err, tail(d.log, 20))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd did not listen on port %d within 10s:\n%s", port, tail(d.log, 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return d
}

// appsFreePort returns a loopback TCP port that was free a moment ago.
func appsFreePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// appsEvent is one line of the server's JSON-lines audit log.
type appsEvent struct {
	Time        time.Time `json:"time"`
	Kind        string    `json:"kind"`
	Application string    `json:"application"`
	Token       string    `json:"token"`
	Slot        string    `json:"slot"`
	Reason      string    `json:"reason"`
}

func (e appsEvent) String() string {
	return fmt.Sprintf("%s %s slot=%q reason=%q", e.Application, e.Kind, e.Slot, e.Reason)
}

type appsEvents []appsEvent

// has reports whether an event of kind happened, for slot and with reason when they are not "".
func (l appsEvents) has(kind, slot, reason string) bool {
	for _, e := range l {
		if e.Kind == kind && (slot == "" || e.Slot == slot) && (reason == "" || e.Reason == reason) {
			return true
		}
	}
	return false
}

func (l appsEvents) String() string {
	var b strings.Builder
	for _, e := range l {
		b.WriteString(e.String() + "\n")
	}
	return b.String()
}

// appsAudit reads the audit log; a missing file is an empty log.
func appsAudit(t *testing.T, path string) appsEvents {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var events appsEvents
	for _, line := range bytes.Split(b, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var e appsEvent
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatalf("audit log %s: %q: %v", path, line, err)
		}
		events = append(events, e)
	}
	return events
}

// appsHasLine reports whether out has a line equal to want.
func appsHasLine(out, want string) bool {
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == want {
			return true
		}
	}
	return false
}

// appsLineWith reports whether out has a line holding every one of parts.
func appsLineWith(out string, parts ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		n := 0
		for _, p := range parts {
			if strings.Contains(line, p) {
				n++
			}
		}
		if n == len(parts) {
			return true
		}
	}
	return false
}

func appsWrite(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// appsRun runs a PKCS#11 application like p11Server.run, with extra environment variables, no
// standard input and no controlling terminal (so that OpenSSH uses SSH_ASKPASS).
func appsRun(t testing.TB, s *p11Server, env []string, name string, args ...string) string {
	t.Helper()
	out, err := appsRunErr(s, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s\n--- tokenlab serve ---\n%s", name, strings.Join(args, " "), err, out, s.log)
	}
	return out
}

func appsRunErr(s *p11Server, env []string, name string, args ...string) (string, error) {
	args = append([]string(nil), args...)
	for i, a := range args {
		args[i] = strings.ReplaceAll(a, "{module}", peerP11KitClient.path)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(s.Env(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// appsCertificates reads the certificates of slots 9A, 9C and 9D and the serial number from the
// card's state directory, without going through PKCS#11.
func appsCertificates(t *testing.T, dir string) (map[byte]*x509.Certificate, uint32) {
	t.Helper()
	d, err := yubikey.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c := pivclient.New(d.Card)
	ctx := context.Background()
	if _, err := c.Select(ctx); err != nil {
		t.Fatal(err)
	}
	certs := map[byte]*x509.Certificate{}
	for _, slot := range []byte{pivclient.SlotAuthentication, pivclient.SlotSignature, pivclient.SlotKeyManagement} {
		cert, err := c.Certificate(ctx, slot)
		if err != nil {
			t.Fatalf("certificate of slot %x: %v", slot, err)
		}
		certs[slot] = cert
	}
	return certs, d.Serial()
}
