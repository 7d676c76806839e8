package p11rpc

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// A scripted server: it answers the handshake and C_Initialize, then replies to each request
// with the code that reply gives it.
func scriptedServer(t *testing.T, conn net.Conn, reply func(req Frame) Frame) {
	t.Helper()
	go func() {
		defer conn.Close()
		if _, err := ServerHandshake(conn); err != nil {
			return
		}
		for {
			f, err := ReadFrame(conn, 0)
			if err != nil {
				return
			}
			if err := WriteFrame(conn, reply(f)); err != nil {
				return
			}
		}
	}()
}

func okBody(t *testing.T, call Call) []byte {
	t.Helper()
	b, err := NewResponse(call, Protocol0).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestClient(t *testing.T) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close() })
	a.SetDeadline(time.Now().Add(5 * time.Second))
	var calls []Call
	scriptedServer(t, b, func(f Frame) Frame {
		req, err := ParseRequest(f.Body, Protocol0)
		if err != nil {
			t.Errorf("request %#x: %v", f.Code, err)
			return Frame{Code: f.Code, Body: ErrorBody(0x05)}
		}
		calls = append(calls, req.Call)
		if string(f.Options) != "client" {
			t.Errorf("options %q", f.Options)
		}
		switch req.Call {
		case CallInitialize:
			return Frame{Code: f.Code, Body: okBody(t, CallInitialize)}
		case CallLogout:
			return Frame{Code: f.Code, Body: ErrorBody(0x101)}
		}
		return Frame{Code: f.Code + 1, Body: okBody(t, req.Call)} // a reply to the wrong request
	})
	c, err := NewClient(a, Protocol0)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	_, err = c.Call(CallLogout, func(w *RequestWriter) { w.Ulong(1) })
	var e *ErrorReply
	if !errors.As(err, &e) || e.RV != 0x101 {
		t.Errorf("C_Logout: %v, want an ErrorReply with CKR_USER_NOT_LOGGED_IN", err)
	}
	_, err = c.Call(CallCloseSession, func(w *RequestWriter) { w.Ulong(1) })
	if err == nil || !strings.Contains(err.Error(), "expected the reply to") {
		t.Errorf("a reply with another request's code: %v", err)
	}
	if len(calls) != 3 || calls[0] != CallInitialize {
		t.Errorf("the server saw %v", calls)
	}
}
