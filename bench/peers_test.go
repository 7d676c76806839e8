package bench

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"tokenlab/emulator/yubikey"
	"tokenlab/middleware"
	"tokenlab/pkcs11srv"
	"tokenlab/pkcs11srv/p11rpc"
)

// The PKCS#11 peers are set up at most once per test binary, on first use by a benchmark, and
// stopped by TestMain: `go test ./...` without -bench starts nothing.

// peer is a program or library a benchmark needs, and the Debian package that provides it.
type peer struct {
	path string // absolute path, or a name looked up in PATH
	pkg  string
}

var (
	peerP11KitClient = peer{"/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so", "p11-kit-modules"}
	peerP11Kit       = peer{"p11-kit", "p11-kit"}
	peerSoftHSM      = peer{"/usr/lib/softhsm/libsofthsm2.so", "softhsm2"}
	peerSoftHSMUtil  = peer{"softhsm2-util", "softhsm2"}
)

// need reports the first missing peer, naming the package to install. Benchmarks fail on it;
// they never skip.
func need(peers ...peer) error {
	for _, p := range peers {
		var err error
		if filepath.IsAbs(p.path) {
			_, err = os.Stat(p.path)
		} else {
			_, err = exec.LookPath(p.path)
		}
		if err != nil {
			return fmt.Errorf("%s is missing: install the Debian package %s (make peers does)", p.path, p.pkg)
		}
	}
	return nil
}

const (
	userPIN = "123456"
	keyID   = 0x01 // CKA_ID of the P-256 key: PIV slot 9A on tokenlab
)

// oidP256 is CKA_EC_PARAMS of a P-256 key: the DER OID of prime256v1.
var oidP256 = []byte{0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07}

// application is one application's PKCS#11 calls, on one of the paths the benchmarks compare.
// Handles are CK_ULONG.
type application interface {
	OpenSession() (uint64, error)
	Login(s uint64) error
	// FindKey finds the private key with CKA_ID 01: C_FindObjectsInit, C_FindObjects,
	// C_FindObjectsFinal.
	FindKey(s uint64) (uint64, error)
	// Sign is C_SignInit(CKM_ECDSA), C_Sign with a NULL buffer (the size), then C_Sign: what
	// miekg/pkcs11's Sign does.
	Sign(s, key uint64, digest []byte) ([]byte, error)
	SessionInfo(s uint64) error
	Logout(s uint64) error
	CloseSession(s uint64) error
}

// lazy is a value made once, on first use.
type lazy[T any] struct {
	once sync.Once
	v    T
	err  error
}

func (l *lazy[T]) get(f func() (T, error)) (T, error) {
	l.once.Do(func() { l.v, l.err = f() })
	return l.v, l.err
}

// peers holds what the benchmarks of this binary started, and undoes it in TestMain.
var peers struct {
	mu      sync.Mutex
	cleanup []func() error
	env     sync.Mutex // P11_KIT_SERVER_ADDRESS is read by p11-kit-client's C_GetFunctionList

	tmp      lazy[string]
	tokenlab lazy[*tokenlabServer]
	softhsm  lazy[*softhsmToken]
	p11kit   lazy[*process] // `p11-kit server` in front of SoftHSM
	inproc   lazy[*inprocServer]
}

// atExit registers f to run after the benchmarks, in reverse order of registration.
func atExit(f func() error) {
	peers.mu.Lock()
	defer peers.mu.Unlock()
	peers.cleanup = append(peers.cleanup, f)
}

func TestMain(m *testing.M) {
	code := m.Run()
	peers.mu.Lock()
	for i := len(peers.cleanup) - 1; i >= 0; i-- {
		if err := peers.cleanup[i](); err != nil {
			fmt.Fprintln(os.Stderr, "bench: stopping peers:", err)
			code = max(code, 1)
		}
	}
	peers.mu.Unlock()
	os.Exit(code)
}

// tempDir is this binary's scratch directory, short enough for socket paths (108 bytes).
func tempDir() (string, error) {
	return peers.tmp.get(func() (string, error) {
		dir, err := os.MkdirTemp("", "tokenlab-bench-")
		if err != nil {
			return "", err
		}
		atExit(func() error { return os.RemoveAll(dir) })
		return dir, nil
	})
}

