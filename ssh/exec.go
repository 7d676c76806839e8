package ssh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// hangUpDelay is how long a hung-up session's processes may keep its output open before the
// handler gives up on them.
const hangUpDelay = time.Second

// ExecHandler runs each session's command with shell -c, as the server's own user, in the
// session's environment; a shell request greets the user and runs shell itself, on a
// pseudo-terminal when the client asked for one.
func ExecHandler(shell string) Handler {
	return func(ctx context.Context, s *Session) int {
		if s.Command == "" {
			how := "key " + s.Identity.Name
			if s.Identity.Certificate != nil {
				how = "certificate " + s.Identity.Name
			}
			fmt.Fprintf(s.Stdout, "tokenlab: welcome %s, authenticated with the %s %s\r\n", s.Identity.User, s.Identity.Key.Type(), how)
		}
		var cmd *exec.Cmd
		if s.Command == "" {
			cmd = exec.CommandContext(ctx, shell)
		} else {
			cmd = exec.CommandContext(ctx, shell, "-c", s.Command)
		}
		// The client's variables (those the server's AcceptEnv let through) come before the
		// server's own, and exec keeps the last value of a name: a client cannot choose the
		// user name its command sees.
		cmd.Env = os.Environ()
		for k, v := range s.Env {
			if !strings.ContainsAny(k, "=\x00") && !strings.HasPrefix(k, "TOKENLAB_") {
				cmd.Env = append(cmd.Env, k+"="+v)
			}
		}
		cmd.Env = append(cmd.Env, "TOKENLAB_SSH_USER="+s.Identity.User)
		// When the session ends first (the client went, the card was removed, the server
		// stops), the command's whole process group is hung up, as a terminal's would be:
		// killing the shell alone leaves its children holding the session's output open.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGHUP) }
		cmd.WaitDelay = hangUpDelay
		var err error
		if s.PTY != nil {
			err = runOnPTY(ctx, cmd, s)
		} else {
			// Not cmd.Stdin = s.Stdin: Wait would wait for the client's EOF, which a client
			// that sends no input (AsyncSSH's run) never sends.
			cmd.Stdout, cmd.Stderr = s.Stdout, s.Stderr
			var stdin io.WriteCloser
			if stdin, err = cmd.StdinPipe(); err == nil {
				go func() {
					io.Copy(stdin, s.Stdin)
					stdin.Close()
				}()
				err = cmd.Run()
			}
		}
		var ee *exec.ExitError
		switch {
		case err == nil:
			return 0
		case errors.As(err, &ee) && ee.ExitCode() >= 0:
			return ee.ExitCode()
		}
		fmt.Fprintf(s.Stderr, "tokenlab: %v\r\n", err)
		return 255
	}
}

// runOnPTY runs cmd as the session leader of a new pseudo-terminal sized as the client asked.
func runOnPTY(ctx context.Context, cmd *exec.Cmd, s *Session) error {
	ptmx, tty, err := openPTY()
	if err != nil {
		return err
	}
	defer ptmx.Close()
	if s.PTY.Cols > 0 && s.PTY.Rows > 0 && s.PTY.Cols < 1<<16 && s.PTY.Rows < 1<<16 {
		unix.IoctlSetWinsize(int(tty.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Col: uint16(s.PTY.Cols), Row: uint16(s.PTY.Rows)})
	}
	if s.PTY.Term != "" {
		cmd.Env = append(cmd.Env, "TERM="+s.PTY.Term)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	err = cmd.Start()
	tty.Close()
	if err != nil {
		return err
	}
	// The copy ends with EIO when the last process on the terminal exits, or when the session
	// ends first and the terminal is closed under a process that left the session's group.
	stop := context.AfterFunc(ctx, func() { ptmx.Close() })
	defer stop()
	go io.Copy(ptmx, s.Stdin)
	io.Copy(s.Stdout, ptmx)
	return cmd.Wait()
}

// openPTY opens a new pseudo-terminal pair (Linux: /dev/ptmx, unlock, /dev/pts/N). The master
// is non-blocking, so that Go's poller runs its reads and closing it ends a blocked read.
func openPTY() (*os.File, *os.File, error) {
	fd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("ssh: opening a terminal: %w", err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(fd)
		return nil, nil, fmt.Errorf("ssh: unlocking the terminal: %w", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		unix.Close(fd)
		return nil, nil, fmt.Errorf("ssh: terminal number: %w", err)
	}
	ptmx := os.NewFile(uintptr(fd), "/dev/ptmx")
	tty, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		ptmx.Close()
		return nil, nil, fmt.Errorf("ssh: opening the terminal: %w", err)
	}
	return ptmx, tty, nil
}
