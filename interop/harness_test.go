// Package interop tests tokenlab against the real host software it emulates a YubiKey for:
// pcscd with vsmartcard's vpcd driver, OpenSC, yubico-piv-tool, ykcs11, ykman and piv-go.
// Everything runs in one package because pcscd is one per machine.
package interop

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The vpcd reader. "Yubico YubiKey" and "Yubico" prefix satisfy yubico-piv-tool, ykcs11 2.2 and
// piv-go's reader filters; "CCID" lets ykman 4.0.9 derive a USB PID from the name (without an
// interface name it fails with KeyError 'YK4_').
const (
	readerName = "Yubico YubiKey CCID (tokenlab)"
	reader0    = readerName + " 00 00"
	vpcdPort   = 35963
)

var (
	tokenlabBin string // built once by TestMain
	pcscdErr    error  // why pcscd did not start, reported by the tests that need it
	pcscdLog    string
	pcscdDir    string
	thePcscd    *pcscd // the tests' pcscd; restartPcscd replaces it
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "tokenlab-interop-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	tokenlabBin = filepath.Join(tmp, "tokenlab")
	build := exec.Command("go", "build", "-o", tokenlabBin, "tokenlab/cmd/tokenlab")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building tokenlab: %v\n%s", err, out)
		return 1
	}
	pcscdDir = filepath.Join(tmp, "pcscd")
	p, err := startPcscd(pcscdDir)
	if err != nil {
		pcscdErr = err
	} else {
		pcscdLog, thePcscd = p.log, p
		defer func() {
			if thePcscd == nil {
				return
			}
			if err := thePcscd.stop(); err != nil {
				fmt.Fprintln(os.Stderr, "stopping pcscd:", err)
			}
		}()
	}
	return m.Run()
}

// pcscd is a pcscd process the tests started, with a private reader configuration.
type pcscd struct {
	cmd  *exec.Cmd
	done chan error
	log  string
}

const (
	pcscdSocket = "/run/pcscd/pcscd.comm"
	pcscdPID    = "/run/pcscd/pcscd.pid"
)

// startPcscd starts pcscd in the foreground with one vpcd reader on vpcdPort, and waits until it
// listens there (vsmartcard reference: no-systemd bring-up).
func startPcscd(dir string) (*pcscd, error) {
	for _, p := range []peer{peerPcscd, peerVpcdDriver} {
		if err := find(p); err != nil {
			return nil, fmt.Errorf("%s is missing: install the Debian package %s (make peers does)", p.path, p.pkg)
		}
	}
	if pid, alive := runningPcscd(); alive {
		return nil, fmt.Errorf("a pcscd (pid %d) is already running; the interop tests need their own (stop it first)", pid)
	}
	// A killed pcscd leaves its socket and pid file behind, and a new one refuses to start.
	os.Remove(pcscdSocket)
	os.Remove(pcscdPID)

	conf := filepath.Join(dir, "reader.conf.d")
	if err := os.MkdirAll(conf, 0o755); err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf("FRIENDLYNAME \"%s\"\nDEVICENAME /dev/null:%d\nLIBPATH %s\nCHANNELID %d\n",
		readerName, vpcdPort, peerVpcdDriver.path, vpcdPort)
	if err := os.WriteFile(filepath.Join(conf, "vpcd"), []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "pcscd.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	// --apdu logs every exchange: the host-side view of the card, printed when a test fails.
	cmd := exec.Command(peerPcscd.path, "--foreground", "--debug", "--apdu", "--config", conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &pcscd{cmd: cmd, done: make(chan error, 1), log: logPath}
	go func() { p.done <- cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-p.done:
			return nil, fmt.Errorf("pcscd exited at start (%v):\n%s", err, tail(logPath, 20))
		default:
		}
		if _, err := os.Stat(pcscdSocket); err == nil && listening(vpcdPort) {
			return p, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.stop()
	return nil, fmt.Errorf("pcscd did not listen on vpcd port %d within 10s:\n%s", vpcdPort, tail(logPath, 20))
}

// stop ends pcscd with SIGTERM (it removes its files then), or SIGKILL after 5 seconds.
func (p *pcscd) stop() error {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(5 * time.Second):
	}
	p.cmd.Process.Kill()
	<-p.done
	os.Remove(pcscdSocket)
	os.Remove(pcscdPID)
	return errors.New("pcscd ignored SIGTERM for 5s and was killed")
}

// runningPcscd finds a live pcscd process. It scans /proc rather than trusting
// /run/pcscd/pcscd.pid, which another pcscd's exit may have removed.
func runningPcscd() (int, bool) {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || !bytes.Contains(stat, []byte("(pcscd)")) {
			continue
		}
		// A zombie still answers kill(pid, 0) but holds nothing.
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) > 0 && fields[0] != "Z" {
			return pid, true
		}
	}
	return 0, false
}

