// Package transport is the SSH transport layer (RFC 4253) that tokenlab's SSH endpoints run
// on: version exchange, ECDH key exchange with host keys of any type its caller can parse (RFC
// 6187 certificates among them), AES-GCM packets, re-keying and strict key exchange.
//
// It exists because golang.org/x/crypto/ssh parses host keys and user keys itself and knows no
// x509v3-* algorithm (golang/go#24266). x/crypto/ssh cannot run its channels on another
// transport, so the layers above this one are tokenlab's too (package ssh and
// ssh/internal/connection); keys, signers and signatures stay x/crypto/ssh's.
package transport

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"sync"
	"time"

	"golang.org/x/crypto/cryptobyte"
	gossh "golang.org/x/crypto/ssh"
)

// DefaultVersion identifies tokenlab. It must not start with "OpenSSH": PKIX-SSH would then
// switch to its pre-RFC 6187 encodings.
const DefaultVersion = "SSH-2.0-tokenlab"

// DefaultRekeyThreshold is how many bytes a side sends, or receives, before it starts a new
// key exchange.
const DefaultRekeyThreshold = 1 << 30

// Limits of the packets that wait for a key exchange we started (RFC 4253 §9: only key
// exchange messages may be sent between our KEXINIT and our NEWKEYS).
const (
	// maxPendingBytes is how much WritePacket queues before it waits for the key exchange.
	maxPendingBytes = 256 << 10
	// maxQueuedBytes is how much QueuePacket queues before it gives up on the connection: the
	// peer keeps sending requests that need answers and does not answer our KEXINIT.
	maxQueuedBytes = 4 * maxPendingBytes
)

// disconnectTimeout bounds how long Disconnect tries to send SSH_MSG_DISCONNECT to a peer
// that does not read.
const disconnectTimeout = 500 * time.Millisecond

// Config configures one end of a connection. The zero value of each field picks a default.
type Config struct {
	Rand         io.Reader
	Version      string // identification string without CRLF
	KeyExchanges []string
	Ciphers      []string
	// RekeyThreshold is how many payload bytes are sent, or received, before a new key exchange
	// is started, as OpenSSH and x/crypto/ssh count; math.MaxUint64 never starts one (the peer
	// still may).
	RekeyThreshold uint64

	// HostKeys are the server's host keys; each offers the algorithms HostKeyAlgorithms gives.
	HostKeys []gossh.Signer
	// ExtInfo is sent in SSH_MSG_EXT_INFO after the first key exchange when the client asks
	// for it (RFC 8308), as name and value pairs: server-sig-algs.
	ExtInfo [][2]string

	// HostKeyAlgorithms are the algorithms a client accepts, in order of preference.
	HostKeyAlgorithms []string
	// ParseHostKey parses the server's host key blob; nil is gossh.ParsePublicKey.
	ParseHostKey func([]byte) (gossh.PublicKey, error)
	// VerifyHostKey decides whether the server's host key is the right one; a client must have it.
	VerifyHostKey func(gossh.PublicKey) error
}

// Conn is one end of an SSH connection above the transport layer: packets in, packets out.
// ReadPacket must be called from one goroutine at a time, and must keep being called while
// WritePacket is used, for key exchanges run on the reading side; WritePacket and QueuePacket
// are safe for concurrent use.
type Conn struct {
	conn   net.Conn
	r      *bufio.Reader
	cfg    Config
	client bool

	localVersion, peerVersion []byte

	// Reading side: the goroutine in ReadPacket owns these.
	rc       *packetCipher
	rseq     uint32
	lastSeq  uint32
	received uint64 // since the last key exchange
	// extInfo tracks which SSH_MSG_EXT_INFO a client may still take (RFC 8308 §2.4).
	extInfo extInfoState

	// Writing side, under wmu. wkex is set from our KEXINIT to our NEWKEYS; other packets wait
	// in pending meanwhile, and go out after our NEWKEYS.
	wmu          sync.Mutex
	wcond        *sync.Cond
	wc           *packetCipher
	wseq         uint32
	wkex         bool
	ourInit      []byte
	pending      [][]byte
	pendingBytes int
	sent         uint64 // since the last key exchange
	werr         error
	wbuf         []byte

	// Write deadlines, under dmu: once Disconnect has set its short one, no write extends it.
	dmu          sync.Mutex
	closing      bool
	writeTimeout time.Duration

	// Results of key exchanges, under mu.
	mu            sync.Mutex
	sessionID     []byte
	hostKey       gossh.PublicKey
	ext           map[string]string
	pendingExt    map[string]string
	algs          algorithms
	strict        bool
	kexCount      int
	extInfoWanted bool
}

