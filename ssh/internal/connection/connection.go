// Package connection is the SSH connection protocol (RFC 4254) over tokenlab's own transport:
// channels with flow control, channel requests and global requests, for either end.
//
// It exists because x/crypto/ssh's channel multiplexer runs only on its own transport, which
// cannot carry RFC 6187 keys (golang/go#24266).
package connection

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"golang.org/x/crypto/cryptobyte"
)

// Message numbers of the connection protocol (RFC 4254 §9).
const (
	msgGlobalRequest    = 80
	msgRequestSuccess   = 81
	msgRequestFailure   = 82
	msgChannelOpen      = 90
	msgOpenConfirm      = 91
	msgOpenFailure      = 92
	msgWindowAdjust     = 93
	msgChannelData      = 94
	msgChannelExtData   = 95
	msgChannelEOF       = 96
	msgChannelClose     = 97
	msgChannelRequest   = 98
	msgChannelSuccess   = 99
	msgChannelFailure   = 100
	extendedDataStderr  = 1
	defaultWindow       = 2 << 20
	defaultMaxPacket    = 32 << 10
	maxChannels         = 64
	maxPendingRequests  = 16
	maxIncomingChannels = 16
	// A peer's maximum packet size must leave room for data: x/crypto/ssh's bounds.
	minPeerMaxPacket = 9
	maxPeerMaxPacket = 1 << 31
)

// Channel open failure reasons (RFC 4254 §5.1).
const (
	OpenAdministrativelyProhibited = 1
	OpenConnectFailed              = 2
	OpenUnknownChannelType         = 3
	OpenResourceShortage           = 4
)

// PacketConn is the transport below: whole packets in and out. The Mux's reading goroutine
// answers the peer with QueuePacket, which must not wait for a key exchange: the transport
// runs key exchanges on the goroutine that reads.
type PacketConn interface {
	ReadPacket() ([]byte, error)
	WritePacket([]byte) error
	QueuePacket([]byte) error
	Close() error
}

// ErrMalformed is wrapped by every error about a message that does not parse.
var ErrMalformed = errors.New("ssh: malformed connection message")

func malformed(what string) error { return fmt.Errorf("%w: %s", ErrMalformed, what) }

// Mux runs the channels of one connection. Run must be called to read the peer's messages.
type Mux struct {
	pc PacketConn

	mu       sync.Mutex
	channels map[uint32]*Channel
	next     uint32
	err      error
	done     chan struct{}

	incoming chan *NewChannel
	// globalReplies carries the peer's answers to our global requests, in order.
	globalReplies chan bool
	globalMu      sync.Mutex
}

// New returns a mux on pc.
func New(pc PacketConn) *Mux {
	return &Mux{pc: pc, channels: map[uint32]*Channel{}, done: make(chan struct{}),
		incoming: make(chan *NewChannel, maxIncomingChannels), globalReplies: make(chan bool, 1)}
}

// Done is closed when the connection ends; Err then says why.
func (m *Mux) Done() <-chan struct{} { return m.done }

// Err returns why the connection ended (io.EOF for a clean end), or nil while it runs.
func (m *Mux) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// Incoming returns the channels the peer opens; it is closed when the connection ends.
func (m *Mux) Incoming() <-chan *NewChannel { return m.incoming }

// Close closes the connection below.
func (m *Mux) Close() error { return m.pc.Close() }

// Run reads and dispatches the peer's messages until the connection ends, and returns why.
func (m *Mux) Run() error {
	var err error
	for {
		var p []byte
		p, err = m.pc.ReadPacket()
		if err == nil {
			err = m.dispatch(p)
		}
		if err != nil {
			break
		}
	}
	m.mu.Lock()
	m.err = err
	chans := m.channels
	m.channels = map[uint32]*Channel{}
	m.mu.Unlock()
	for _, c := range chans {
		c.abort()
	}
	close(m.done)
	close(m.incoming)
	m.pc.Close()
	return err
}

func (m *Mux) channel(id uint32) (*Channel, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.channels[id]
	if !ok {
		return nil, fmt.Errorf("ssh: message for unknown channel %d", id)
	}
	return c, nil
}

