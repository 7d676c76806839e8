package ssh

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/cryptobyte"
	gossh "golang.org/x/crypto/ssh"

	"tokenlab/ssh/internal/connection"
	"tokenlab/ssh/internal/transport"
)

// ClientConfig configures a client connection.
type ClientConfig struct {
	// User is the login name; "" takes it from the signer's certificate (CertificateUser).
	User string
	// Signer is the one key the client authenticates with: the client offers no other, so a
	// server that disconnects after a few failures never sees the wrong certificates.
	Signer gossh.Signer
	// HostKeyCallback checks a plain host key (known_hosts, a pinned key). x/crypto/ssh then
	// runs the whole connection.
	HostKeyCallback gossh.HostKeyCallback
	// HostCAs, instead, asks for an RFC 6187 host key and validates its certificate against
	// these roots and the host name; tokenlab's own transport then runs the connection, since
	// x/crypto/ssh cannot parse such a key (golang/go#24266).
	HostCAs *x509.CertPool
	// HostKeyAlgorithms restricts the host key algorithms offered; empty means the defaults
	// (X509Algorithms with HostCAs, x/crypto/ssh's otherwise).
	HostKeyAlgorithms []string
	// Card, when set, is watched: when it leaves its reader the connection is closed (a
	// *cardsock.Watcher watches the card of another process).
	Card Presence
	// Timeout bounds connecting, the handshake and authentication; 0 means 30 s.
	Timeout time.Duration
	// RekeyThreshold is how many bytes the connection sends or receives before the client
	// starts a new key exchange; 0 means the default: 1 GiB on tokenlab's transport (HostCAs),
	// x/crypto/ssh's own for its cipher otherwise.
	RekeyThreshold uint64
	// Now is the clock for certificates; nil is time.Now.
	Now func() time.Time
}

// Client is an authenticated SSH connection.
type Client struct {
	conn    clientConn
	user    string
	hostKey gossh.PublicKey

	done    chan struct{}
	stopped chan struct{}
	once    sync.Once
	reason  error
}

// clientConn is the connection below a Client: x/crypto/ssh's or tokenlab's own.
type clientConn interface {
	run(ctx context.Context, o RunOptions) (int, error)
	close() error
	wait() error
}

// RunOptions describe a session: a command or a shell, with or without a terminal.
type RunOptions struct {
	// Command is run by the server; "" asks for a shell.
	Command string
	// PTY asks for a terminal first.
	PTY    *PTY
	Stdin  io.Reader // nil sends EOF at once
	Stdout io.Writer // nil discards
	Stderr io.Writer // nil discards
}

// ErrCardRemoved is why a connection ended when its card left the reader.
var ErrCardRemoved = errors.New("ssh: the smart card was removed")

