package prompt

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// byeGrace is how long a pinentry may take to exit after BYE before it is killed.
const byeGrace = time.Second

// stderrKept bounds what a pinentry's standard error contributes to an error message.
const stderrKept = 512

// Pinentry asks through a pinentry program (pinentry-curses, pinentry-tty, pinentry-gnome3, …),
// speaking the Assuan protocol to it as gpg-agent does. It never offers the pinentry's "save in
// password manager" option: caching is the middleware's decision, made in the open. Use
// NewPinentry; calls on one Pinentry take turns.
type Pinentry struct {
	program string
	tty     string
	turn    chan struct{}
}

// NewPinentry returns a Pinentry that runs program, a path or a name looked up in PATH; ""
// means the first of pinentry, pinentry-curses and pinentry-tty found in PATH. tty, when not
// "", is the terminal a text-mode pinentry asks on (what GPG_TTY is to gpg-agent); it is sent
// with the terminal type (TERM) and character set (LC_ALL, LC_CTYPE or LANG). Graphical
// pinentries need no tty.
func NewPinentry(program, tty string) *Pinentry {
	return &Pinentry{program: program, tty: tty, turn: make(chan struct{}, 1)}
}

// PIN starts the pinentry, describes r to it and returns the PIN it reads. The pinentry is
// killed when ctx ends. Cancel in the pinentry, or an empty PIN, is ErrCancelled.
func (p *Pinentry) PIN(ctx context.Context, r Request) ([]byte, error) {
	if p == nil || p.turn == nil {
		return nil, errors.New("prompt: Pinentry used without NewPinentry")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("prompt: pinentry: %w", err)
	}
	select {
	case p.turn <- struct{}{}:
		defer func() { <-p.turn }()
	case <-ctx.Done():
		return nil, fmt.Errorf("prompt: pinentry: waiting for an earlier prompt: %w", ctx.Err())
	}
	prog, err := p.lookPath()
	if err != nil {
		return nil, err
	}
	s, err := startPinentry(ctx, prog)
	if err != nil {
		return nil, err
	}
	pin, err := s.getPIN(r, p.options())
	werr := s.finish(err == nil)
	switch {
	case errors.Is(err, errExited):
		err = fmt.Errorf("%w: %s", err, s.exitReason(werr))
	case errors.Is(err, errAssuanERR) && p.tty == "":
		// pinentry-curses answers "Inappropriate ioctl for device" when it has no terminal.
		err = fmt.Errorf("%w (no terminal was named for the pinentry; a text-mode pinentry needs one)", err)
	}
	return pin, err
}

// lookPath finds the program to run.
func (p *Pinentry) lookPath() (string, error) {
	if p.program != "" {
		path, err := exec.LookPath(p.program)
		if err != nil {
			return "", fmt.Errorf("prompt: pinentry: %w", err)
		}
		return path, nil
	}
	names := []string{"pinentry", "pinentry-curses", "pinentry-tty"}
	for _, name := range names {
		if path, err := exec.LookPath(name); err == nil {
			return path, nil
		}
	}
	return "", fmt.Errorf("prompt: no pinentry program in PATH (looked for %s; Debian packages pinentry-curses and pinentry-tty provide one)",
		strings.Join(names, ", "))
}

// options are the OPTION commands sent before the prompt, as "name=value".
func (p *Pinentry) options() []string {
	if p.tty == "" {
		return nil
	}
	opts := []string{"ttyname=" + p.tty}
	if t := os.Getenv("TERM"); t != "" {
		opts = append(opts, "ttytype="+t)
	}
	for _, v := range []string{"LC_ALL", "LC_CTYPE", "LANG"} {
		if l := os.Getenv(v); l != "" {
			opts = append(opts, "lc-ctype="+l)
			break
		}
	}
	return opts
}

// pinentrySession is one running pinentry.
type pinentrySession struct {
	ctx  context.Context
	prog string
	cmd  *exec.Cmd
	in   *os.File // our end of its standard input
	out  *os.File // our end of its standard output
	r    *bufio.Reader

	stderr      *headBuffer
	stop        func() bool
	interrupted chan struct{}
	done        chan error // cmd.Wait's result, once started
}