func (m *Mux) dispatch(p []byte) error {
	if len(p) == 0 {
		return malformed("empty packet")
	}
	s := cryptobyte.String(p[1:])
	switch p[0] {
	case msgGlobalRequest:
		var name []byte
		var want bool
		if !readString(&s, &name) || !readBool(&s, &want) {
			return malformed("global request")
		}
		if want { // tokenlab answers no global request (keepalives get a failure, as RFC 4254 §4 allows)
			return m.pc.QueuePacket([]byte{msgRequestFailure})
		}
		return nil
	case msgRequestSuccess, msgRequestFailure:
		select {
		case m.globalReplies <- p[0] == msgRequestSuccess:
			return nil
		default:
			return errors.New("ssh: unexpected global request reply")
		}
	case msgChannelOpen:
		return m.handleOpen(&s)
	}
	if p[0] < msgOpenConfirm || p[0] > msgChannelFailure {
		return fmt.Errorf("ssh: unexpected message %d on the connection layer", p[0])
	}
	var id uint32
	if !s.ReadUint32(&id) {
		return malformed(fmt.Sprintf("message %d without a channel", p[0]))
	}
	c, err := m.channel(id)
	if err != nil {
		return err
	}
	return c.handle(p[0], &s)
}

func (m *Mux) handleOpen(s *cryptobyte.String) error {
	var typ []byte
	var sender, window, maxPacket uint32
	if !readString(s, &typ) || !s.ReadUint32(&sender) || !s.ReadUint32(&window) || !s.ReadUint32(&maxPacket) {
		return malformed("channel open")
	}
	nc := &NewChannel{m: m, Type: string(typ), Extra: append([]byte(nil), *s...), remoteID: sender, window: window, maxPacket: maxPacket}
	if !validMaxPacket(maxPacket) {
		return nc.reject(OpenConnectFailed, fmt.Sprintf("maximum packet size %d out of range", maxPacket), true)
	}
	select {
	case m.incoming <- nc:
		return nil
	default:
		return nc.reject(OpenResourceShortage, "too many channels waiting", true)
	}
}

// validMaxPacket reports whether a peer's maximum packet size leaves room for data: with 0,
// every CHANNEL_DATA would be empty.
func validMaxPacket(n uint32) bool { return n >= minPeerMaxPacket && n <= maxPeerMaxPacket }

// NewChannel is a channel the peer asks to open.
type NewChannel struct {
	m         *Mux
	Type      string
	Extra     []byte
	remoteID  uint32
	window    uint32
	maxPacket uint32
}

// Accept opens the channel.
func (nc *NewChannel) Accept() (*Channel, error) {
	c, err := nc.m.newChannel(nc.Type)
	if err != nil {
		nc.Reject(OpenResourceShortage, err.Error())
		return nil, err
	}
	c.remoteID, c.remoteWindow, c.maxPacket = nc.remoteID, uint64(nc.window), min(nc.maxPacket, defaultMaxPacket)
	var b cryptobyte.Builder
	b.AddUint8(msgOpenConfirm)
	b.AddUint32(c.remoteID)
	b.AddUint32(c.localID)
	b.AddUint32(defaultWindow)
	b.AddUint32(defaultMaxPacket)
	if err := nc.m.pc.WritePacket(b.BytesOrPanic()); err != nil {
		return nil, err
	}
	return c, nil
}

// Reject refuses the channel.
func (nc *NewChannel) Reject(reason uint32, message string) error {
	return nc.reject(reason, message, false)
}

// reject refuses the channel; fromReader says the Mux's reading goroutine is refusing.
func (nc *NewChannel) reject(reason uint32, message string, fromReader bool) error {
	var b cryptobyte.Builder
	b.AddUint8(msgOpenFailure)
	b.AddUint32(nc.remoteID)
	b.AddUint32(reason)
	addString(&b, []byte(message))
	addString(&b, nil)
	if fromReader {
		return nc.m.pc.QueuePacket(b.BytesOrPanic())
	}
	return nc.m.pc.WritePacket(b.BytesOrPanic())
}

func (m *Mux) newChannel(typ string) (*Channel, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return nil, m.err
	}
	if len(m.channels) >= maxChannels {
		return nil, errors.New("ssh: too many channels")
	}
	for {
		m.next++
		if _, used := m.channels[m.next]; !used {
			break
		}
	}
	c := &Channel{m: m, Type: typ, localID: m.next, localWindow: defaultWindow,
		requests: make(chan *Request, maxPendingRequests), opened: make(chan error, 1), replies: make(chan bool, 1)}
	c.cond = sync.NewCond(&c.mu)
	m.channels[c.localID] = c
	return c, nil
}