// process is a daemon a benchmark started; it is stopped by its PID.
type process struct {
	name string
	// exitCode is its status after SIGTERM: 0 for tokenlab, which must stop cleanly; `p11-kit
	// server` always answers SIGTERM with 255.
	exitCode int
	cmd      *exec.Cmd
	done     chan error
	log      bytes.Buffer // read only once the process has exited
}

// start starts a daemon and waits until it listens on socket.
func start(name, socket string, exitCode int, env []string, argv ...string) (*process, error) {
	p := &process{name: name, exitCode: exitCode, done: make(chan error, 1)}
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.log, &p.log
	// Should the benchmark die without TestMain's clean-up, the daemon goes with it.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	for deadline := time.Now().Add(10 * time.Second); ; {
		if fi, err := os.Stat(socket); err == nil && fi.Mode()&os.ModeSocket != 0 {
			atExit(p.stop)
			return p, nil
		}
		select {
		case err := <-p.done:
			return nil, fmt.Errorf("%s exited before listening: %v\n%s", name, err, &p.log)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.cmd.Process.Kill()
			<-p.done
			return nil, fmt.Errorf("%s: no socket %s after 10s\n%s", name, socket, &p.log)
		}
	}
}

// stop sends SIGTERM to the daemon's PID and expects a clean exit within 5 seconds.
func (p *process) stop() error {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if st := p.cmd.ProcessState; st.ExitCode() != p.exitCode {
			return fmt.Errorf("%s (pid %d) after SIGTERM: %v, want exit status %d\n%s", p.name, st.Pid(), st, p.exitCode, &p.log)
		}
		return nil
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s (pid %d) did not stop within 5s of SIGTERM\n%s", p.name, p.cmd.Process.Pid, &p.log)
	}
}

// cpuTime returns the CPU time, user and system, that all threads of a process have used.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// proc(5): after "pid (comm)" come state, ppid, … utime (field 14) and stime (15), in
	// clock ticks of USER_HZ, 100 on Linux.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	var ticks time.Duration
	for _, v := range f[11:13] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += time.Duration(n)
	}
	return ticks * time.Second / 100, nil
}