// Client runs the client side of the version exchange and the first key exchange on c.
func Client(c net.Conn, cfg *Config) (*Conn, error) {
	if cfg.VerifyHostKey == nil {
		return nil, errors.New("ssh: transport: a client needs VerifyHostKey")
	}
	return handshake(c, cfg, true)
}

// Server runs the server side of the version exchange and the first key exchange on c.
func Server(c net.Conn, cfg *Config) (*Conn, error) {
	if len(cfg.HostKeys) == 0 {
		return nil, errors.New("ssh: transport: a server needs a host key")
	}
	return handshake(c, cfg, false)
}

func handshake(c net.Conn, cfg *Config, client bool) (*Conn, error) {
	t := &Conn{conn: c, r: bufio.NewReaderSize(c, 16<<10), cfg: *cfg, client: client, rc: &packetCipher{}, wc: &packetCipher{}}
	t.wcond = sync.NewCond(&t.wmu)
	if t.cfg.Rand == nil {
		t.cfg.Rand = rand.Reader
	}
	if t.cfg.Version == "" {
		t.cfg.Version = DefaultVersion
	}
	if len(t.cfg.KeyExchanges) == 0 {
		t.cfg.KeyExchanges = DefaultKeyExchanges
	}
	if len(t.cfg.Ciphers) == 0 {
		t.cfg.Ciphers = DefaultCiphers
	}
	if t.cfg.RekeyThreshold == 0 {
		t.cfg.RekeyThreshold = DefaultRekeyThreshold
	}
	for _, k := range t.cfg.KeyExchanges {
		if _, ok := lookupKex(k); !ok {
			return nil, fmt.Errorf("ssh: transport: unsupported key exchange %q", k)
		}
	}
	for _, ci := range t.cfg.Ciphers {
		if cipherKeySize(ci) == 0 {
			return nil, fmt.Errorf("ssh: transport: unsupported cipher %q", ci)
		}
	}
	if err := t.exchangeVersions(); err != nil {
		return nil, err
	}
	t.wmu.Lock()
	err := t.sendKexInitLocked()
	t.wmu.Unlock()
	if err != nil {
		return nil, err
	}
	p, err := t.readKexPacket()
	if err != nil {
		return nil, err
	}
	if p[0] != msgKexInit {
		return nil, t.fail(DisconnectProtocolError, fmt.Errorf("ssh: message %d where the first KEXINIT belongs", p[0]))
	}
	if err := t.runKex(p); err != nil {
		return nil, err
	}
	return t, nil
}

// exchangeVersions sends our identification string and reads the peer's (RFC 4253 §4.2).
func (t *Conn) exchangeVersions() error {
	t.localVersion = []byte(t.cfg.Version)
	if _, err := t.conn.Write(append(slices.Clip(t.localVersion), '\r', '\n')); err != nil {
		return fmt.Errorf("ssh: sending version: %w", err)
	}
	v, err := readVersion(t.r, t.client)
	if err != nil {
		return err
	}
	t.peerVersion = v
	return nil
}

// maxPreVersionLines bounds the lines a server may send before its identification string.
const maxPreVersionLines = 32

func readVersion(r *bufio.Reader, client bool) ([]byte, error) {
	for range maxPreVersionLines {
		line, err := readLine(r)
		if err != nil {
			return nil, fmt.Errorf("ssh: reading the peer's version: %w", err)
		}
		if bytes.HasPrefix(line, []byte("SSH-")) {
			if !bytes.HasPrefix(line, []byte("SSH-2.0-")) && !bytes.HasPrefix(line, []byte("SSH-1.99-")) {
				return nil, fmt.Errorf("ssh: peer speaks an unsupported protocol version: %q", sanitize(line))
			}
			for _, c := range line {
				if c < 0x20 || c > 0x7e {
					return nil, fmt.Errorf("ssh: control character in the peer's version: %q", sanitize(line))
				}
			}
			return line, nil
		}
		if !client {
			return nil, fmt.Errorf("ssh: client sent %q where its version belongs", sanitize(line))
		}
	}
	return nil, errors.New("ssh: server sent too many lines before its version")
}