func (m *Mux) forget(c *Channel) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.channels[c.localID] == c {
		delete(m.channels, c.localID)
	}
}

// OpenChannel opens a channel of type typ with type-specific data extra, and waits for the
// peer's answer.
func (m *Mux) OpenChannel(typ string, extra []byte) (*Channel, error) {
	c, err := m.newChannel(typ)
	if err != nil {
		return nil, err
	}
	var b cryptobyte.Builder
	b.AddUint8(msgChannelOpen)
	addString(&b, []byte(typ))
	b.AddUint32(c.localID)
	b.AddUint32(defaultWindow)
	b.AddUint32(defaultMaxPacket)
	b.AddBytes(extra)
	if err := m.pc.WritePacket(b.BytesOrPanic()); err != nil {
		m.forget(c)
		return nil, err
	}
	select {
	case err := <-c.opened:
		if err != nil {
			m.forget(c)
			return nil, err
		}
		return c, nil
	case <-m.done:
		return nil, fmt.Errorf("ssh: connection closed while opening a channel: %w", m.Err())
	}
}

// OpenError is the peer's refusal to open a channel.
type OpenError struct {
	Reason  uint32
	Message string
}

func (e *OpenError) Error() string {
	return fmt.Sprintf("ssh: channel open refused (reason %d): %q", e.Reason, e.Message)
}

// Request is a channel request from the peer.
type Request struct {
	Type      string
	WantReply bool
	Payload   []byte
	c         *Channel
}

// Reply answers the request if the peer wants an answer.
func (r *Request) Reply(ok bool) error {
	if !r.WantReply {
		return nil
	}
	t := byte(msgChannelFailure)
	if ok {
		t = msgChannelSuccess
	}
	return r.c.write([]byte{t}, nil)
}

// Channel is one open channel. Read and Write carry its data; ReadStderr and Stderr its
// extended data of type 1.
type Channel struct {
	m        *Mux
	Type     string
	localID  uint32
	remoteID uint32

	opened  chan error
	replies chan bool
	reqMu   sync.Mutex

	requests chan *Request

	mu           sync.Mutex
	cond         *sync.Cond
	data, ext    []byte
	eof          bool // the peer sent EOF
	closed       bool // the peer sent CLOSE, or the connection ended
	sentEOF      bool
	sentClose    bool
	localWindow  uint32 // what the peer may still send us
	consumed     uint32 // read since our last window adjustment
	remoteWindow uint64
	maxPacket    uint32
}

// Requests returns the peer's channel requests; it is closed when the channel closes.
func (c *Channel) Requests() <-chan *Request { return c.requests }

