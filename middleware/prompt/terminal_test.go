package prompt

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestTerminalKeys(t *testing.T) {
	tests := []struct {
		name    string
		keys    string
		want    string
		wantErr error
		wantMsg string
	}{
		{name: "Enter", keys: "123456\r", want: "123456"},
		{name: "line feed", keys: "123456\n", want: "123456"},
		{name: "Backspace", keys: "12x\x7f34\r", want: "1234"},
		{name: "Ctrl-H", keys: "12x\x0834\r", want: "1234"},
		{name: "Backspace over a multi-byte rune", keys: "é1\x7f\x7f9\r", want: "9"},
		{name: "Backspace on an empty line", keys: "\x7f\x7f42\r", want: "42"},
		{name: "Ctrl-U", keys: "wrong\x15right\r", want: "right"},
		{name: "other control keys ignored", keys: "1\x012\x1a3\r", want: "123"},
		{name: "typed ahead after Enter", keys: "77\rrest", want: "77"},
		{name: "empty line", keys: "\r", wantErr: ErrCancelled},
		{name: "emptied line", keys: "12\x7f\x7f\r", wantErr: ErrCancelled},
		{name: "Ctrl-C", keys: "12\x03", wantErr: ErrCancelled},
		{name: "Ctrl-D", keys: "\x04", wantErr: ErrCancelled},
		{name: "arrow key", keys: "1\x1b[A", wantErr: ErrCancelled},
		{name: "pasted with more after Enter", keys: "1234\r" + strings.Repeat("5678\r", 40), want: "1234"},
		{name: "too long", keys: strings.Repeat("8", 300) + "\r", wantErr: errAny, wantMsg: "longer than the 256 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkGoroutines(t)
			pt := openPTY(t)
			before := pt.termios(t)
			term := NewTerminal(pt.name)
			r := Request{Application: "pkcs11-tool (pid 123)", Token: "YubiKey 12345678", Reason: "login", Retries: -1, Attempt: 1}
			done := make(chan result, 1)
			go func() {
				pin, err := term.PIN(t.Context(), r)
				done <- result{pin, err}
			}()

			shown := pt.readUntil(t, "PIN: ")
			want := "pkcs11-tool (pid 123) asks for the PIN of YubiKey 12345678.\r\nReason: login.\r\nPIN: "
			if !strings.HasSuffix(shown, want) {
				t.Errorf("terminal shows %q, want %q", shown, want)
			}
			during := pt.termios(t)
			if during.Lflag&(unix.ECHO|unix.ICANON|unix.ISIG) != 0 {
				t.Errorf("while reading, lflag = %#x: echo, canonical mode or signals still on", during.Lflag)
			}

			pt.typeIn(t, tt.keys)
			res := wait(t, done)
			errorIs(t, res.err, tt.wantErr)
			if res.err != nil && !strings.Contains(res.err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not say %q", res.err, tt.wantMsg)
			}
			if string(res.pin) != tt.want {
				t.Errorf("PIN = %q, want %q", res.pin, tt.want)
			}
			if diff := sameSettings(pt.termios(t), before); diff != "" {
				t.Errorf("terminal settings not restored: %s", diff)
			}
			if n := pt.pending(t); n != 0 {
				t.Errorf("%d typed bytes left for the next reader of the terminal", n)
			}
			if got := strings.TrimPrefix(pt.drain(), shown); got != "\r\n" {
				t.Errorf("after the prompt the terminal shows %q, want only a newline (no echo)", got)
			}
		})
	}
}

func TestTerminalContext(t *testing.T) {
	tests := []struct {
		name    string
		timeout time.Duration // 0: cancel after the prompt appears
		want    error
	}{
		{name: "cancelled while reading", want: context.Canceled},
		{name: "deadline while reading", timeout: 200 * time.Millisecond, want: context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkGoroutines(t)
			pt := openPTY(t)
			before := pt.termios(t)
			ctx, cancel := context.WithCancel(t.Context())
			if tt.timeout > 0 {
				ctx, cancel = context.WithTimeout(t.Context(), tt.timeout)
			}
			defer cancel()
			done := make(chan result, 1)
			go func() {
				pin, err := NewTerminal(pt.name).PIN(ctx, loginRequest)
				done <- result{pin, err}
			}()
			if tt.timeout == 0 {
				pt.readUntil(t, "PIN: ")
				pt.typeIn(t, "12") // half a PIN, then the context ends
				cancel()
			}
			res := wait(t, done)
			if !errors.Is(res.err, tt.want) || res.pin != nil {
				t.Fatalf("PIN = %q, %v; want %v", res.pin, res.err, tt.want)
			}
			if diff := sameSettings(pt.termios(t), before); diff != "" {
				t.Errorf("terminal settings not restored: %s", diff)
			}
		})
	}
}

func TestTerminalCancelledBeforeAsking(t *testing.T) {
	checkGoroutines(t)
	pt := openPTY(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := NewTerminal(pt.name).PIN(ctx, loginRequest); !errors.Is(err, context.Canceled) {
		t.Errorf("PIN: %v; want context.Canceled", err)
	}
	if out := pt.drain(); out != "" {
		t.Errorf("wrote %q to the terminal after ctx ended", out)
	}
}

func TestTerminalTakesTurns(t *testing.T) {
	checkGoroutines(t)
	pt := openPTY(t)
	term := NewTerminal(pt.name)
	done := make(chan result, 1)
	go func() {
		pin, err := term.PIN(t.Context(), loginRequest)
		done <- result{pin, err}
	}()
	pt.readUntil(t, "PIN: ")
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, err := term.PIN(ctx, loginRequest); !errors.Is(err, context.DeadlineExceeded) ||
		!strings.Contains(err.Error(), "waiting for an earlier prompt") {
		t.Errorf("second PIN: %v; want a deadline while waiting for the first", err)
	}
	pt.typeIn(t, "2468\r")
	if r := wait(t, done); r.err != nil || string(r.pin) != "2468" {
		t.Errorf("first PIN = %q, %v", r.pin, r.err)
	}
}

func TestTerminalNotATerminal(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, wantMsg string
	}{
		{"regular file", file, "is not a terminal"},
		{"missing", filepath.Join(dir, "missing"), "no terminal to ask on"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkGoroutines(t)
			_, err := NewTerminal(tt.path).PIN(t.Context(), loginRequest)
			if err == nil || !strings.Contains(err.Error(), tt.wantMsg) || !strings.Contains(err.Error(), tt.path) {
				t.Errorf("error %v does not say %q about %s", err, tt.wantMsg, tt.path)
			}
		})
	}
	var zero Terminal
	if _, err := zero.PIN(t.Context(), loginRequest); err == nil {
		t.Error("a zero Terminal asked for a PIN")
	}
}

func TestNewTerminalDefault(t *testing.T) {
	if got := NewTerminal("").path; got != DefaultTTY {
		t.Errorf("NewTerminal(\"\") asks on %q, want %q", got, DefaultTTY)
	}
}