// readLine reads a line of at most 255 bytes with its CR LF (RFC 4253 §4.2), without them.
func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for len(line) < 255 {
		c, err := r.ReadByte()
		if err != nil {
			if err == io.EOF && len(line) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if c == '\n' {
			return bytes.TrimSuffix(line, []byte{'\r'}), nil
		}
		line = append(line, c)
	}
	return nil, errors.New("line longer than 255 bytes")
}

// SessionID returns the exchange hash of the first key exchange.
func (t *Conn) SessionID() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sessionID
}

// PeerVersion returns the peer's identification string.
func (t *Conn) PeerVersion() string { return string(t.peerVersion) }

// HostKey returns the server's host key, as the client verified it.
func (t *Conn) HostKey() gossh.PublicKey {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.hostKey
}

// HostKeyAlgorithm returns the host key algorithm of the last key exchange.
func (t *Conn) HostKeyAlgorithm() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.algs.hostKey
}

// Extensions returns what the server sent in SSH_MSG_EXT_INFO (a client's view).
func (t *Conn) Extensions() map[string]string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ext
}

// KeyExchanges returns how many key exchanges have completed.
func (t *Conn) KeyExchanges() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.kexCount
}

// LastSequence returns the sequence number of the last packet read, for SSH_MSG_UNIMPLEMENTED.
func (t *Conn) LastSequence() uint32 { return t.lastSeq }

// RemoteAddr returns the peer's address.
func (t *Conn) RemoteAddr() net.Addr { return t.conn.RemoteAddr() }

// Close closes the connection. A writer blocked on a peer that does not read is released.
func (t *Conn) Close() error {
	err := t.conn.Close()
	t.wmu.Lock()
	if t.werr == nil {
		t.werr = net.ErrClosed
	}
	t.wcond.Broadcast()
	t.wmu.Unlock()
	return err
}

// SetWriteTimeout bounds each write to the socket from now on: a peer that reads nothing for
// d ends the connection. Zero means no bound.
func (t *Conn) SetWriteTimeout(d time.Duration) {
	t.dmu.Lock()
	defer t.dmu.Unlock()
	t.writeTimeout = d
}

// Disconnect sends SSH_MSG_DISCONNECT, even in the middle of a key exchange, and closes. It
// returns within about half a second even when the peer reads nothing: a writer blocked in
// the socket's Write is cut off by a write deadline, and the message is then not sent.
func (t *Conn) Disconnect(reason uint32, message string) error {
	t.dmu.Lock()
	t.closing = true
	t.conn.SetWriteDeadline(time.Now().Add(disconnectTimeout))
	t.dmu.Unlock()
	t.wmu.Lock()
	var err error
	if t.werr == nil {
		err = t.writeLocked(MarshalDisconnect(reason, message))
		t.werr = net.ErrClosed
	}
	t.wcond.Broadcast()
	t.wmu.Unlock()
	if e := t.conn.Close(); err == nil {
		err = e
	}
	return err
}

// fail sends a disconnect for err, closes, and returns err.
func (t *Conn) fail(reason uint32, err error) error {
	t.Disconnect(reason, err.Error())
	return err
}

// readRaw reads and decrypts one packet.
func (t *Conn) readRaw() ([]byte, error) {
	p, err := t.rc.open(t.r, nil)
	if err != nil {
		if errors.Is(err, ErrMalformed) {
			return nil, t.fail(DisconnectProtocolError, err)
		}
		if err == errMAC {
			return nil, t.fail(DisconnectMACError, err)
		}
		return nil, err
	}
	t.lastSeq = t.rseq
	t.rseq++
	return p, nil
}