// children returns the PIDs of a process's children: the p11-kit-remote processes of `p11-kit
// server`, one per connection.
func children(pid int) ([]int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return nil, err
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

func run(name string, env []string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

// tokenlabServer is a `tokenlab serve` process with a fresh card holding a P-256 key in 9A
// (CKA_ID 01), generated through PKCS#11.
type tokenlabServer struct {
	proc   *process
	socket string
	pub    *ecdsa.PublicKey
}

func tokenlab() (*tokenlabServer, error) {
	return peers.tokenlab.get(func() (*tokenlabServer, error) {
		if err := need(peerP11KitClient); err != nil {
			return nil, err
		}
		tmp, err := tempDir()
		if err != nil {
			return nil, err
		}
		bin := filepath.Join(tmp, "tokenlab")
		if err := run("go", nil, "build", "-o", bin, "tokenlab/cmd/tokenlab"); err != nil {
			return nil, err
		}
		state := filepath.Join(tmp, "card")
		if err := run(bin, nil, "card", "init", "--state", state); err != nil {
			return nil, err
		}
		socket := filepath.Join(tmp, "tokenlab.sock")
		proc, err := start("tokenlab serve", socket, 0, nil, bin, "serve", "--state", state, "--vpcd", "off", "--pkcs11", socket)
		if err != nil {
			return nil, err
		}
		m, err := openModule(peerP11KitClient.path, socket, "")
		if err != nil {
			return nil, err
		}
		defer m.close()
		pub, err := m.generateKey()
		if err != nil {
			return nil, fmt.Errorf("tokenlab: generating the P-256 key through p11-kit-client: %w", err)
		}
		return &tokenlabServer{proc: proc, socket: socket, pub: pub}, nil
	})
}

// softhsmToken is a SoftHSM2 token "perf" in a private token directory, with a P-256 key
// (CKA_ID 01), and the module loaded into this process. SoftHSM initializes once per process,
// so every benchmark shares this one application.
type softhsmToken struct {
	conf   string // SOFTHSM2_CONF
	module *module
	pub    *ecdsa.PublicKey
}

const softhsmLabel = "perf"

func softhsm() (*softhsmToken, error) {
	return peers.softhsm.get(func() (*softhsmToken, error) {
		if err := need(peerSoftHSM, peerSoftHSMUtil); err != nil {
			return nil, err
		}
		tmp, err := tempDir()
		if err != nil {
			return nil, err
		}
		tokens := filepath.Join(tmp, "softhsm-tokens")
		if err := os.Mkdir(tokens, 0o700); err != nil {
			return nil, err
		}
		conf := filepath.Join(tmp, "softhsm2.conf")
		text := "directories.tokendir = " + tokens + "\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			return nil, err
		}
		// The module in this process reads it at C_Initialize; children inherit it.
		os.Setenv("SOFTHSM2_CONF", conf)
		if err := run("softhsm2-util", nil, "--init-token", "--free", "--label", softhsmLabel, "--pin", userPIN, "--so-pin", "12345678"); err != nil {
			return nil, err
		}
		m, err := openModule(peerSoftHSM.path, "", softhsmLabel)
		if err != nil {
			return nil, err
		}
		atExit(m.close)
		pub, err := m.generateKey()
		if err != nil {
			return nil, fmt.Errorf("softhsm: generating the P-256 key: %w", err)
		}
		return &softhsmToken{conf: conf, module: m, pub: pub}, nil
	})
}

// p11kitServer starts `p11-kit server` exporting the SoftHSM token: one p11-kit-remote
// process, with its own SoftHSM, per connection. It returns the server and its socket.
func p11kitServer() (*process, string, error) {
	p, err := peers.p11kit.get(func() (*process, error) {
		if err := need(peerP11Kit, peerP11KitClient); err != nil {
			return nil, err
		}
		hsm, err := softhsm()
		if err != nil {
			return nil, err
		}
		tmp, err := tempDir()
		if err != nil {
			return nil, err
		}
		socket := p11kitSocket(tmp)
		return start("p11-kit server", socket, 255, []string{"SOFTHSM2_CONF=" + hsm.conf},
			"p11-kit", "server", "--foreground", "--provider", peerSoftHSM.path, "--name", socket, "pkcs11:token="+softhsmLabel)
	})
	if err != nil {
		return nil, "", err
	}
	tmp, _ := tempDir()
	return p, p11kitSocket(tmp), nil
}

func p11kitSocket(tmp string) string { return filepath.Join(tmp, "p11kit.sock") }

// inprocServer is the PKCS#11 server of `tokenlab serve` running in this process, over an
// in-process card with a state directory (so a VERIFY is persisted, as in the daemon), and
// listening on a Unix socket of its own.
type inprocServer struct {
	srv    *pkcs11srv.Server
	socket string
	pub    *ecdsa.PublicKey
}

func inproc() (*inprocServer, error) {
	return peers.inproc.get(func() (*inprocServer, error) {
		tmp, err := tempDir()
		if err != nil {
			return nil, err
		}
		d, err := yubikey.Init(filepath.Join(tmp, "inproc-card"), yubikey.Options{}, false)
		if err != nil {
			return nil, err
		}
		atExit(d.Close)
		policy, err := middleware.Profile("strict-2fa") // tokenlab serve's default
		if err != nil {
			return nil, err
		}
		srv := pkcs11srv.New(pkcs11srv.Config{Reader: d.Card, Policy: policy})
		a := newApp(srv)
		defer a.close()
		pub, err := a.generateKey()
		if err != nil {
			return nil, fmt.Errorf("in-process server: generating the P-256 key: %w", err)
		}
		socket := filepath.Join(tmp, "inproc.sock")
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ctx, ln) }()
		atExit(func() error {
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				return err
			}
			return nil
		})
		return &inprocServer{srv: srv, socket: socket, pub: pub}, nil
	})
}

// module is an application that loaded a PKCS#11 module with miekg/pkcs11: a C_GetFunctionList
// of its own, hence for p11-kit-client.so a connection of its own.
type module struct {
	ctx  *pkcs11.Ctx
	slot uint
	mech []*pkcs11.Mechanism
	key  []*pkcs11.Attribute // the template FindKey searches with
}

