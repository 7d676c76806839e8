package prompt

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestMain lets the test binary stand in for a pinentry: run with PROMPT_FAKE_PINENTRY set, it
// speaks Assuan on standard input and output instead of running tests.
func TestMain(m *testing.M) {
	if mode, ok := os.LookupEnv(fakeModeEnv); ok {
		os.Exit(fakePinentry(mode))
	}
	os.Exit(m.Run())
}

// checkGoroutines fails t if, once t and its cleanups registered later are done, more goroutines
// run than when it was called. Tests in this package do not run in parallel, so the count is
// theirs.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("%d goroutines left running, %d before the test:\n%s", n, before, buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// pty is a pseudo-terminal pair: the test types on master, the code under test opens name.
type pty struct {
	master *os.File
	slave  *os.File // kept open so the test can read the terminal's settings
	name   string
	out    bytes.Buffer // everything read from master so far
}

// openPTY opens a pseudo-terminal the way posix_openpt, unlockpt and ptsname do.
func openPTY(t *testing.T) *pty {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("opening a pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	// Not master.Fd(): that would make reads blocking, and readUntil relies on deadlines.
	rc, err := master.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var ioctlErr error
	if err := rc.Control(func(fd uintptr) {
		if ioctlErr = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); ioctlErr != nil {
			return
		}
		n, ioctlErr = unix.IoctlGetInt(int(fd), unix.TIOCGPTN)
	}); err != nil {
		t.Fatal(err)
	}
	if ioctlErr != nil {
		t.Fatalf("unlocking the pseudo-terminal: %v", ioctlErr)
	}
	name := fmt.Sprintf("/dev/pts/%d", n)
	slave, err := os.OpenFile(name, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("opening %s: %v", name, err)
	}
	t.Cleanup(func() { slave.Close() })
	return &pty{master: master, slave: slave, name: name}
}

// termios returns the terminal's current settings.
func (p *pty) termios(t *testing.T) unix.Termios {
	t.Helper()
	rc, err := p.slave.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var tio *unix.Termios
	var ioctlErr error
	if err := rc.Control(func(fd uintptr) { tio, ioctlErr = unix.IoctlGetTermios(int(fd), unix.TCGETS) }); err != nil {
		t.Fatal(err)
	}
	if ioctlErr != nil {
		t.Fatalf("reading the settings of %s: %v", p.name, ioctlErr)
	}
	return *tio
}

// pending returns the number of bytes typed but not yet read from the terminal.
func (p *pty) pending(t *testing.T) int {
	t.Helper()
	rc, err := p.slave.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var ioctlErr error
	if err := rc.Control(func(fd uintptr) { n, ioctlErr = unix.IoctlGetInt(int(fd), unix.TIOCINQ) }); err != nil {
		t.Fatal(err)
	}
	if ioctlErr != nil {
		t.Fatalf("reading the input queue length of %s: %v", p.name, ioctlErr)
	}
	return n
}

// readUntil reads from master until the output so far contains want, and returns that output.
func (p *pty) readUntil(t *testing.T, want string) string {
	t.Helper()
	p.master.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer p.master.SetReadDeadline(time.Time{})
	buf := make([]byte, 4096)
	for !strings.Contains(p.out.String(), want) {
		n, err := p.master.Read(buf)
		p.out.Write(buf[:n])
		if err != nil {
			t.Fatalf("waiting for %q on the terminal: %v; got %q", want, err, p.out.String())
		}
	}
	return p.out.String()
}

// drain reads whatever master has within a short while and returns all output so far.
func (p *pty) drain() string {
	p.master.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	defer p.master.SetReadDeadline(time.Time{})
	buf := make([]byte, 4096)
	for {
		n, err := p.master.Read(buf)
		p.out.Write(buf[:n])
		if err != nil {
			return p.out.String()
		}
	}
}

// typeIn writes keystrokes to the terminal.
func (p *pty) typeIn(t *testing.T, keys string) {
	t.Helper()
	if _, err := p.master.WriteString(keys); err != nil {
		t.Fatalf("typing on %s: %v", p.name, err)
	}
}

// sameSettings reports the first difference between two terminal settings, or "".
func sameSettings(a, b unix.Termios) string {
	switch {
	case a.Iflag != b.Iflag:
		return fmt.Sprintf("iflag %#x, was %#x", a.Iflag, b.Iflag)
	case a.Oflag != b.Oflag:
		return fmt.Sprintf("oflag %#x, was %#x", a.Oflag, b.Oflag)
	case a.Cflag != b.Cflag:
		return fmt.Sprintf("cflag %#x, was %#x", a.Cflag, b.Cflag)
	case a.Lflag != b.Lflag:
		return fmt.Sprintf("lflag %#x, was %#x", a.Lflag, b.Lflag)
	case a.Cc != b.Cc:
		return fmt.Sprintf("control characters %v, were %v", a.Cc, b.Cc)
	}
	return ""
}

// result is what a PIN call running in a goroutine returned.
type result struct {
	pin []byte
	err error
}

// wait returns the result from ch, failing t if none comes within a generous bound.
func wait(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(15 * time.Second):
		t.Fatal("PIN did not return")
		return result{}
	}
}

// errorIs checks err against want: nil wants no error, errAny any error, anything else
// errors.Is.
func errorIs(t *testing.T, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case want == errAny && err == nil, want != nil && want != errAny && !errors.Is(err, want):
		t.Fatalf("error = %v, want %v", err, want)
	}
}

// errAny stands for "some error" in tables.
var errAny = errors.New("any error")