// startPinentry runs prog with pipes on its standard input and output. The pipes are ours, not
// exec's, so that ctx can interrupt a read even if the pinentry has passed its output on to a
// child that outlives it.
func startPinentry(ctx context.Context, prog string) (*pinentrySession, error) {
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("prompt: pinentry %s: %w", prog, err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, fmt.Errorf("prompt: pinentry %s: %w", prog, err)
	}
	s := &pinentrySession{
		ctx:         ctx,
		prog:        prog,
		in:          inW,
		out:         outR,
		r:           bufio.NewReaderSize(outR, assuanLineMax+2),
		stderr:      &headBuffer{max: stderrKept},
		interrupted: make(chan struct{}),
		done:        make(chan error, 1),
	}
	s.cmd = exec.CommandContext(ctx, prog)
	s.cmd.Stdin = inR
	s.cmd.Stdout = outW
	s.cmd.Stderr = s.stderr
	s.cmd.WaitDelay = byeGrace
	err = s.cmd.Start()
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, fmt.Errorf("prompt: pinentry %s: %w", prog, err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	s.stop = context.AfterFunc(ctx, func() {
		past := time.Unix(1, 0)
		s.in.SetDeadline(past)
		s.out.SetDeadline(past)
		close(s.interrupted)
	})
	return s, nil
}

// getPIN holds the conversation: greeting, options, texts, GETPIN.
func (s *pinentrySession) getPIN(r Request, options []string) ([]byte, error) {
	if _, err := s.expectOK("greeting", nil); err != nil {
		return nil, err
	}
	for _, o := range options {
		// Unknown options are not worth failing for: old pinentries lack lc-ctype.
		name, value, _ := strings.Cut(o, "=")
		line := assuanEscape([]byte("OPTION "+name+"="), value, assuanLineMax, true)
		if _, err := s.expectOK("OPTION "+name, line); err != nil && !errors.Is(err, errAssuanERR) {
			return nil, err
		}
	}
	texts := []struct {
		cmd, text string
	}{
		{"SETTITLE", r.title()},
		{"SETDESC", r.description()},
		{"SETPROMPT", "PIN:"},
		{"SETERROR", r.warning()},
	}
	for _, t := range texts {
		if t.text == "" {
			continue
		}
		line := assuanEscape([]byte(t.cmd+" "), t.text, assuanLineMax, false)
		if _, err := s.expectOK(t.cmd, line); err != nil {
			return nil, err
		}
	}
	return s.expectOK("GETPIN", []byte("GETPIN"))
}

// errAssuanERR marks an ERR answer, as opposed to a broken conversation.
var errAssuanERR = errors.New("ERR")

// expectOK sends cmd (nil for none) and reads responses up to OK or ERR. For GETPIN it returns
// the decoded data; the raw lines are wiped from the read buffer as they are consumed.
func (s *pinentrySession) expectOK(what string, cmd []byte) ([]byte, error) {
	if cmd != nil {
		if _, err := s.in.Write(append(cmd, '\n')); err != nil {
			return nil, s.failed("sending "+what, err)
		}
	}
	var data []byte
	if what == "GETPIN" {
		// Room for the longest PIN plus one more line, so append never moves the PIN.
		data = make([]byte, 0, maxPINLen+assuanLineMax)
	}
	fail := func(err error) ([]byte, error) {
		clear(data)
		return nil, err
	}
	for {
		line, err := s.r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			clear(line)
			return fail(fmt.Errorf("prompt: pinentry %s: answer to %s: line longer than %d bytes", s.prog, what, assuanLineMax))
		}
		if err != nil {
			clear(line)
			return fail(s.failed("reading the answer to "+what, err))
		}
		rsp, perr := parseAssuanResponse(line[:len(line)-1])
		if perr == nil && rsp.kind == assuanData {
			if data == nil {
				perr = errors.New("data where none was asked for")
			} else if data, perr = assuanUnescape(data, rsp.rest); perr == nil && len(data) > maxPINLen {
				perr = fmt.Errorf("PIN longer than the %d bytes a PIN may have", maxPINLen)
			}
		}
		var desc string
		if rsp.kind == assuanErr {
			desc = printable(string(rsp.rest))
		}
		clear(line)
		if perr != nil {
			return fail(fmt.Errorf("prompt: pinentry %s: answer to %s: %w", s.prog, what, perr))
		}
		switch rsp.kind {
		case assuanOK:
			if what != "GETPIN" {
				return nil, nil
			}
			if len(data) == 0 {
				return nil, fmt.Errorf("prompt: pinentry %s: empty PIN: %w", s.prog, ErrCancelled)
			}
			pin := append([]byte(nil), data...)
			clear(data)
			return pin, nil
		case assuanErr:
			if rsp.cancelled() {
				return fail(fmt.Errorf("prompt: pinentry %s: %w", s.prog, ErrCancelled))
			}
			return fail(fmt.Errorf("prompt: pinentry %s: %s failed: %w %d %s", s.prog, what, errAssuanERR, rsp.code, desc))
		case assuanInquire:
			return fail(fmt.Errorf("prompt: pinentry %s: answer to %s: unexpected INQUIRE", s.prog, what))
		}
		// Status and comment lines carry nothing we need.
	}
}

// errExited marks a conversation cut short because the pinentry went away.
var errExited = errors.New("exited")

// failed explains an I/O error: ctx ended, or the pinentry went away, or something else.
func (s *pinentrySession) failed(what string, err error) error {
	if s.ctx.Err() != nil {
		return fmt.Errorf("prompt: pinentry %s: %s: %w", s.prog, what, s.ctx.Err())
	}
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE) {
		return fmt.Errorf("prompt: pinentry %s %w before %s", s.prog, errExited, what)
	}
	return fmt.Errorf("prompt: pinentry %s: %s: %w", s.prog, what, err)
}

// exitReason is the exit status and the start of the standard error of a finished pinentry.
func (s *pinentrySession) exitReason(waitErr error) string {
	var parts []string
	if waitErr != nil {
		parts = append(parts, waitErr.Error())
	}
	if e := printable(strings.Join(strings.Fields(s.stderr.String()), " ")); e != "" {
		parts = append(parts, e)
	}
	if len(parts) == 0 {
		return "exit status 0"
	}
	return strings.Join(parts, ": ")
}

// finish says BYE when the conversation went well, closes the pinentry's input, and waits for it
// to exit, killing it after byeGrace. It returns the exit error; reading stderr is safe after.
func (s *pinentrySession) finish(bye bool) error {
	if bye {
		s.in.Write([]byte("BYE\n")) // a pinentry that is already gone is fine here
	}
	s.in.Close()
	var err error
	t := time.NewTimer(byeGrace)
	select {
	case err = <-s.done:
	case <-t.C:
		s.cmd.Process.Kill()
		err = <-s.done
	}
	t.Stop()
	if !s.stop() {
		<-s.interrupted
	}
	s.out.Close()
	return err
}

// headBuffer keeps the first max bytes written to it; exec writes to it from its own goroutine.
type headBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (h *headBuffer) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if room := h.max - len(h.b); room > 0 {
		h.b = append(h.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (h *headBuffer) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return string(h.b)
}
