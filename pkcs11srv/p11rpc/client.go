package p11rpc

import (
	"fmt"
	"io"
)

// InitializeMagic is the string a client's C_Initialize carries as its reserved argument
// (p11-kit's rpc-message.h, PARSE_ERROR aside); a server refuses any other.
const InitializeMagic = "PRIVATE-GNOME-KEYRING-PKCS11-PROTOCOL-V-1"

// Client is the client end of a connection, for tests, fuzzers and benchmarks: it offers a
// protocol version, numbers its requests as p11-kit-client does (from 0x10, with the options
// "client") and checks that each reply answers its request. Send and Receive apart let a test
// keep requests outstanding, as p11-kit-client's threads do; replies are read in the order
// the caller names them. A Client is not safe for concurrent use.
type Client struct {
	rw    io.ReadWriter
	proto Protocol
	code  uint32
}

// NewClient offers proto on rw and calls C_Initialize.
func NewClient(rw io.ReadWriter, proto Protocol) (*Client, error) {
	if _, err := ClientHandshake(rw, proto); err != nil {
		return nil, err
	}
	c := &Client{rw: rw, proto: proto, code: 0x0F}
	if _, err := c.Call(CallInitialize, func(w *RequestWriter) {
		w.ByteArray([]byte(InitializeMagic))
		w.Byte(0)
		w.ByteArray([]byte{0})
	}); err != nil {
		return nil, err
	}
	return c, nil
}

// Send writes a request whose arguments args writes (nil for none) and returns its code.
func (c *Client) Send(call Call, args func(*RequestWriter)) (uint32, error) {
	w := NewRequest(call, c.proto)
	if args != nil {
		args(w)
	}
	body, err := w.Bytes()
	if err != nil {
		return 0, err
	}
	c.code++
	if err := WriteFrame(c.rw, Frame{Code: c.code, Options: []byte("client"), Body: body}); err != nil {
		return 0, err
	}
	return c.code, nil
}

// Receive reads the next reply, which must answer request code of call. An ERROR reply is an
// *ErrorReply.
func (c *Client) Receive(call Call, code uint32) (*ResponseReader, error) {
	f, err := ReadFrame(c.rw, 0)
	if err != nil {
		return nil, err
	}
	if f.Code != code {
		return nil, fmt.Errorf("p11rpc: %s: reply %#x, expected the reply to %#x", call, f.Code, code)
	}
	return ParseResponse(f.Body, call, c.proto)
}

// Call sends a request and reads its reply.
func (c *Client) Call(call Call, args func(*RequestWriter)) (*ResponseReader, error) {
	code, err := c.Send(call, args)
	if err != nil {
		return nil, err
	}
	return c.Receive(call, code)
}