// ReadPacket returns the next packet for the layers above: user authentication and connection
// messages, and service requests. Key exchanges, ignore and debug messages are handled here; a
// peer's disconnect comes back as a *DisconnectError.
func (t *Conn) ReadPacket() ([]byte, error) {
	for {
		p, err := t.readRaw()
		if err != nil {
			return nil, err
		}
		t.received += uint64(len(p))
		if t.received >= t.cfg.RekeyThreshold && t.cfg.RekeyThreshold != math.MaxUint64 {
			if err := t.startKex(); err != nil {
				return nil, err
			}
		}
		ext := t.extInfo
		if ext == extInfoFirst {
			t.extInfo = extInfoBeforeSuccess // only the very next packet may be the first
		}
		switch p[0] {
		case msgKexInit:
			if err := t.runKex(p); err != nil {
				return nil, err
			}
		case msgIgnore, msgDebug, msgUnimplemented:
		case msgDisconnect:
			d, err := parseDisconnect(p)
			if err != nil {
				return nil, err
			}
			t.conn.Close()
			return nil, d
		case msgExtInfo:
			if !t.client {
				continue // we never offer ext-info-s, so a client has no business sending it
			}
			if err := t.readExtInfo(p, ext); err != nil {
				return nil, err
			}
		case msgNewKeys, msgKexECDHInit, msgKexECDHReply:
			return nil, t.fail(DisconnectProtocolError, fmt.Errorf("ssh: key exchange message %d outside a key exchange", p[0]))
		default:
			if t.client && ext != extInfoDone {
				if err := t.afterExtInfo(p[0]); err != nil {
					return nil, err
				}
			}
			return p, nil
		}
	}
}

// extInfoState is where a client is in RFC 8308 §2.4: a server may send SSH_MSG_EXT_INFO as
// the next packet after its first NEWKEYS, and once more right before USERAUTH_SUCCESS.
type extInfoState uint8

const (
	extInfoBeforeKex     extInfoState = iota
	extInfoFirst                      // the first key exchange just ended
	extInfoBeforeSuccess              // one more may come, right before USERAUTH_SUCCESS
	extInfoPending                    // it came: the next packet must be USERAUTH_SUCCESS
	extInfoDone
)

// msgUserAuthSuccess is RFC 4252's SSH_MSG_USERAUTH_SUCCESS, which ends the second chance
// for SSH_MSG_EXT_INFO.
const msgUserAuthSuccess = 52

// readExtInfo takes a server's SSH_MSG_EXT_INFO if it comes where RFC 8308 §2.4 allows.
func (t *Conn) readExtInfo(p []byte, state extInfoState) error {
	if state != extInfoFirst && state != extInfoBeforeSuccess {
		return t.fail(DisconnectProtocolError, errors.New("ssh: EXT_INFO where RFC 8308 allows none"))
	}
	ext, err := parseExtInfo(p)
	if err != nil {
		return t.fail(DisconnectProtocolError, err)
	}
	t.mu.Lock()
	if state == extInfoFirst {
		t.ext = ext
	} else {
		t.pendingExt = ext
		t.extInfo = extInfoPending
	}
	t.mu.Unlock()
	return nil
}

// afterExtInfo follows a client's RFC 8308 state past a packet of type typ for the layers above.
func (t *Conn) afterExtInfo(typ byte) error {
	if t.extInfo == extInfoPending {
		if typ != msgUserAuthSuccess {
			return t.fail(DisconnectProtocolError, fmt.Errorf("ssh: message %d after a second EXT_INFO, where USERAUTH_SUCCESS belongs", typ))
		}
		t.mu.Lock()
		if t.ext == nil {
			t.ext = map[string]string{}
		}
		for k, v := range t.pendingExt {
			t.ext[k] = v
		}
		t.pendingExt = nil
		t.mu.Unlock()
	}
	if typ == msgUserAuthSuccess || t.extInfo == extInfoPending {
		t.extInfo = extInfoDone
	}
	return nil
}

// startKex sends our KEXINIT unless a key exchange is already under way.
func (t *Conn) startKex() error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if t.wkex || t.werr != nil {
		return nil
	}
	return t.sendKexInitLocked()
}

// WritePacket sends one packet. While a key exchange we started is in progress the packet
// waits in a queue, and WritePacket waits only when that queue is full.
func (t *Conn) WritePacket(p []byte) error { return t.write(p, true) }

// QueuePacket is WritePacket for the goroutine that calls ReadPacket: it never waits for a
// key exchange, which can only progress on that goroutine. During one it queues p however
// full the queue is, up to a limit past which the connection fails.
func (t *Conn) QueuePacket(p []byte) error { return t.write(p, false) }

func (t *Conn) write(p []byte, wait bool) error {
	if len(p) == 0 {
		return errors.New("ssh: empty packet")
	}
	t.wmu.Lock()
	defer t.wmu.Unlock()
	for wait && t.wkex && t.werr == nil && t.pendingBytes > 0 && t.pendingBytes+len(p) > maxPendingBytes {
		t.wcond.Wait()
	}
	if t.werr != nil {
		return t.werr
	}
	if !t.wkex {
		return t.sendLocked(p)
	}
	if t.pendingBytes+len(p) > maxQueuedBytes {
		t.werr = fmt.Errorf("ssh: more than %d bytes waiting for the peer to answer our KEXINIT", maxQueuedBytes)
		t.wcond.Broadcast()
		t.conn.Close()
		return t.werr
	}
	t.pending = append(t.pending, bytes.Clone(p))
	t.pendingBytes += len(p)
	return nil
}

// sendLocked sends a packet of the layers above and starts a key exchange when enough bytes
// went out; wmu is held and no key exchange of ours is in progress.
func (t *Conn) sendLocked(p []byte) error {
	if err := t.writeLocked(p); err != nil {
		return err
	}
	t.sent += uint64(len(p))
	if t.sent >= t.cfg.RekeyThreshold && t.cfg.RekeyThreshold != math.MaxUint64 {
		return t.sendKexInitLocked()
	}
	return nil
}

// flushLocked sends the packets that waited for our key exchange; wmu is held. When they
// cross the re-key threshold again, the rest wait for the next one.
func (t *Conn) flushLocked() error {
	pending := t.pending
	t.pending, t.pendingBytes = nil, 0
	for i, p := range pending {
		if t.wkex {
			for _, q := range pending[i:] {
				t.pending = append(t.pending, q)
				t.pendingBytes += len(q)
			}
			return nil
		}
		if err := t.sendLocked(p); err != nil {
			return err
		}
	}
	return nil
}

// writeLocked encrypts and sends one packet; wmu is held.
func (t *Conn) writeLocked(p []byte) error {
	if t.werr != nil {
		return t.werr
	}
	b, err := t.wc.seal(t.wbuf[:0], p, t.cfg.Rand)
	if err != nil {
		return err
	}
	t.wbuf = b
	t.dmu.Lock()
	if !t.closing && t.writeTimeout > 0 {
		t.conn.SetWriteDeadline(time.Now().Add(t.writeTimeout))
	}
	t.dmu.Unlock()
	if _, err := t.conn.Write(b); err != nil {
		t.werr = err
		t.wcond.Broadcast()
		return err
	}
	t.wseq++
	return nil
}

// writeKex sends a key exchange packet, which does not wait for the key exchange to end.
func (t *Conn) writeKex(p []byte) error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	return t.writeLocked(p)
}

// sendKexInitLocked starts a key exchange from our side; wmu is held.
func (t *Conn) sendKexInitLocked() error {
	m := &kexInit{
		kex:      slices.Clone(t.cfg.KeyExchanges),
		cipherCS: t.cfg.Ciphers, cipherSC: t.cfg.Ciphers,
		macCS: macAdvertised, macSC: macAdvertised,
		compCS: []string{compressionNone}, compSC: []string{compressionNone},
	}
	if _, err := io.ReadFull(t.cfg.Rand, m.cookie[:]); err != nil {
		return err
	}
	t.mu.Lock()
	first := t.kexCount == 0
	t.mu.Unlock()
	if t.client {
		m.hostKey = t.cfg.HostKeyAlgorithms
		if first {
			m.kex = append(m.kex, extInfoClient, strictKexClient)
		}
	} else {
		for _, k := range t.cfg.HostKeys {
			for _, a := range HostKeyAlgorithms(k) {
				if !slices.Contains(m.hostKey, a) {
					m.hostKey = append(m.hostKey, a)
				}
			}
		}
		if first {
			m.kex = append(m.kex, strictKexServer)
		}
	}
	t.ourInit = m.marshal()
	t.wkex = true
	return t.writeLocked(t.ourInit)
}

// readKexPacket reads a packet during a key exchange: ignore, debug and unimplemented messages
// are skipped (fatal during a strict first exchange), a disconnect is an error.
func (t *Conn) readKexPacket() ([]byte, error) {
	for {
		p, err := t.readRaw()
		if err != nil {
			return nil, err
		}
		switch p[0] {
		case msgIgnore, msgDebug, msgUnimplemented:
			t.mu.Lock()
			strictFirst := t.strict && t.kexCount == 0
			t.mu.Unlock()
			if strictFirst {
				return nil, t.fail(DisconnectProtocolError, fmt.Errorf("ssh: message %d during a strict key exchange", p[0]))
			}
			continue
		case msgDisconnect:
			d, err := parseDisconnect(p)
			if err != nil {
				return nil, err
			}
			t.conn.Close()
			return nil, d
		}
		return p, nil
	}
}

// runKex runs a key exchange that the peer's KEXINIT (peerInit) starts or answers.
func (t *Conn) runKex(peerInit []byte) error {
	peer, err := parseKexInit(peerInit)
	if err != nil {
		return t.fail(DisconnectProtocolError, err)
	}
	kexSeq := t.lastSeq
	t.wmu.Lock()
	if !t.wkex {
		err = t.sendKexInitLocked()
	}
	ourInit := t.ourInit
	t.wmu.Unlock()
	if err != nil {
		return err
	}
	ours, err := parseKexInit(ourInit)
	if err != nil {
		return err
	}
	client, server, ic, is := ours, peer, ourInit, peerInit
	if !t.client {
		client, server, ic, is = peer, ours, peerInit, ourInit
	}
	t.mu.Lock()
	first := t.kexCount == 0
	if first {
		t.strict = slices.Contains(client.kex, strictKexClient) && slices.Contains(server.kex, strictKexServer)
		t.extInfoWanted = !t.client && slices.Contains(client.kex, extInfoClient)
	}
	strict := t.strict
	t.mu.Unlock()
	if first && strict && kexSeq != 0 {
		return t.fail(DisconnectProtocolError, errors.New("ssh: strict key exchange: KEXINIT was not the first packet"))
	}
	algs, err := negotiate(client, server)
	if err != nil {
		return t.fail(DisconnectKeyExchangeFailed, err)
	}
	if peer.firstKexFollows && !guessRight(client, server) {
		// The wrong guess's packet is ignored (RFC 4253 §7), but it must be one of a key
		// exchange method's own messages: anything else would be lost unseen.
		p, err := t.readKexPacket()
		if err != nil {
			return err
		}
		if p[0] < msgKexMethodFirst || p[0] > msgKexMethodLast {
			return t.fail(DisconnectProtocolError, fmt.Errorf("ssh: message %d where the peer's guessed key exchange packet belongs", p[0]))
		}
	}
	m, _ := lookupKex(algs.kex)
	var h, k []byte
	if t.client {
		h, k, err = t.kexClient(m, algs, ic, is, first)
	} else {
		h, k, err = t.kexServer(m, algs, ic, is)
	}
	if err != nil {
		return err
	}
	t.mu.Lock()
	if first {
		t.sessionID = h
	}
	sid := t.sessionID
	t.mu.Unlock()

	cs, err := newDirection(m, k, h, sid, 'A', 'C', algs.cipherCS)
	if err != nil {
		return err
	}
	sc, err := newDirection(m, k, h, sid, 'B', 'D', algs.cipherSC)
	if err != nil {
		return err
	}
	out, in := cs, sc
	if !t.client {
		out, in = sc, cs
	}

	t.wmu.Lock()
	err = t.writeLocked([]byte{msgNewKeys})
	if err == nil {
		t.wc = out
		if strict {
			t.wseq = 0
		}
		if first && t.extInfoWanted && len(t.cfg.ExtInfo) > 0 {
			err = t.writeLocked(marshalExtInfo(t.cfg.ExtInfo))
		}
	}
	t.wkex, t.ourInit, t.sent = false, nil, 0
	if err == nil {
		err = t.flushLocked()
	}
	t.wcond.Broadcast()
	t.wmu.Unlock()
	if err != nil {
		return err
	}

	p, err := t.readKexPacket()
	if err != nil {
		return err
	}
	if p[0] != msgNewKeys || len(p) != 1 {
		return t.fail(DisconnectProtocolError, fmt.Errorf("ssh: message %d where NEWKEYS belongs", p[0]))
	}
	t.rc = in
	if strict {
		t.rseq = 0
	}
	t.received = 0
	if first && t.client {
		t.extInfo = extInfoFirst
	}
	t.mu.Lock()
	t.algs = algs
	t.kexCount++
	t.mu.Unlock()
	return nil
}

