package prompt

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fake is one run of the fake pinentry.
type fake struct {
	p          *Pinentry
	transcript string
	pidFile    string
}

// newFake makes a Pinentry that runs this test binary as a fake pinentry in mode, answering
// GETPIN with reply.
func newFake(t *testing.T, mode, reply, tty string) *fake {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := &fake{
		p:          NewPinentry(exe, tty),
		transcript: filepath.Join(dir, "transcript"),
		pidFile:    filepath.Join(dir, "pid"),
	}
	t.Setenv(fakeModeEnv, mode)
	t.Setenv(fakeReplyEnv, reply)
	t.Setenv(fakeTranscriptEnv, f.transcript)
	t.Setenv(fakePIDEnv, f.pidFile)
	// A race-enabled fake would otherwise sleep a second before exiting, near byeGrace.
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	return f
}

// commands returns the command lines the fake received.
func (f *fake) commands(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(f.transcript)
	if err != nil {
		t.Fatalf("reading the fake pinentry's transcript: %v", err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// pid returns the process id the fake wrote to file.
func (f *fake) pid(t *testing.T, file string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("the fake pinentry never started: %v", err)
	}
	pid, err := strconv.Atoi(string(b))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// checkGone fails t if the fake's process still exists.
func (f *fake) checkGone(t *testing.T) {
	t.Helper()
	pid := f.pid(t, f.pidFile)
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("pinentry process %d still exists (kill 0: %v)", pid, err)
	}
}

// killChild ends the child of a hang-with-child fake, which PIN leaves alone: it kills only the
// process it started.
func (f *fake) killChild(t *testing.T) {
	t.Helper()
	file := f.pidFile + ".child"
	if _, err := os.Stat(file); err != nil {
		return
	}
	pid := f.pid(t, file)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		t.Errorf("killing the fake's child %d: %v", pid, err)
	}
}

var loginRequest = Request{Application: "ssh", Token: "YubiKey 12345678", Reason: "login", Retries: 3, Attempt: 1}

func TestPinentryAnswers(t *testing.T) {
	tests := []struct {
		name     string
		greeting string // "" for the usual one
		mode     string // "" for serve
		reply    string
		stderr   string
		want     string
		wantErr  error
		wantMsg  string // in the error message
		secret   string // must not be in the error message
	}{
		{name: "plain", reply: "D 123456\nOK", want: "123456"},
		{name: "escaped data", reply: "D 12%2534\nOK", want: "12%34"},
		{name: "lower-case escapes and a CR", reply: "D %0d%0a\r\nOK\r", want: "\r\n"},
		{name: "data over two lines between status and comments", reply: "S PINENTRY_LAUNCHED 1 tty\n# hello\nD 12\nD 34\nOK", want: "1234"},
		{name: "cancel", reply: "ERR 83886179 Operation cancelled <Pinentry>", wantErr: ErrCancelled},
		{name: "fully cancelled", reply: "ERR 83886278 Fully canceled <Pinentry>", wantErr: ErrCancelled},
		{name: "assuan cancel", reply: "ERR 277 Canceled", wantErr: ErrCancelled},
		{name: "empty PIN", reply: "OK", wantErr: ErrCancelled},
		{name: "other ERR", reply: "ERR 83886142 Timeout <Pinentry>", wantErr: errAny,
			wantMsg: "GETPIN failed: ERR 83886142 Timeout <Pinentry> (no terminal was named for the pinentry"},
		{name: "ERR without code", reply: "ERR oops", wantErr: errAny, wantMsg: "without a valid error code"},
		{name: "bad escape", reply: "D 9876%G1\nOK", wantErr: errAny, wantMsg: "bad percent escape", secret: "9876"},
		{name: "line too long", reply: "D " + strings.Repeat("7", 1100) + "\nOK", wantErr: errAny,
			wantMsg: "line longer than 1000 bytes", secret: "777"},
		{name: "PIN too long", reply: "D " + strings.Repeat("5", 200) + "\nD " + strings.Repeat("5", 200) + "\nOK",
			wantErr: errAny, wantMsg: "longer than the 256 bytes", secret: "555"},
		{name: "unknown line", reply: "424242\nOK", wantErr: errAny, wantMsg: "unknown response", secret: "4242"},
		{name: "INQUIRE", reply: "INQUIRE SOMETHING", wantErr: errAny, wantMsg: "unexpected INQUIRE"},
		{name: "greeting is ERR", greeting: "ERR 1 not today", wantErr: errAny, wantMsg: "greeting failed: ERR 1 not today"},
		{name: "greeting is garbage", greeting: "HELLO", wantErr: errAny, wantMsg: "unknown response"},
		{name: "exits at once", mode: "exit-early", stderr: "pinentry: no tty\n", wantErr: errAny,
			wantMsg: "exited before reading the answer to greeting: exit status 3: pinentry: no tty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkGoroutines(t)
			mode := tt.mode
			if mode == "" {
				mode = "serve"
			}
			f := newFake(t, mode, tt.reply, "")
			if tt.greeting != "" {
				t.Setenv(fakeGreetingEnv, tt.greeting)
			}
			t.Setenv(fakeStderrEnv, tt.stderr)

			pin, err := f.p.PIN(t.Context(), loginRequest)
			errorIs(t, err, tt.wantErr)
			if err != nil {
				if !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("error %q does not say %q", err, tt.wantMsg)
				}
				if tt.secret != "" && strings.Contains(err.Error(), tt.secret) {
					t.Errorf("error %q gives away the PIN", err)
				}
			}
			if string(pin) != tt.want {
				t.Errorf("PIN = %q, want %q", pin, tt.want)
			}
			f.checkGone(t)
		})
	}
}