// openModule loads and initializes a module. socket is the P11_KIT_SERVER_ADDRESS path for
// p11-kit-client.so; label picks the token's slot ("" is the first slot with a token).
func openModule(path, socket, label string) (*module, error) {
	peers.env.Lock()
	if socket != "" {
		os.Setenv("P11_KIT_SERVER_ADDRESS", "unix:path="+socket)
	}
	ctx := pkcs11.New(path)
	peers.env.Unlock()
	if ctx == nil {
		return nil, fmt.Errorf("%s: cannot load the module", path)
	}
	if err := ctx.Initialize(); err != nil {
		ctx.Destroy()
		return nil, fmt.Errorf("%s: C_Initialize: %w", path, err)
	}
	m := &module{
		ctx:  ctx,
		mech: []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil)},
		key: []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
			pkcs11.NewAttribute(pkcs11.CKA_ID, []byte{keyID}),
		},
	}
	slots, err := ctx.GetSlotList(true)
	if err == nil && len(slots) == 0 {
		err = errors.New("no slot with a token")
	}
	for i, s := range slots {
		if label == "" {
			m.slot = s
			break
		}
		var info pkcs11.TokenInfo
		if info, err = ctx.GetTokenInfo(s); err == nil && info.Label == label {
			m.slot = s
			break
		}
		if i == len(slots)-1 {
			err = fmt.Errorf("no token labelled %q", label)
		}
	}
	if err != nil {
		m.close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

func (m *module) close() error {
	err := m.ctx.Finalize()
	m.ctx.Destroy()
	return err
}

func (m *module) OpenSession() (uint64, error) {
	s, err := m.ctx.OpenSession(m.slot, pkcs11.CKF_SERIAL_SESSION)
	return uint64(s), err
}

func (m *module) Login(s uint64) error {
	return m.ctx.Login(pkcs11.SessionHandle(s), pkcs11.CKU_USER, userPIN)
}

func (m *module) FindKey(s uint64) (uint64, error) {
	return m.find(pkcs11.SessionHandle(s), m.key)
}

func (m *module) find(s pkcs11.SessionHandle, tmpl []*pkcs11.Attribute) (uint64, error) {
	if err := m.ctx.FindObjectsInit(s, tmpl); err != nil {
		return 0, err
	}
	objs, _, err := m.ctx.FindObjects(s, 1)
	if err := errors.Join(err, m.ctx.FindObjectsFinal(s)); err != nil {
		return 0, err
	}
	if len(objs) != 1 {
		return 0, errors.New("no key with CKA_ID 01")
	}
	return uint64(objs[0]), nil
}

func (m *module) Sign(s, key uint64, digest []byte) ([]byte, error) {
	if err := m.ctx.SignInit(pkcs11.SessionHandle(s), m.mech, pkcs11.ObjectHandle(key)); err != nil {
		return nil, err
	}
	return m.ctx.Sign(pkcs11.SessionHandle(s), digest)
}

func (m *module) SessionInfo(s uint64) error {
	_, err := m.ctx.GetSessionInfo(pkcs11.SessionHandle(s))
	return err
}

func (m *module) Logout(s uint64) error { return m.ctx.Logout(pkcs11.SessionHandle(s)) }

func (m *module) CloseSession(s uint64) error { return m.ctx.CloseSession(pkcs11.SessionHandle(s)) }

// generateKey makes the P-256 key pair with CKA_ID 01 in a R/W user session, as pkcs11-tool
// --keypairgen does, and returns its public key.
func (m *module) generateKey() (*ecdsa.PublicKey, error) {
	s, err := m.ctx.OpenSession(m.slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return nil, err
	}
	defer m.ctx.CloseSession(s)
	if err := m.ctx.Login(s, pkcs11.CKU_USER, userPIN); err != nil {
		return nil, err
	}
	defer m.ctx.Logout(s)
	pubT := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
		pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, oidP256),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, "p256"),
		pkcs11.NewAttribute(pkcs11.CKA_ID, []byte{keyID}),
	}
	privT := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, "p256"),
		pkcs11.NewAttribute(pkcs11.CKA_ID, []byte{keyID}),
	}
	pubH, _, err := m.ctx.GenerateKeyPair(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_EC_KEY_PAIR_GEN, nil)}, pubT, privT)
	if err != nil {
		return nil, err
	}
	attrs, err := m.ctx.GetAttributeValue(s, pubH, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, nil)})
	if err != nil {
		return nil, err
	}
	return parseECPoint(attrs[0].Value)
}