func (c *Channel) handle(t byte, s *cryptobyte.String) error {
	switch t {
	case msgOpenConfirm:
		var sender, window, maxPacket uint32
		if !s.ReadUint32(&sender) || !s.ReadUint32(&window) || !s.ReadUint32(&maxPacket) {
			return malformed("open confirmation")
		}
		if !validMaxPacket(maxPacket) {
			return fmt.Errorf("ssh: open confirmation with maximum packet size %d", maxPacket)
		}
		c.mu.Lock()
		c.remoteID, c.remoteWindow, c.maxPacket = sender, uint64(window), min(maxPacket, defaultMaxPacket)
		c.mu.Unlock()
		select {
		case c.opened <- nil:
		default:
			return errors.New("ssh: second open confirmation")
		}
	case msgOpenFailure:
		var reason uint32
		var msg []byte
		if !s.ReadUint32(&reason) || !readString(s, &msg) {
			return malformed("open failure")
		}
		select {
		case c.opened <- &OpenError{Reason: reason, Message: sanitize(msg)}:
		default:
			return errors.New("ssh: open failure for an open channel")
		}
	case msgWindowAdjust:
		var n uint32
		if !s.ReadUint32(&n) {
			return malformed("window adjust")
		}
		c.mu.Lock()
		c.remoteWindow += uint64(n)
		if c.remoteWindow > 1<<32-1 {
			c.mu.Unlock()
			return errors.New("ssh: window grew beyond 2^32-1")
		}
		c.cond.Broadcast()
		c.mu.Unlock()
	case msgChannelData, msgChannelExtData:
		var code uint32
		if t == msgChannelExtData && !s.ReadUint32(&code) {
			return malformed("extended data")
		}
		var data []byte
		if !readString(s, &data) || !s.Empty() {
			return malformed("channel data")
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if uint32(len(data)) > c.localWindow || c.eof {
			return errors.New("ssh: peer sent data beyond the window or after EOF")
		}
		c.localWindow -= uint32(len(data))
		switch {
		case t == msgChannelData:
			c.data = append(c.data, data...)
		case code == extendedDataStderr:
			c.ext = append(c.ext, data...)
		default:
			c.consumed += uint32(len(data)) // other extended data is dropped, its window returned
		}
		c.cond.Broadcast()
	case msgChannelEOF:
		c.mu.Lock()
		c.eof = true
		c.cond.Broadcast()
		c.mu.Unlock()
	case msgChannelClose:
		c.mu.Lock()
		already := c.closed
		c.closed, c.eof = true, true
		sent := c.sentClose
		c.cond.Broadcast()
		c.mu.Unlock()
		if already {
			return errors.New("ssh: second channel close")
		}
		close(c.requests)
		c.m.forget(c)
		if !sent {
			return c.sendClose(true)
		}
	case msgChannelRequest:
		var typ []byte
		var want bool
		if !readString(s, &typ) || !readBool(s, &want) {
			return malformed("channel request")
		}
		r := &Request{Type: string(typ), WantReply: want, Payload: append([]byte(nil), *s...), c: c}
		c.mu.Lock()
		closed := c.closed
		c.mu.Unlock()
		if closed {
			return nil
		}
		select {
		case c.requests <- r:
		default:
			if want {
				return c.queue([]byte{msgChannelFailure}, nil)
			}
		}
	case msgChannelSuccess, msgChannelFailure:
		select {
		case c.replies <- t == msgChannelSuccess:
		default:
			return errors.New("ssh: unexpected channel request reply")
		}
	default:
		return fmt.Errorf("ssh: unexpected message %d", t)
	}
	return nil
}

// abort ends the channel when the connection goes.
func (c *Channel) abort() {
	c.mu.Lock()
	wasClosed := c.closed
	c.closed, c.eof = true, true
	c.cond.Broadcast()
	c.mu.Unlock()
	if !wasClosed {
		close(c.requests)
	}
	select {
	case c.opened <- io.EOF:
	default:
	}
}

// write sends a message of type head[0] on the channel: the recipient id, the rest of head,
// and payload.
func (c *Channel) write(head []byte, payload []byte) error {
	return c.m.pc.WritePacket(c.message(head, payload))
}

// queue is write for the Mux's reading goroutine (PacketConn.QueuePacket).
func (c *Channel) queue(head []byte, payload []byte) error {
	return c.m.pc.QueuePacket(c.message(head, payload))
}

func (c *Channel) message(head []byte, payload []byte) []byte {
	var b cryptobyte.Builder
	b.AddUint8(head[0])
	b.AddUint32(c.remoteID)
	b.AddBytes(head[1:])
	b.AddBytes(payload)
	return b.BytesOrPanic()
}

// Read reads channel data; it returns io.EOF after the peer's EOF.
func (c *Channel) Read(p []byte) (int, error) { return c.read(p, false) }

// ReadStderr reads extended data of type stderr.
func (c *Channel) ReadStderr(p []byte) (int, error) { return c.read(p, true) }

func (c *Channel) read(p []byte, ext bool) (int, error) {
	c.mu.Lock()
	buf := &c.data
	if ext {
		buf = &c.ext
	}
	for len(*buf) == 0 && !c.eof {
		c.cond.Wait()
	}
	if len(*buf) == 0 {
		c.mu.Unlock()
		return 0, io.EOF
	}
	n := copy(p, *buf)
	*buf = (*buf)[n:]
	c.consumed += uint32(n)
	var adjust uint32
	if c.consumed >= defaultWindow/2 && !c.closed {
		adjust, c.consumed = c.consumed, 0
		c.localWindow += adjust
	}
	c.mu.Unlock()
	if adjust > 0 {
		var b [4]byte
		b[0], b[1], b[2], b[3] = byte(adjust>>24), byte(adjust>>16), byte(adjust>>8), byte(adjust)
		if err := c.write([]byte{msgWindowAdjust}, b[:]); err != nil {
			return n, err
		}
	}
	return n, nil
}

// Write sends channel data, waiting for the peer's window.
func (c *Channel) Write(p []byte) (int, error) { return c.send(p, false) }

// Stderr returns a writer of extended data of type stderr.
func (c *Channel) Stderr() io.Writer { return stderrWriter{c} }

type stderrWriter struct{ c *Channel }

func (w stderrWriter) Write(p []byte) (int, error) { return w.c.send(p, true) }

func (c *Channel) send(p []byte, ext bool) (int, error) {
	sent := 0
	for len(p) > 0 {
		c.mu.Lock()
		for c.remoteWindow == 0 && !c.closed && !c.sentEOF {
			c.cond.Wait()
		}
		if c.closed || c.sentEOF {
			c.mu.Unlock()
			return sent, io.ErrClosedPipe
		}
		n := min(uint64(len(p)), c.remoteWindow, uint64(c.maxPacket))
		if n == 0 {
			c.mu.Unlock()
			return sent, errors.New("ssh: the peer's maximum packet size leaves no room for data")
		}
		c.remoteWindow -= n
		c.mu.Unlock()
		var b cryptobyte.Builder
		head := []byte{msgChannelData}
		if ext {
			head = []byte{msgChannelExtData, 0, 0, 0, extendedDataStderr}
		}
		addString(&b, p[:n])
		if err := c.write(head, b.BytesOrPanic()); err != nil {
			return sent, err
		}
		sent += int(n)
		p = p[n:]
	}
	return sent, nil
}

// CloseWrite sends EOF.
func (c *Channel) CloseWrite() error {
	c.mu.Lock()
	if c.sentEOF || c.sentClose {
		c.mu.Unlock()
		return nil
	}
	c.sentEOF = true
	c.cond.Broadcast()
	c.mu.Unlock()
	return c.write([]byte{msgChannelEOF}, nil)
}

// Close sends CLOSE; the channel goes when the peer answers with its own.
func (c *Channel) Close() error {
	return c.sendClose(false)
}

func (c *Channel) sendClose(fromReader bool) error {
	c.mu.Lock()
	if c.sentClose {
		c.mu.Unlock()
		return nil
	}
	c.sentClose = true
	c.cond.Broadcast()
	c.mu.Unlock()
	if fromReader {
		return c.queue([]byte{msgChannelClose}, nil)
	}
	return c.write([]byte{msgChannelClose}, nil)
}

// SendRequest sends a channel request; with wantReply it waits for the answer.
func (c *Channel) SendRequest(name string, wantReply bool, payload []byte) (bool, error) {
	c.reqMu.Lock()
	defer c.reqMu.Unlock()
	var b cryptobyte.Builder
	addString(&b, []byte(name))
	if wantReply {
		b.AddUint8(1)
	} else {
		b.AddUint8(0)
	}
	b.AddBytes(payload)
	if err := c.write([]byte{msgChannelRequest}, b.BytesOrPanic()); err != nil {
		return false, err
	}
	if !wantReply {
		return false, nil
	}
	select {
	case ok := <-c.replies:
		return ok, nil
	case <-c.m.done:
		return false, io.EOF
	}
}

// readString reads an SSH string.
func readString(s *cryptobyte.String, out *[]byte) bool {
	var n uint32
	if !s.ReadUint32(&n) || uint64(n) > uint64(len(*s)) {
		return false
	}
	return s.ReadBytes(out, int(n))
}

// ReadString reads an SSH string from s, for the payloads of requests.
func ReadString(s *cryptobyte.String, out *[]byte) bool { return readString(s, out) }

func readBool(s *cryptobyte.String, out *bool) bool {
	var v uint8
	if !s.ReadUint8(&v) {
		return false
	}
	*out = v != 0
	return true
}

func addString(b *cryptobyte.Builder, s []byte) {
	b.AddUint32LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(s) })
}

func sanitize(b []byte) string {
	if len(b) > 256 {
		b = b[:256]
	}
	out := make([]rune, 0, len(b))
	for _, r := range string(b) {
		if r < 0x20 || r == 0x7f {
			r = '?'
		}
		out = append(out, r)
	}
	return string(out)
}
