package prompt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// DefaultTTY is the controlling terminal of the process. Terminal reads from it rather than from
// standard input, so that it still asks the person when standard input is a pipe.
const DefaultTTY = "/dev/tty"

// Keys the Terminal acts on while the terminal is in raw mode.
const (
	keyInterrupt = 0x03 // Ctrl-C
	keyEOF       = 0x04 // Ctrl-D
	keyBackspace = 0x08 // Ctrl-H
	keyKillLine  = 0x15 // Ctrl-U
	keyEscape    = 0x1b // Esc, and the start of every arrow or function key
	keyDelete    = 0x7f // what most terminals send for Backspace
)

// newlineGrace bounds the last write of a prompt, the newline that raw mode does not echo, which
// may come after ctx has ended.
const newlineGrace = 100 * time.Millisecond

// Terminal asks on a terminal with echo off. Use NewTerminal; calls on one Terminal take turns,
// so two requests never share the screen.
type Terminal struct {
	path string
	turn chan struct{}
}

// NewTerminal returns a Terminal that asks on the terminal device at path; "" means DefaultTTY.
func NewTerminal(path string) *Terminal {
	if path == "" {
		path = DefaultTTY
	}
	return &Terminal{path: path, turn: make(chan struct{}, 1)}
}

// PIN writes r's description and "PIN: " to the terminal and reads a line with echo off.
// Ctrl-C, Ctrl-D, Esc and an empty line are ErrCancelled. The terminal runs in raw mode while
// reading — rather than merely without echo — so that Ctrl-C reaches PIN as a key instead of
// killing the process with echo still off. Input typed after Enter is discarded. The terminal's
// previous state is restored on every return, including when ctx ends, which interrupts the read.
func (t *Terminal) PIN(ctx context.Context, r Request) (pin []byte, err error) {
	if t == nil || t.turn == nil {
		return nil, errors.New("prompt: Terminal used without NewTerminal")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("prompt: terminal %s: %w", t.path, err)
	}
	select {
	case t.turn <- struct{}{}:
		defer func() { <-t.turn }()
	case <-ctx.Done():
		return nil, fmt.Errorf("prompt: terminal %s: waiting for an earlier prompt: %w", t.path, ctx.Err())
	}

	// O_NOCTTY: a daemon that is a session leader must not adopt the terminal as its own.
	tty, err := os.OpenFile(t.path, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("prompt: no terminal to ask on: %w", err)
	}
	defer tty.Close()
	// Never call tty.Fd(): it would put the file back into blocking mode, and the reads below
	// could no longer be interrupted. Reach the descriptor through SyscallConn instead.
	rc, err := tty.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("prompt: terminal %s: %w", t.path, err)
	}
	var old *term.State
	var rawErr error
	if err := rc.Control(func(fd uintptr) { old, rawErr = term.MakeRaw(int(fd)) }); err != nil {
		return nil, fmt.Errorf("prompt: terminal %s: %w", t.path, err)
	}
	if rawErr != nil {
		return nil, fmt.Errorf("prompt: %s is not a terminal I can read a PIN from: %w", t.path, rawErr)
	}
	defer func() {
		var restoreErr error
		if err := rc.Control(func(fd uintptr) {
			// Discard what was typed after Enter or Esc — the rest of a pasted line, or of an
			// arrow key's escape sequence — so that it never reaches the shell, echoed.
			unix.IoctlSetInt(int(fd), unix.TCFLSH, unix.TCIFLUSH)
			restoreErr = term.Restore(int(fd), old)
		}); err != nil {
			restoreErr = err
		}
		if restoreErr != nil && err == nil {
			clear(pin)
			pin, err = nil, fmt.Errorf("prompt: terminal %s: restoring its settings: %w", t.path, restoreErr)
		}
	}()

	// When ctx ends, a deadline in the past wakes a blocked Read or Write. interrupted is closed
	// once that deadline is set, so that the deferred newline can set its own after it.
	interrupted := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		tty.SetDeadline(time.Unix(1, 0))
		close(interrupted)
	})
	defer func() {
		if !stop() {
			<-interrupted
		}
		// End the line the person typed on with one short, bounded write, so that a terminal
		// stopped with Ctrl-S cannot hold PIN after ctx has ended.
		tty.SetWriteDeadline(time.Now().Add(newlineGrace))
		tty.WriteString("\r\n")
	}()

	text := strings.ReplaceAll(r.Description(), "\n", "\r\n") + "\r\nPIN: "
	if _, err := tty.WriteString(text); err != nil {
		return nil, t.failed(ctx, "writing the prompt", err)
	}
	return t.readLine(ctx, tty)
}

// readLine reads one line in raw mode, handling the keys above.
func (t *Terminal) readLine(ctx context.Context, tty *os.File) ([]byte, error) {
	line := make([]byte, 0, maxPINLen) // never grows, so no stray copy of the PIN is left behind
	chunk := make([]byte, 64)
	defer clear(chunk)
	for {
		n, err := tty.Read(chunk)
		for _, c := range chunk[:n] {
			switch c {
			case '\r', '\n':
				if len(line) == 0 {
					return nil, fmt.Errorf("prompt: terminal %s: empty PIN: %w", t.path, ErrCancelled)
				}
				pin := append([]byte(nil), line...)
				clear(line)
				return pin, nil
			case keyInterrupt, keyEOF, keyEscape:
				clear(line)
				return nil, fmt.Errorf("prompt: terminal %s: %w", t.path, ErrCancelled)
			case keyBackspace, keyDelete:
				line = dropLastRune(line)
			case keyKillLine:
				clear(line)
				line = line[:0]
			default:
				if c < 0x20 {
					continue // other control keys mean nothing here
				}
				if len(line) == maxPINLen {
					clear(line)
					return nil, fmt.Errorf("prompt: terminal %s: answer longer than the %d bytes a PIN may have", t.path, maxPINLen)
				}
				line = append(line, c)
			}
		}
		if err != nil {
			clear(line)
			return nil, t.failed(ctx, "reading the PIN", err)
		}
	}
}

// failed turns an I/O error into the error PIN returns: ctx's error when ctx interrupted it.
func (t *Terminal) failed(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("prompt: terminal %s: %s: %w", t.path, what, ctx.Err())
	}
	return fmt.Errorf("prompt: terminal %s: %s: %w", t.path, what, err)
}

// dropLastRune removes the last UTF-8 sequence of b, wiping it.
func dropLastRune(b []byte) []byte {
	if len(b) == 0 {
		return b
	}
	_, size := utf8.DecodeLastRune(b)
	clear(b[len(b)-size:])
	return b[:len(b)-size]
}