// listening reports whether a TCP port is in LISTEN state, from /proc/net. It must not connect:
// a connection to a vpcd port is a card insertion.
func listening(port int) bool {
	want := fmt.Sprintf(":%04X", port)
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 3 && fields[3] == "0A" && strings.HasSuffix(fields[1], want) {
				return true
			}
		}
	}
	return false
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// stopPcscd stops the tests' pcscd, as if it went away under its clients; startPcscdAgain
// brings it back. A test that stops it must start it again, or the later tests fail.
func stopPcscd(t testing.TB) {
	t.Helper()
	needPcscd(t)
	err := thePcscd.stop()
	thePcscd = nil
	if err != nil {
		t.Fatal(err)
	}
}

func startPcscdAgain(t testing.TB) {
	t.Helper()
	p, err := startPcscd(pcscdDir)
	if err != nil {
		pcscdErr = fmt.Errorf("pcscd did not come back after a test stopped it: %w", err)
		t.Fatal(pcscdErr)
	}
	pcscdLog, thePcscd = p.log, p
}

// needPcscd fails the test when pcscd could not be started.
func needPcscd(t testing.TB) {
	t.Helper()
	if pcscdErr != nil {
		t.Fatal(pcscdErr)
	}
}

// server is a `tokenlab serve` process plugged into the test's pcscd.
type server struct {
	cmd  *exec.Cmd
	done chan error
	log  *bytes.Buffer
}

// serve starts `tokenlab serve` on the card in dir and waits until pcscd sees the card. The
// card is stopped with SIGTERM when the test ends, and must exit cleanly.
func serve(t *testing.T, dir string, args ...string) *server {
	t.Helper()
	needPcscd(t)
	s := startServe(t, dir, args...)
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("tokenlab serve: %v\n%s", err, s.log)
		}
		// pcscd notices the removal on its next poll; the next test must not meet a stale card.
		waitCard(t, false)
	})
	waitCard(t, true)
	return s
}

func startServe(t *testing.T, dir string, args ...string) *server {
	t.Helper()
	var log bytes.Buffer
	args = append([]string{"serve", "--state", dir, "--vpcd", fmt.Sprintf("127.0.0.1:%d", vpcdPort)}, args...)
	cmd := exec.Command(tokenlabBin, args...)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{cmd: cmd, done: make(chan error, 1), log: &log}
	go func() { s.done <- cmd.Wait() }()
	return s
}

// stop sends SIGTERM and expects a clean exit within 5 seconds; the card leaves the reader.
func (s *server) stop() error {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		if err != nil {
			return fmt.Errorf("exit after SIGTERM: %v", err)
		}
		return nil
	case <-time.After(5 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
		return errors.New("did not stop within 5s of SIGTERM")
	}
}

// waitCard waits until pcscd reports the card present (or absent) in reader 0.
func waitCard(t testing.TB, present bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _ := exec.Command("opensc-tool", "-l").CombinedOutput()
		if cardPresent(string(out)) == present {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("card present=%v not reached in 10s; opensc-tool -l said:\n%s", present, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cardPresent parses `opensc-tool -l`: "0    Yes             Yubico YubiKey CCID (tokenlab) 00 00".
func cardPresent(list string) bool {
	for _, line := range strings.Split(list, "\n") {
		if strings.HasSuffix(strings.TrimSpace(line), reader0) {
			f := strings.Fields(line)
			return len(f) > 1 && f[1] == "Yes"
		}
	}
	return false
}

// run runs a peer program with a timeout and returns its combined output; failure fails the
// test with the output and the last APDUs pcscd saw.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := runErr(name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s\n--- pcscd (last APDUs) ---\n%s", name, strings.Join(args, " "), err, out, lastAPDUs(30))
	}
	return out
}

func runErr(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func lastAPDUs(n int) string {
	if pcscdLog == "" {
		return "(no pcscd log)"
	}
	b, _ := os.ReadFile(pcscdLog)
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "APDU: ") || strings.Contains(l, "SW: ") {
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