// Dial connects to addr and authenticates with cfg.Signer.
func Dial(ctx context.Context, addr string, cfg *ClientConfig) (*Client, error) {
	if cfg.Signer == nil {
		return nil, errors.New("ssh: a client needs a signer")
	}
	if (cfg.HostKeyCallback == nil) == (cfg.HostCAs == nil) {
		return nil, errors.New("ssh: a client needs exactly one of HostKeyCallback and HostCAs")
	}
	user := cfg.User
	if user == "" {
		xs, ok := cfg.Signer.PublicKey().(*X509Key)
		if !ok {
			return nil, errors.New("ssh: no user name given and the key has no certificate to take one from")
		}
		if user = CertificateUser(xs.Certificate()); user == "" {
			return nil, errors.New("ssh: the certificate names no user (no UPN, no CN)")
		}
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: timeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	nc.SetDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	c := &Client{user: user, done: make(chan struct{}), stopped: make(chan struct{})}
	if cfg.HostCAs != nil {
		c.conn, c.hostKey, err = dialOwn(nc, host, user, cfg)
	} else {
		c.conn, c.hostKey, err = dialGo(nc, addr, user, cfg)
	}
	if err != nil {
		nc.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	go func() {
		err := c.conn.wait()
		c.end(err)
		close(c.stopped)
	}()
	if cfg.Card != nil {
		go c.watch(cfg.Card)
	}
	return c, nil
}

func (c *Client) end(err error) {
	c.once.Do(func() {
		c.reason = err
		close(c.done)
	})
}

// watch closes the connection when card leaves its reader.
func (c *Client) watch(card Presence) {
	seen := card.Removals()
	for {
		ch := card.Changed()
		if !card.Present() || card.Removals() != seen {
			c.end(ErrCardRemoved)
			c.conn.close()
			return
		}
		select {
		case <-c.done:
			return
		case <-ch:
		}
	}
}

// User returns the login name the client authenticated as.
func (c *Client) User() string { return c.user }

// HostKey returns the server's host key.
func (c *Client) HostKey() gossh.PublicKey { return c.hostKey }

// Run runs one session and returns the command's exit status.
func (c *Client) Run(ctx context.Context, o RunOptions) (int, error) {
	if o.Stdout == nil {
		o.Stdout = io.Discard
	}
	if o.Stderr == nil {
		o.Stderr = io.Discard
	}
	status, err := c.conn.run(ctx, o)
	select {
	case <-c.done:
		if errors.Is(c.reason, ErrCardRemoved) {
			return status, ErrCardRemoved
		}
	default:
	}
	return status, err
}

// Done is closed when the connection ends; Err then says why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the connection ended, nil while it is open.
func (c *Client) Err() error {
	select {
	case <-c.done:
		return c.reason
	default:
		return nil
	}
}

// Close closes the connection.
func (c *Client) Close() error {
	c.end(net.ErrClosed)
	err := c.conn.close()
	<-c.stopped
	return err
}

// ----- x/crypto/ssh below: plain host keys -----

type goConn struct{ c *gossh.Client }

func dialGo(nc net.Conn, addr, user string, cfg *ClientConfig) (clientConn, gossh.PublicKey, error) {
	var hostKey gossh.PublicKey
	gcfg := &gossh.ClientConfig{
		User:              user,
		Auth:              []gossh.AuthMethod{gossh.PublicKeys(cfg.Signer)},
		HostKeyAlgorithms: cfg.HostKeyAlgorithms,
		ClientVersion:     transport.DefaultVersion,
		Config:            gossh.Config{RekeyThreshold: cfg.RekeyThreshold},
		HostKeyCallback: func(hostname string, remote net.Addr, key gossh.PublicKey) error {
			hostKey = key
			return cfg.HostKeyCallback(hostname, remote, key)
		},
	}
	sc, chans, reqs, err := gossh.NewClientConn(nc, addr, gcfg)
	if err != nil {
		return nil, nil, err
	}
	return &goConn{gossh.NewClient(sc, chans, reqs)}, hostKey, nil
}

func (g *goConn) close() error { return g.c.Close() }
func (g *goConn) wait() error  { return g.c.Wait() }

func (g *goConn) run(ctx context.Context, o RunOptions) (int, error) {
	s, err := g.c.NewSession()
	if err != nil {
		return -1, err
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	s.Stdin, s.Stdout, s.Stderr = o.Stdin, o.Stdout, o.Stderr
	if o.PTY != nil {
		if err := s.RequestPty(o.PTY.Term, int(o.PTY.Rows), int(o.PTY.Cols), gossh.TerminalModes{}); err != nil {
			return -1, err
		}
	}
	if o.Command == "" {
		err = s.Shell()
	} else {
		err = s.Start(o.Command)
	}
	if err != nil {
		return -1, err
	}
	err = s.Wait()
	var ee *gossh.ExitError
	if errors.As(err, &ee) {
		return ee.ExitStatus(), nil
	}
	if err != nil {
		return -1, err
	}
	return 0, nil
}

// ----- tokenlab's own below: RFC 6187 host keys -----

type ownConn struct {
	t   *transport.Conn
	m   *connection.Mux
	err chan error
}

func dialOwn(nc net.Conn, host, user string, cfg *ClientConfig) (clientConn, gossh.PublicKey, error) {
	now := time.Now
	if cfg.Now != nil {
		now = cfg.Now
	}
	algs := cfg.HostKeyAlgorithms
	if len(algs) == 0 {
		algs = X509Algorithms
	}
	t, err := transport.Client(nc, &transport.Config{
		RekeyThreshold:    cfg.RekeyThreshold,
		HostKeyAlgorithms: algs,
		ParseHostKey:      ParsePublicKey,
		VerifyHostKey: func(k gossh.PublicKey) error {
			xk, ok := k.(*X509Key)
			if !ok {
				return fmt.Errorf("ssh: server offered a %s host key, not an X.509 certificate", k.Type())
			}
			if err := VerifyChain(xk, cfg.HostCAs, PurposeServer, now()); err != nil {
				return err
			}
			if err := xk.Certificate().VerifyHostname(host); err != nil {
				return fmt.Errorf("ssh: host certificate: %w", err)
			}
			return nil
		},
	})
	if err != nil {
		return nil, nil, err
	}
	if err := clientAuth(t, user, cfg.Signer); err != nil {
		t.Close()
		return nil, nil, err
	}
	o := &ownConn{t: t, m: connection.New(t), err: make(chan error, 1)}
	go func() { o.err <- o.m.Run() }()
	return o, t.HostKey(), nil
}

// clientAuth authenticates with the one signer: a query first, so that the token is asked
// for a signature (and the person for a PIN) only for a key the server accepts.
func clientAuth(t *transport.Conn, user string, signer gossh.Signer) error {
	if err := t.WritePacket(transport.MarshalServiceRequest(serviceUserAuth)); err != nil {
		return err
	}
	p, err := readAuthPacket(t)
	if err != nil {
		return err
	}
	if svc, err := transport.ParseService(p, true); err != nil || svc != serviceUserAuth {
		return fmt.Errorf("ssh: server did not accept the user authentication service: %v", err)
	}
	pub := signer.PublicKey()
	blob := pub.Marshal()
	algo, err := pickAlgorithm(signer, t.Extensions()["server-sig-algs"])
	if err != nil {
		return err
	}
	q := &authRequest{user: user, service: serviceConnection, method: methodPublicKey, algo: algo, blob: blob}
	if err := t.WritePacket(q.marshal()); err != nil {
		return err
	}
	if p, err = readAuthPacket(t); err != nil {
		return err
	}
	switch p[0] {
	case msgUserAuthPKOK:
	case msgUserAuthFailure:
		return fmt.Errorf("ssh: server refused the %s key %s for %q", pub.Type(), gossh.FingerprintSHA256(pub), user)
	default:
		return fmt.Errorf("ssh: message %d where PK_OK belongs", p[0])
	}
	sig, err := transport.Sign(signer, nil, algo, signedData(t.SessionID(), user, serviceConnection, algo, blob))
	if err != nil {
		return fmt.Errorf("ssh: signing with the %s key: %w", pub.Type(), err)
	}
	q.hasSig, q.sig = true, gossh.Marshal(sig)
	if err := t.WritePacket(q.marshal()); err != nil {
		return err
	}
	if p, err = readAuthPacket(t); err != nil {
		return err
	}
	switch p[0] {
	case msgUserAuthSuccess:
		return nil
	case msgUserAuthFailure:
		return fmt.Errorf("ssh: server refused the signature of the %s key for %q", pub.Type(), user)
	}
	return fmt.Errorf("ssh: message %d where the authentication result belongs", p[0])
}

// readAuthPacket reads the next packet of user authentication, skipping banners.
func readAuthPacket(t *transport.Conn) ([]byte, error) {
	for {
		p, err := t.ReadPacket()
		if err != nil {
			return nil, err
		}
		if p[0] != msgUserAuthBanner {
			return p, nil
		}
	}
}

// pickAlgorithm chooses the signer's first algorithm the server lists in server-sig-algs,
// else its first.
func pickAlgorithm(s gossh.Signer, serverAlgs string) (string, error) {
	mine := transport.HostKeyAlgorithms(s)
	if len(mine) == 0 {
		return "", fmt.Errorf("ssh: the %s key has no algorithm to sign with", s.PublicKey().Type())
	}
	if serverAlgs != "" {
		theirs := strings.Split(serverAlgs, ",")
		for _, a := range mine {
			if contains(theirs, a) {
				return a, nil
			}
		}
	}
	return mine[0], nil
}

func (o *ownConn) close() error { return o.t.Close() }

func (o *ownConn) wait() error {
	err := <-o.err
	o.err <- err
	return err
}

func (o *ownConn) run(ctx context.Context, opts RunOptions) (int, error) {
	ch, err := o.m.OpenChannel("session", nil)
	if err != nil {
		return -1, err
	}
	defer ch.Close()
	stop := context.AfterFunc(ctx, func() { ch.Close() })
	defer stop()
	if opts.PTY != nil {
		var b cryptobyte.Builder
		addString(&b, []byte(opts.PTY.Term))
		b.AddUint32(opts.PTY.Cols)
		b.AddUint32(opts.PTY.Rows)
		b.AddUint32(0)
		b.AddUint32(0)
		addString(&b, []byte{0}) // TTY_OP_END
		if ok, err := ch.SendRequest("pty-req", true, b.BytesOrPanic()); err != nil || !ok {
			return -1, fmt.Errorf("ssh: server refused a terminal (%v)", err)
		}
	}
	var ok bool
	if opts.Command == "" {
		ok, err = ch.SendRequest("shell", true, nil)
	} else {
		var b cryptobyte.Builder
		addString(&b, []byte(opts.Command))
		ok, err = ch.SendRequest("exec", true, b.BytesOrPanic())
	}
	if err != nil {
		return -1, err
	}
	if !ok {
		return -1, errors.New("ssh: server refused the session request")
	}
	status := -1
	statusDone := make(chan struct{})
	go func() {
		defer close(statusDone)
		for r := range ch.Requests() {
			p := cryptobyte.String(r.Payload)
			var v uint32
			if r.Type == "exit-status" && p.ReadUint32(&v) {
				status = int(v)
			}
			r.Reply(false)
		}
	}()
	if opts.Stdin != nil {
		go func() {
			io.Copy(ch, opts.Stdin)
			ch.CloseWrite()
		}()
	} else {
		ch.CloseWrite()
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		io.Copy(opts.Stderr, readerFunc(ch.ReadStderr))
	}()
	_, err = io.Copy(opts.Stdout, ch)
	wg.Wait()
	ch.Close()
	select {
	case <-statusDone:
	case <-ctx.Done():
		return -1, ctx.Err()
	}
	if err != nil {
		return status, err
	}
	if status < 0 {
		if e := o.m.Err(); e != nil {
			return -1, fmt.Errorf("ssh: connection ended before the command's exit status: %w", e)
		}
		return -1, errors.New("ssh: no exit status")
	}
	return status, ctx.Err()
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }
