package bench

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The PKCS#11 benchmarks take a P-256 signature (CKM_ECDSA over a SHA-256 digest) along each of
// these paths, side by side in one run; the sub-benchmark key is via=:
//
//	softhsm          libsofthsm2.so loaded into this process (SoftHSM 2, OpenSSL)
//	softhsm-p11kit   p11-kit-client.so → `p11-kit server` → p11-kit-remote → libsofthsm2.so
//	tokenlab-p11kit  p11-kit-client.so → a `tokenlab serve` process: what applications use
//	tokenlab-gorpc   a Go p11-kit RPC client → the same process: the server without the C client
//	tokenlab-inproc  a Go p11-kit RPC client → tokenlab's PKCS#11 server in this process, on a
//	                 Unix socket: RPC codec and dispatch without a second process
//	tokenlab-app     pkcs11srv.App called directly: PKCS#11 over the middleware and the card
//
// The tokenlab cards have a state directory, as the daemon's has. Peers are started on first
// use (the first benchmark pays) and stopped by PID when the binary exits:
//
//	go test -run='^$' -bench=PKCS11 -benchmem -count=6 ./bench | tee p11.txt
//	benchstat -filter '.name:/PKCS11(Sign|Cycle|SessionInfo)/' -row .name \
//		-col '/via@(softhsm softhsm-p11kit tokenlab-p11kit tokenlab-gorpc tokenlab-inproc tokenlab-app)' p11.txt
//	benchstat -filter .name:PKCS11Apps -row /via -col /apps p11.txt

var (
	p11Digest = func() []byte { h := sha256.Sum256([]byte("tokenlab")); return h[:] }()

	signPaths = []string{"softhsm", "softhsm-p11kit", "tokenlab-p11kit", "tokenlab-gorpc", "tokenlab-inproc", "tokenlab-app"}
)

// openApp starts a new application on a path (for SoftHSM direct: the process's one
// application), ended at the end of the benchmark, and returns it with the token's public key.
func openApp(b *testing.B, via string) (application, *ecdsa.PublicKey) {
	b.Helper()
	var (
		a   application
		pub *ecdsa.PublicKey
		end func() error
		err error
	)
	switch via {
	case "softhsm":
		var hsm *softhsmToken
		if hsm, err = softhsm(); err == nil {
			a, pub = hsm.module, hsm.pub
		}
	case "softhsm-p11kit":
		var hsm *softhsmToken
		var socket string
		var m *module
		if hsm, err = softhsm(); err != nil {
			break
		}
		if _, socket, err = p11kitServer(); err != nil {
			break
		}
		if m, err = openModule(peerP11KitClient.path, socket, softhsmLabel); err == nil {
			a, pub, end = m, hsm.pub, m.close
		}
	case "tokenlab-p11kit", "tokenlab-gorpc":
		var srv *tokenlabServer
		if srv, err = tokenlab(); err != nil {
			break
		}
		pub = srv.pub
		if via == "tokenlab-p11kit" {
			var m *module
			if m, err = openModule(peerP11KitClient.path, srv.socket, ""); err == nil {
				a, end = m, m.close
			}
		} else {
			var c *rpcClient
			if c, err = dialRPC(srv.socket); err == nil {
				a, end = c, c.close
			}
		}
	case "tokenlab-inproc", "tokenlab-app":
		var srv *inprocServer
		if srv, err = inproc(); err != nil {
			break
		}
		pub = srv.pub
		if via == "tokenlab-inproc" {
			var c *rpcClient
			if c, err = dialRPC(srv.socket); err == nil {
				a, end = c, c.close
			}
		} else {
			x := newApp(srv.srv)
			a, end = x, x.close
		}
	default:
		err = fmt.Errorf("unknown path %q", via)
	}
	if err != nil {
		b.Fatalf("%s: %v", via, err)
	}
	if end != nil {
		b.Cleanup(func() {
			if err := end(); err != nil {
				b.Errorf("%s: ending the application: %v", via, err)
			}
		})
	}
	return a, pub
}

// measureCPU starts measuring CPU time; the function it returns reports it per operation:
// app-cpu-ns/op for this process (the application, with p11-kit-client.so or the in-process
// server) and, where via has one, srv-cpu-ns/op for the server process (`tokenlab serve`, or
// the p11-kit-remote processes with their SoftHSM). Wall time per operation hides the cost of
// each side behind the round trips; these do not, and their sum over the machine's cores is
// what bounds throughput when applications run in parallel. A server's time is read from /proc
// in ticks of 10ms: the metric wants runs of a second or more (the default -benchtime).
func measureCPU(b *testing.B, via string) func() {
	b.Helper()
	var servers []int
	switch via {
	case "tokenlab-p11kit", "tokenlab-gorpc":
		srv, err := tokenlab()
		if err != nil {
			b.Fatal(err)
		}
		servers = []int{srv.proc.cmd.Process.Pid}
	case "softhsm-p11kit":
		p, _, err := p11kitServer()
		if err == nil {
			servers, err = children(p.cmd.Process.Pid)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	cpu := func() (app time.Duration, srv map[int]time.Duration) {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			b.Fatal(err)
		}
		srv = map[int]time.Duration{}
		for _, pid := range servers {
			// A p11-kit-remote of an earlier benchmark's connection may be exiting: it is
			// not ours, and it counts for nothing.
			if t, err := cpuTime(pid); err == nil {
				srv[pid] = t
			}
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), srv
	}
	app0, srv0 := cpu()
	return func() {
		app, srv := cpu()
		b.ReportMetric(float64(app-app0)/float64(b.N), "app-cpu-ns/op")
		if servers != nil {
			var d time.Duration
			for pid, t := range srv {
				if t0, ok := srv0[pid]; ok {
					d += t - t0
				}
			}
			b.ReportMetric(float64(d)/float64(b.N), "srv-cpu-ns/op")
		}
	}
}

// signer is a logged-in session of one application, with the key found.
type signer struct {
	app          application
	session, key uint64
}

// login opens a session, logs in and finds the key; the benchmark's end logs out and closes.
// It checks one signature.
func login(b *testing.B, via string) signer {
	b.Helper()
	a, pub := openApp(b, via)
	s, err := a.OpenSession()
	if err != nil {
		b.Fatalf("%s: C_OpenSession: %v", via, err)
	}
	b.Cleanup(func() { a.CloseSession(s) })
	if err := a.Login(s); err != nil {
		b.Fatalf("%s: C_Login: %v", via, err)
	}
	b.Cleanup(func() { a.Logout(s) })
	key, err := a.FindKey(s)
	if err != nil {
		b.Fatalf("%s: finding the key: %v", via, err)
	}
	sig, err := a.Sign(s, key, p11Digest)
	if err == nil {
		err = checkSignature(pub, p11Digest, sig)
	}
	if err != nil {
		b.Fatalf("%s: sign: %v", via, err)
	}
	return signer{app: a, session: s, key: key}
}

func (s signer) sign() error {
	_, err := s.app.Sign(s.session, s.key, p11Digest)
	return err
}

// BenchmarkPKCS11Sign is one signature in a persistent logged-in session: C_SignInit, then
// C_Sign twice, because miekg/pkcs11's Sign asks for the size with a NULL buffer before it
// signs (v1.1.2). p11-kit-client forwards the size query too, so through it a signature is
// three RPC round trips. The tokenlab-* rows peel off one layer each: the C client, the second
// process, the RPC.
func BenchmarkPKCS11Sign(b *testing.B) {
	for _, via := range signPaths {
		b.Run("via="+via, func(b *testing.B) {
			s := login(b, via)
			b.ReportAllocs()
			report := measureCPU(b, via)
			for b.Loop() {
				if err := s.sign(); err != nil {
					b.Fatal(err)
				}
			}
			report()
		})
	}
}

// BenchmarkPKCS11Cycle is what an application that does not keep its session pays per
// signature: C_OpenSession, C_Login, a search by CKA_CLASS and CKA_ID, C_SignInit, C_Sign
// twice, C_Logout, C_CloseSession. SoftHSM invalidates private-key handles at logout, so the
// search is part of every cycle. tokenlab persists the PIN retry counter at each VERIFY, and
// its default profile (strict-2fa) resets the card at logout.
func BenchmarkPKCS11Cycle(b *testing.B) {
	for _, via := range []string{"softhsm", "softhsm-p11kit", "tokenlab-p11kit", "tokenlab-app"} {
		b.Run("via="+via, func(b *testing.B) {
			a, pub := openApp(b, via)
			sig, err := cycle(a)
			if err == nil {
				err = checkSignature(pub, p11Digest, sig)
			}
			if err != nil {
				b.Fatalf("%s: %v", via, err)
			}
			b.ReportAllocs()
			report := measureCPU(b, via)
			for b.Loop() {
				if _, err := cycle(a); err != nil {
					b.Fatal(err)
				}
			}
			report()
		})
	}
}

func cycle(a application) (sig []byte, err error) {
	s, err := a.OpenSession()
	if err != nil {
		return nil, fmt.Errorf("C_OpenSession: %w", err)
	}
	defer func() {
		if e := a.CloseSession(s); err == nil && e != nil {
			err = fmt.Errorf("C_CloseSession: %w", e)
		}
	}()
	if err := a.Login(s); err != nil {
		return nil, fmt.Errorf("C_Login: %w", err)
	}
	key, err := a.FindKey(s)
	if err == nil {
		sig, err = a.Sign(s, key, p11Digest)
	}
	if e := a.Logout(s); err == nil && e != nil {
		err = fmt.Errorf("C_Logout: %w", e)
	}
	return sig, err
}

// BenchmarkPKCS11SessionInfo is C_GetSessionInfo: through p11-kit-client it is one RPC round
// trip with no card work, the fixed cost each of the three calls of a signature pays.
func BenchmarkPKCS11SessionInfo(b *testing.B) {
	for _, via := range signPaths {
		b.Run("via="+via, func(b *testing.B) {
			a, _ := openApp(b, via)
			s, err := a.OpenSession()
			if err != nil {
				b.Fatalf("%s: C_OpenSession: %v", via, err)
			}
			b.Cleanup(func() { a.CloseSession(s) })
			b.ReportAllocs()
			report := measureCPU(b, via)
			for b.Loop() {
				if err := a.SessionInfo(s); err != nil {
					b.Fatal(err)
				}
			}
			report()
		})
	}
}

// BenchmarkPKCS11Apps is one application against two signing at once: each application is a
// module instance of its own (a miekg/pkcs11 context on p11-kit-client.so, hence a connection
// of its own) with its own logged-in session, and the applications split b.N between them.
// ns/op is wall time per signature, so apps=2 at half the ns/op of apps=1 is twice the
// throughput; sig/s says the same directly. Behind `p11-kit server` each connection gets a
// process and a SoftHSM of its own; tokenlab serves both from one card, which like a real one
// runs one command at a time: tokenlab-app, two Apps on the card with no RPC, shows what that
// card alone allows.
func BenchmarkPKCS11Apps(b *testing.B) {
	for _, via := range []string{"softhsm-p11kit", "tokenlab-p11kit", "tokenlab-app"} {
		for _, n := range []int{1, 2} {
			b.Run(fmt.Sprintf("via=%s/apps=%d", via, n), func(b *testing.B) {
				signers := make([]signer, n)
				for i := range signers {
					signers[i] = login(b, via)
				}
				b.ReportAllocs()
				report := measureCPU(b, via)
				b.ResetTimer()
				var wg sync.WaitGroup
				errs := make(chan error, n)
				for i, s := range signers {
					share := b.N / n
					if i == 0 {
						share += b.N % n
					}
					wg.Go(func() {
						for range share {
							if err := s.sign(); err != nil {
								errs <- err
								return
							}
						}
					})
				}
				wg.Wait()
				b.StopTimer()
				close(errs)
				for err := range errs {
					b.Fatal(err)
				}
				report()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sig/s")
			})
		}
	}
}