func TestPinentryCommands(t *testing.T) {
	tests := []struct {
		name string
		req  Request
		tty  string
		env  map[string]string
		want []string
	}{
		{
			name: "first login, graphical",
			req:  loginRequest,
			want: []string{
				"SETTITLE PIN for YubiKey 12345678",
				"SETDESC ssh asks for the PIN of YubiKey 12345678.%0AReason: login.",
				"SETPROMPT PIN:",
				"GETPIN",
				"BYE",
			},
		},
		{
			name: "second attempt on a terminal",
			req: Request{Application: "100% app", Token: "YubiKey 1", Slot: "9c",
				Reason: "signature with a PIN-always key (9c)", Retries: 2, Attempt: 2},
			tty: "/dev/pts/99",
			env: map[string]string{"TERM": "xterm-256color", "LC_ALL": "", "LC_CTYPE": "de_DE.UTF-8", "LANG": "C"},
			want: []string{
				"OPTION ttyname=/dev/pts/99",
				"OPTION ttytype=xterm-256color",
				"OPTION lc-ctype=de_DE.UTF-8",
				"SETTITLE PIN for YubiKey 1",
				"SETDESC 100%25 app asks for the PIN of YubiKey 1 (key slot 9c).%0AReason: signature with a PIN-always key (9c).",
				"SETPROMPT PIN:",
				"SETERROR Wrong PIN (this is attempt 2). 2 tries left before the PIN is blocked.",
				"GETPIN",
				"BYE",
			},
		},
		{
			name: "terminal without TERM or locale, hostile names",
			req:  Request{Application: "evil\x1b[2J\r\nname", Reason: "login", Retries: 1},
			tty:  "/dev/my tty+1",
			env:  map[string]string{"TERM": "", "LC_ALL": "", "LC_CTYPE": "", "LANG": ""},
			want: []string{
				"OPTION ttyname=/dev/my%20tty%2B1",
				"SETTITLE PIN",
				"SETDESC evil\ufffd[2J\ufffd\ufffdname asks for the PIN of the token.%0AReason: login.",
				"SETPROMPT PIN:",
				"SETERROR Last try before the PIN is blocked.",
				"GETPIN",
				"BYE",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkGoroutines(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			f := newFake(t, "serve", "D 1234\nOK", tt.tty)
			pin, err := f.p.PIN(t.Context(), tt.req)
			if err != nil || string(pin) != "1234" {
				t.Fatalf("PIN = %q, %v; want 1234", pin, err)
			}
			got := f.commands(t)
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("commands sent:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			f.checkGone(t)
		})
	}
}

func TestPinentryLongDescriptionStaysOnOneLine(t *testing.T) {
	checkGoroutines(t)
	f := newFake(t, "serve", "D 1\nOK", "")
	long := strings.Repeat("%\n", 500) // every byte escapes to three
	r := Request{Application: long, Token: long, Slot: long, Reason: long, Retries: 2, Attempt: 9}
	if _, err := f.p.PIN(t.Context(), r); err != nil {
		t.Fatalf("PIN: %v", err)
	}
	for _, line := range f.commands(t) {
		if len(line) > assuanLineMax {
			t.Errorf("sent a %d-byte line: %.40q…", len(line), line)
		}
	}
}

func TestPinentryContext(t *testing.T) {
	tests := []struct {
		name string
		mode string
	}{
		{"hung before the greeting", "hang-greeting"},
		{"hung in GETPIN", "hang-getpin"},
		{"hung, with a child holding its output", "hang-with-child"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkGoroutines(t)
			f := newFake(t, tt.mode, "D 1\nOK", "")
			t.Cleanup(func() { f.killChild(t) })
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			done := make(chan result, 1)
			go func() {
				pin, err := f.p.PIN(ctx, loginRequest)
				done <- result{pin, err}
			}()
			waitForFile(t, f.pidFile+".hung")
			start := time.Now()
			cancel()
			res := wait(t, done)
			if !errors.Is(res.err, context.Canceled) || res.pin != nil {
				t.Fatalf("PIN = %q, %v; want context.Canceled", res.pin, res.err)
			}
			// A child holding the pinentry's standard error makes exec wait WaitDelay.
			if d := time.Since(start); d > byeGrace+4*time.Second {
				t.Errorf("PIN took %v to notice the cancellation", d)
			}
			f.checkGone(t)
		})
	}
}

func TestPinentryDeadline(t *testing.T) {
	checkGoroutines(t)
	f := newFake(t, "hang-getpin", "", "")
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, err := f.p.PIN(ctx, loginRequest); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("PIN: %v; want context.DeadlineExceeded", err)
	}
	if _, err := os.Stat(f.pidFile); err == nil {
		f.checkGone(t)
	}
}

