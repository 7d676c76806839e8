package unixsock

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Conn is a Unix stream connection whose Read and Write make their system calls straight on the
// non-blocking socket, and wait in the runtime's network poller only when it is not ready.
// Deadlines, Close and the rest are those of the net.UnixConn it wraps.
//
// The reason is the cost of a request on an idle daemon. net.UnixConn goes through
// syscall.Syscall, whose entersyscall wakes the runtime's sysmon thread whenever sysmon has gone
// to sleep, which it does as soon as the process idles between two requests. A read or a write
// of a non-blocking socket never blocks, so it needs no entersyscall and no sysmon. On a 2-vCPU
// VM that wake is a cross-CPU interrupt: doing without it took the server's CPU per PKCS#11
// round trip from about 21 to 14 µs, and the round trip from 36 to 30 µs (BenchmarkPKCS11SessionInfo).
type Conn struct {
	*net.UnixConn
	rc syscall.RawConn
}

// NewConn wraps c.
func NewConn(c *net.UnixConn) (*Conn, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	return &Conn{UnixConn: c, rc: rc}, nil
}

// Read reads up to len(p) bytes; io.EOF when the peer has shut down its side.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n uintptr
	var errno syscall.Errno
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			n, _, errno = unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			switch errno {
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false // wait in the poller, then try again
			}
			return true
		}
	})
	switch {
	case err != nil:
		return 0, c.opError("read", err)
	case errno != 0:
		return 0, c.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return int(n), nil
}

// Write writes all of p, waiting for room in the socket buffer as it must. A peer that has gone
// gives EPIPE, never SIGPIPE.
func (c *Conn) Write(p []byte) (int, error) {
	var done int
	var errno syscall.Errno
	err := c.rc.Write(func(fd uintptr) bool {
		for done < len(p) {
			n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&p[done])), uintptr(len(p)-done),
				unix.MSG_NOSIGNAL, 0, 0)
			switch e {
			case 0:
				done += int(n)
			case unix.EINTR:
			case unix.EAGAIN:
				return false
			default:
				errno = e
				return true
			}
		}
		return true
	})
	switch {
	case err != nil:
		return done, c.opError("write", err)
	case errno != 0:
		return done, c.opError("write", os.NewSyscallError("write", errno))
	}
	return done, nil
}

// opError wraps err as net.UnixConn would, so that errors.Is(err, net.ErrClosed) and
// os.ErrDeadlineExceeded work as they do there.
func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "unix", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