// parseECPoint decodes CKA_EC_POINT of a P-256 key: a DER OCTET STRING around the
// uncompressed point.
func parseECPoint(der []byte) (*ecdsa.PublicKey, error) {
	var point []byte
	if rest, err := asn1.Unmarshal(der, &point); err != nil || len(rest) > 0 {
		return nil, fmt.Errorf("CKA_EC_POINT % x is not a DER OCTET STRING", der)
	}
	return ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
}

// checkSignature verifies a PKCS#11 ECDSA signature (r || s).
func checkSignature(pub *ecdsa.PublicKey, digest, sig []byte) error {
	if len(sig) != 64 {
		return fmt.Errorf("signature of %d bytes, want 64", len(sig))
	}
	if !ecdsa.Verify(pub, digest, new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		return errors.New("signature does not verify")
	}
	return nil
}

// app is an application of the in-process pkcs11srv.Server, called directly: the PKCS#11
// layer without RPC.
type app struct {
	a   *pkcs11srv.App
	ctx context.Context
}

func newApp(srv *pkcs11srv.Server) *app {
	a := &app{a: srv.NewApp("bench"), ctx: context.Background()}
	a.a.Initialize()
	return a
}

func (a *app) close() error { a.a.Close(a.ctx); return nil }

var (
	ecdsaMechanism = pkcs11srv.Mechanism{Type: pkcs11.CKM_ECDSA}
	keyTemplate    = []pkcs11srv.Attribute{
		p11rpc.UlongAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		p11rpc.BytesAttribute(pkcs11.CKA_ID, []byte{keyID}),
	}
)

func (a *app) OpenSession() (uint64, error) {
	return a.a.OpenSession(a.ctx, 0, pkcs11.CKF_SERIAL_SESSION)
}

func (a *app) Login(s uint64) error { return a.a.Login(a.ctx, s, pkcs11.CKU_USER, []byte(userPIN)) }

func (a *app) FindKey(s uint64) (uint64, error) {
	if err := a.a.FindObjectsInit(a.ctx, s, keyTemplate); err != nil {
		return 0, err
	}
	objs, err := a.a.FindObjects(s, 1)
	if err := errors.Join(err, a.a.FindObjectsFinal(s)); err != nil {
		return 0, err
	}
	if len(objs) != 1 {
		return 0, errors.New("no key with CKA_ID 01")
	}
	return objs[0], nil
}

func (a *app) Sign(s, key uint64, digest []byte) ([]byte, error) {
	if err := a.a.SignInit(a.ctx, s, ecdsaMechanism, key); err != nil {
		return nil, err
	}
	_, n, err := a.a.Sign(a.ctx, s, digest, 0)
	if err != nil {
		return nil, err
	}
	sig, _, err := a.a.Sign(a.ctx, s, digest, n)
	return sig, err
}

func (a *app) SessionInfo(s uint64) error { _, err := a.a.GetSessionInfo(s); return err }

func (a *app) Logout(s uint64) error { return a.a.Logout(a.ctx, s) }

func (a *app) CloseSession(s uint64) error { return a.a.CloseSession(a.ctx, s) }

func (a *app) generateKey() (*ecdsa.PublicKey, error) {
	s, err := a.a.OpenSession(a.ctx, 0, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return nil, err
	}
	defer a.CloseSession(s)
	if err := a.Login(s); err != nil {
		return nil, err
	}
	defer a.Logout(s)
	pubH, _, err := a.a.GenerateKeyPair(a.ctx, s, pkcs11srv.Mechanism{Type: pkcs11.CKM_EC_KEY_PAIR_GEN},
		[]pkcs11srv.Attribute{p11rpc.BytesAttribute(pkcs11.CKA_EC_PARAMS, oidP256), p11rpc.BytesAttribute(pkcs11.CKA_ID, []byte{keyID})},
		[]pkcs11srv.Attribute{p11rpc.BytesAttribute(pkcs11.CKA_ID, []byte{keyID})})
	if err != nil {
		return nil, err
	}
	res, err := a.a.GetAttributeValue(a.ctx, s, pubH, []pkcs11srv.AttributeRequest{{Type: pkcs11.CKA_EC_POINT, Capacity: 128}})
	if err != nil {
		return nil, err
	}
	return parseECPoint(res[0].Value)
}