// waitForFile waits until path exists.
func waitForFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared", path)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPinentryKilledWhenItIgnoresBYE(t *testing.T) {
	checkGoroutines(t)
	f := newFake(t, "ignore-bye", "D 4321\nOK", "")
	start := time.Now()
	pin, err := f.p.PIN(t.Context(), loginRequest)
	if err != nil || string(pin) != "4321" {
		t.Fatalf("PIN = %q, %v; want 4321", pin, err)
	}
	if d := time.Since(start); d > byeGrace+5*time.Second {
		t.Errorf("PIN took %v", d)
	}
	f.checkGone(t)
}

func TestPinentryTakesTurns(t *testing.T) {
	checkGoroutines(t)
	f := newFake(t, "hang-getpin", "", "")
	first, cancelFirst := context.WithCancel(t.Context())
	done := make(chan result, 1)
	go func() {
		pin, err := f.p.PIN(first, loginRequest)
		done <- result{pin, err}
	}()
	// Wait until the first pinentry runs, then ask again: the second request must wait its turn.
	waitForFile(t, f.pidFile+".hung")
	second, cancelSecond := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancelSecond()
	_, err := f.p.PIN(second, loginRequest)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "waiting for an earlier prompt") {
		t.Errorf("second PIN: %v; want a deadline while waiting for the first", err)
	}
	cancelFirst()
	if r := wait(t, done); !errors.Is(r.err, context.Canceled) {
		t.Errorf("first PIN: %v; want context.Canceled", r.err)
	}
}

func TestPinentryProgram(t *testing.T) {
	tests := []struct {
		name    string
		program string
		path    string // PATH for the lookup
		wantMsg string
	}{
		{name: "missing path", program: "/nonexistent/pinentry-x", path: os.Getenv("PATH"),
			wantMsg: "/nonexistent/pinentry-x"},
		{name: "missing name", program: "pinentry-nonexistent", path: t.TempDir(), wantMsg: "pinentry-nonexistent"},
		{name: "none in PATH", path: t.TempDir(),
			wantMsg: "no pinentry program in PATH (looked for pinentry, pinentry-curses, pinentry-tty; Debian packages"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("PATH", tt.path)
			_, err := NewPinentry(tt.program, "").PIN(t.Context(), loginRequest)
			if err == nil || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %v does not say %q", err, tt.wantMsg)
			}
		})
	}
}

func TestPinentryCancelledContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := NewPinentry("pinentry-tty", "").PIN(ctx, loginRequest); !errors.Is(err, context.Canceled) {
		t.Errorf("PIN with a cancelled context: %v", err)
	}
	var zero Pinentry
	if _, err := zero.PIN(t.Context(), loginRequest); err == nil {
		t.Error("a zero Pinentry asked for a PIN")
	}
}

// TestPinentryTTYReal drives Debian's pinentry-tty through a pseudo-terminal.
func TestPinentryTTYReal(t *testing.T) {
	prog, err := exec.LookPath("pinentry-tty")
	if err != nil {
		if os.Getenv("TOKENLAB_CI") == "1" {
			t.Fatalf("pinentry-tty is not installed: install the Debian package pinentry-tty (%v)", err)
		}
		t.Skipf("pinentry-tty is not installed; install the Debian package pinentry-tty to run this test (%v)", err)
	}
	tests := []struct {
		name    string
		keys    string
		want    string
		wantErr error
	}{
		{name: "PIN", keys: "s3cr3t\r", want: "s3cr3t"},
		{name: "Ctrl-D", keys: "\x04", wantErr: ErrCancelled},
		{name: "empty", keys: "\r", wantErr: ErrCancelled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkGoroutines(t)
			pt := openPTY(t)
			p := NewPinentry(prog, pt.name)
			r := Request{Application: "ssh", Token: "YubiKey 7", Slot: "9c", Reason: "signature", Retries: 2, Attempt: 2}
			done := make(chan result, 1)
			go func() {
				pin, err := p.PIN(t.Context(), r)
				done <- result{pin, err}
			}()
			shown := pt.readUntil(t, "PIN:")
			for _, want := range []string{"ssh asks for the PIN of YubiKey 7 (key slot 9c).", "Reason: signature.", "2 tries left"} {
				if !strings.Contains(shown, want) {
					t.Errorf("pinentry-tty showed %q, without %q", shown, want)
				}
			}
			pt.typeIn(t, tt.keys)
			res := wait(t, done)
			errorIs(t, res.err, tt.wantErr)
			if string(res.pin) != tt.want {
				t.Errorf("PIN = %q, want %q", res.pin, tt.want)
			}
			if tt.want != "" && strings.Contains(pt.drain(), tt.want) {
				t.Errorf("the PIN was echoed: %q", pt.out.String())
			}
		})
	}
}