// newDirection derives one direction's IV and key and makes its cipher.
func newDirection(m kexMethod, k, h, sid []byte, ivLetter, keyLetter byte, cipherName string) (*packetCipher, error) {
	iv := deriveKey(m, k, h, ivLetter, sid, gcmIVSize)
	key := deriveKey(m, k, h, keyLetter, sid, cipherKeySize(cipherName))
	return newGCM(key, iv)
}

// kexClient is the client's half of an ECDH exchange: it returns H and K.
func (t *Conn) kexClient(m kexMethod, algs algorithms, ic, is []byte, first bool) ([]byte, []byte, error) {
	priv, err := m.curve.GenerateKey(t.cfg.Rand)
	if err != nil {
		return nil, nil, err
	}
	qc := priv.PublicKey().Bytes()
	if err := t.writeKex(marshalECDHInit(qc)); err != nil {
		return nil, nil, err
	}
	p, err := t.readKexPacket()
	if err != nil {
		return nil, nil, err
	}
	reply, err := parseECDHReply(p)
	if err != nil {
		return nil, nil, t.fail(DisconnectProtocolError, err)
	}
	peerPub, err := m.curve.NewPublicKey(reply.q)
	if err != nil {
		return nil, nil, t.fail(DisconnectKeyExchangeFailed, fmt.Errorf("ssh: server's ECDH public value: %w", err))
	}
	k, err := priv.ECDH(peerPub)
	if err != nil {
		return nil, nil, t.fail(DisconnectKeyExchangeFailed, fmt.Errorf("ssh: ECDH: %w", err))
	}
	parse := t.cfg.ParseHostKey
	if parse == nil {
		parse = gossh.ParsePublicKey
	}
	hostKey, err := parse(reply.hostKey)
	if err != nil {
		return nil, nil, t.fail(DisconnectHostKeyNotVerifiable, fmt.Errorf("ssh: server's host key: %w", err))
	}
	if !keyFitsAlgorithm(hostKey, algs.hostKey) {
		return nil, nil, t.fail(DisconnectHostKeyNotVerifiable, fmt.Errorf("ssh: server sent a %s host key for algorithm %s", hostKey.Type(), algs.hostKey))
	}
	h := exchangeHash(m, t.localVersion, t.peerVersion, ic, is, reply.hostKey, qc, reply.q, k)
	sig, err := ParseSignature(reply.sig)
	if err != nil {
		return nil, nil, t.fail(DisconnectProtocolError, fmt.Errorf("ssh: host key signature: %w", err))
	}
	if isRSASHA2(algs.hostKey) && sig.Format != algs.hostKey {
		return nil, nil, t.fail(DisconnectHostKeyNotVerifiable, fmt.Errorf("ssh: %s signature for host key algorithm %s", sig.Format, algs.hostKey))
	}
	if err := hostKey.Verify(h, sig); err != nil {
		return nil, nil, t.fail(DisconnectHostKeyNotVerifiable, fmt.Errorf("ssh: host key signature does not verify: %w", err))
	}
	if first {
		if err := t.cfg.VerifyHostKey(hostKey); err != nil {
			return nil, nil, t.fail(DisconnectHostKeyNotVerifiable, err)
		}
	} else if !bytes.Equal(hostKey.Marshal(), t.HostKey().Marshal()) {
		return nil, nil, t.fail(DisconnectHostKeyNotVerifiable, errors.New("ssh: server's host key changed in a re-key"))
	}
	t.mu.Lock()
	t.hostKey = hostKey
	t.mu.Unlock()
	return h, k, nil
}

// kexServer is the server's half of an ECDH exchange: it returns H and K.
func (t *Conn) kexServer(m kexMethod, algs algorithms, ic, is []byte) ([]byte, []byte, error) {
	p, err := t.readKexPacket()
	if err != nil {
		return nil, nil, err
	}
	qc, err := parseECDHInit(p)
	if err != nil {
		return nil, nil, t.fail(DisconnectProtocolError, err)
	}
	peerPub, err := m.curve.NewPublicKey(qc)
	if err != nil {
		return nil, nil, t.fail(DisconnectKeyExchangeFailed, fmt.Errorf("ssh: client's ECDH public value: %w", err))
	}
	priv, err := m.curve.GenerateKey(t.cfg.Rand)
	if err != nil {
		return nil, nil, err
	}
	k, err := priv.ECDH(peerPub)
	if err != nil {
		return nil, nil, t.fail(DisconnectKeyExchangeFailed, fmt.Errorf("ssh: ECDH: %w", err))
	}
	var signer gossh.Signer
	for _, s := range t.cfg.HostKeys {
		if slices.Contains(HostKeyAlgorithms(s), algs.hostKey) {
			signer = s
			break
		}
	}
	qs := priv.PublicKey().Bytes()
	ks := signer.PublicKey().Marshal()
	h := exchangeHash(m, t.peerVersion, t.localVersion, ic, is, ks, qc, qs, k)
	sig, err := Sign(signer, t.cfg.Rand, algs.hostKey, h)
	if err != nil {
		return nil, nil, t.fail(DisconnectByApplication, fmt.Errorf("ssh: signing with the host key: %w", err))
	}
	reply := &ecdhReply{hostKey: ks, q: qs, sig: gossh.Marshal(sig)}
	if err := t.writeKex(reply.marshal()); err != nil {
		return nil, nil, err
	}
	return h, k, nil
}

// HostKeyAlgorithms returns the algorithms a host key (or user key) signs with: RSA keys sign
// with rsa-sha2-512 and rsa-sha2-256 (never SHA-1 ssh-rsa), other keys with their type.
func HostKeyAlgorithms(s gossh.Signer) []string {
	if m, ok := s.(gossh.MultiAlgorithmSigner); ok {
		var out []string
		for _, a := range m.Algorithms() {
			if a != gossh.KeyAlgoRSA {
				out = append(out, a)
			}
		}
		return out
	}
	typ := s.PublicKey().Type()
	if typ == gossh.KeyAlgoRSA {
		if _, ok := s.(gossh.AlgorithmSigner); ok {
			return []string{gossh.KeyAlgoRSASHA512, gossh.KeyAlgoRSASHA256}
		}
		return nil
	}
	return []string{typ}
}

// Sign signs data with s for algorithm algo.
func Sign(s gossh.Signer, rand io.Reader, algo string, data []byte) (*gossh.Signature, error) {
	if as, ok := s.(gossh.AlgorithmSigner); ok {
		return as.SignWithAlgorithm(rand, data, algo)
	}
	if algo != s.PublicKey().Type() {
		return nil, fmt.Errorf("ssh: the %s key cannot sign with %s", s.PublicKey().Type(), algo)
	}
	return s.Sign(rand, data)
}

// keyFitsAlgorithm reports whether key may be used with public key algorithm algo.
func keyFitsAlgorithm(key gossh.PublicKey, algo string) bool {
	if isRSASHA2(algo) {
		return key.Type() == gossh.KeyAlgoRSA
	}
	return key.Type() == algo
}

// KeyFitsAlgorithm reports whether key may be used with public key algorithm algo: the key's
// type, or rsa-sha2-256/512 for an ssh-rsa key.
func KeyFitsAlgorithm(key gossh.PublicKey, algo string) bool { return keyFitsAlgorithm(key, algo) }

func isRSASHA2(algo string) bool {
	return algo == gossh.KeyAlgoRSASHA256 || algo == gossh.KeyAlgoRSASHA512
}

// ParseSignature parses an SSH signature blob: string format, string blob (RFC 4253 §6.6).
// Trailing data is an error, except for the security-key formats whose flags and counter
// follow (kept in Rest).
func ParseSignature(b []byte) (*gossh.Signature, error) {
	s := cryptobyte.String(b)
	var format, blob []byte
	if !readString(&s, &format) || !readString(&s, &blob) {
		return nil, malformed("signature")
	}
	sig := &gossh.Signature{Format: string(format), Blob: blob}
	if !s.Empty() {
		switch sig.Format {
		case gossh.KeyAlgoSKECDSA256, gossh.KeyAlgoSKED25519:
			sig.Rest = []byte(s)
		default:
			return nil, malformed("trailing data after the signature")
		}
	}
	return sig, nil
}
