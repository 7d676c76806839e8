// Package unixsock listens on Unix sockets that only their owner can use: mode 0600, stale
// sockets replaced, a live one refused, and every peer's uid checked.
package unixsock

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Listen listens on path. A socket file that nobody answers on is a leftover and is replaced;
// one that answers belongs to a running daemon and is an error. The socket is made 0600 before
// any connection is accepted, and Accept of the returned listener checks peers (see Peer).
func Listen(path string) (*net.UnixListener, error) {
	if !filepath.IsAbs(path) {
		abs, err := filepath.Abs(path)
		if err != nil {
			return nil, err
		}
		path = abs
	}
	if len(path) >= 108 {
		return nil, fmt.Errorf("%s: %d bytes is too long for a Unix socket path (107 at most)", path, len(path))
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s: exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%s: another process is serving on it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, err
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	// Until the chmod, a peer could connect; Peer refuses other users regardless.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// ErrPeer is returned for a peer of another user.
var ErrPeer = errors.New("unixsock: peer is another user")

// Creds is a peer's identity from SO_PEERCRED.
type Creds struct {
	PID      int32
	UID, GID uint32
}

// Peer returns the identity of the process at the other end of c, and ErrPeer when it runs as
// a user other than ours (root may connect to anyone's socket, as it can anyway).
func Peer(c *net.UnixConn) (Creds, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return Creds{}, err
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return Creds{}, err
	}
	if serr != nil {
		return Creds{}, serr
	}
	cr := Creds{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}
	if me := uint32(os.Geteuid()); cr.UID != me && cr.UID != 0 {
		return cr, fmt.Errorf("%w (uid %d, pid %d)", ErrPeer, cr.UID, cr.PID)
	}
	return cr, nil
}

// ProcessName returns the command name of pid ("pkcs11-tool"), or "" when it cannot be read.
func ProcessName(pid int32) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil || len(b) == 0 {
		return ""
	}
	return string(b[:len(b)-1])
}