// rpcClient is a p11-kit RPC client written in Go on the p11rpc codec: the server's side of
// the protocol measured without p11-kit-client.so and cgo. Unlike p11-kit-client, which writes
// header, options and body with three write()s, it writes each request with one.
type rpcClient struct {
	conn net.Conn
	c    *p11rpc.Client
}

// dialRPC connects to a p11-kit RPC server and calls C_Initialize.
func dialRPC(socket string) (*rpcClient, error) {
	conn, err := net.Dial("unix", socket)
	if err != nil {
		return nil, err
	}
	c, err := p11rpc.NewClient(conn, p11rpc.Protocol0)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return &rpcClient{conn: conn, c: c}, nil
}

// call sends one request and reads its reply; an ERROR reply is an error.
func (c *rpcClient) call(call p11rpc.Call, args func(*p11rpc.RequestWriter)) (*p11rpc.ResponseReader, error) {
	return c.c.Call(call, args)
}

// session calls a function of one session handle with no other argument and no result.
func (c *rpcClient) session(call p11rpc.Call, s uint64) error {
	_, err := c.call(call, func(w *p11rpc.RequestWriter) { w.Ulong(s) })
	return err
}

func (c *rpcClient) close() error {
	_, err := c.call(p11rpc.CallFinalize, nil)
	return errors.Join(err, c.conn.Close())
}

func (c *rpcClient) OpenSession() (uint64, error) {
	r, err := c.call(p11rpc.CallOpenSession, func(w *p11rpc.RequestWriter) {
		w.Ulong(0)
		w.Ulong(pkcs11.CKF_SERIAL_SESSION)
	})
	if err != nil {
		return 0, err
	}
	return r.Ulong()
}

func (c *rpcClient) Login(s uint64) error {
	_, err := c.call(p11rpc.CallLogin, func(w *p11rpc.RequestWriter) {
		w.Ulong(s)
		w.Ulong(pkcs11.CKU_USER)
		w.ByteArray([]byte(userPIN))
	})
	return err
}

func (c *rpcClient) FindKey(s uint64) (uint64, error) {
	if _, err := c.call(p11rpc.CallFindObjectsInit, func(w *p11rpc.RequestWriter) {
		w.Ulong(s)
		w.Attributes(keyTemplate)
	}); err != nil {
		return 0, err
	}
	r, err := c.call(p11rpc.CallFindObjects, func(w *p11rpc.RequestWriter) {
		w.Ulong(s)
		w.UlongBufferSize(1)
	})
	var objs []uint64
	if err == nil {
		objs, _, err = r.UlongArray()
	}
	if err := errors.Join(err, c.session(p11rpc.CallFindObjectsFinal, s)); err != nil {
		return 0, err
	}
	if len(objs) != 1 {
		return 0, errors.New("no key with CKA_ID 01")
	}
	return objs[0], nil
}

func (c *rpcClient) Sign(s, key uint64, digest []byte) ([]byte, error) {
	if _, err := c.call(p11rpc.CallSignInit, func(w *p11rpc.RequestWriter) {
		w.Ulong(s)
		w.Mechanism(p11rpc.Mechanism{Type: pkcs11.CKM_ECDSA})
		w.Ulong(key)
	}); err != nil {
		return nil, err
	}
	sign := func(capacity uint32) ([]byte, uint32, error) {
		r, err := c.call(p11rpc.CallSign, func(w *p11rpc.RequestWriter) {
			w.Ulong(s)
			w.ByteArray(digest)
			w.BufferSize(capacity)
		})
		if err != nil {
			return nil, 0, err
		}
		return r.ByteArray()
	}
	_, n, err := sign(0) // a NULL buffer: the size
	if err != nil {
		return nil, err
	}
	sig, _, err := sign(n)
	return sig, err
}

func (c *rpcClient) SessionInfo(s uint64) error {
	r, err := c.call(p11rpc.CallGetSessionInfo, func(w *p11rpc.RequestWriter) { w.Ulong(s) })
	if err != nil {
		return err
	}
	for range 4 { // slot, state, flags, device error
		if _, err := r.Ulong(); err != nil {
			return err
		}
	}
	return nil
}

func (c *rpcClient) Logout(s uint64) error { return c.session(p11rpc.CallLogout, s) }

func (c *rpcClient) CloseSession(s uint64) error { return c.session(p11rpc.CallCloseSession, s) }
