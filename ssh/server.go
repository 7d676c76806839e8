package ssh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/cryptobyte"
	gossh "golang.org/x/crypto/ssh"

	"tokenlab/ssh/internal/connection"
	"tokenlab/ssh/internal/transport"
)

// Defaults of a ServerConfig.
const (
	// DefaultMaxAuthTries is how many failed authentication requests a connection gets
	// before the server disconnects, as SecureCRT's smart-card guide describes servers doing
	// when a client tries every certificate on the card.
	DefaultMaxAuthTries = 3
	// DefaultAuthTimeout bounds the key exchange and user authentication (OpenSSH's
	// LoginGraceTime is 120 s).
	DefaultAuthTimeout = 30 * time.Second
	// DefaultWriteTimeout bounds each write to an authenticated client: one that reads nothing
	// for that long, while the server has something to send, is disconnected.
	DefaultWriteTimeout = 30 * time.Second
	// DefaultMaxStartups is how many connections may be in their handshake or authentication
	// at once, as OpenSSH's MaxStartups; DefaultMaxStartupsPerSource is how many of them may
	// come from one address (OpenSSH's PerSourceMaxStartups).
	DefaultMaxStartups          = 32
	DefaultMaxStartupsPerSource = 8
)

// DefaultAcceptEnv are the environment variables a client may set, as Debian's sshd_config
// has AcceptEnv.
var DefaultAcceptEnv = []string{"LANG", "LC_*"}

// ServerConfig configures a Server.
type ServerConfig struct {
	// HostKeys sign the key exchange: plain keys (gossh.NewSignerFromSigner), RFC 6187 keys
	// (NewX509Signer), on the token or not.
	HostKeys []gossh.Signer
	// Auth decides who may log in with which key.
	Auth Authorizer
	// Handler runs each session's command or shell; nil runs none and answers exit status 1.
	Handler Handler
	// MaxAuthTries is how many failed authentication requests end the connection; 0 means
	// DefaultMaxAuthTries. A query for a key the server accepts is no failure; "none" is no
	// attempt.
	MaxAuthTries int
	// AuthTimeout bounds the handshake and user authentication; 0 means DefaultAuthTimeout.
	AuthTimeout time.Duration
	// WriteTimeout bounds each write to an authenticated client; 0 means DefaultWriteTimeout.
	WriteTimeout time.Duration
	// MaxStartups bounds the connections not yet authenticated, in all and from one address;
	// a connection beyond either is closed at once. 0 means DefaultMaxStartups and
	// DefaultMaxStartupsPerSource.
	MaxStartups, MaxStartupsPerSource int
	// RekeyThreshold is how many bytes a connection sends or receives before the server starts
	// a new key exchange; 0 means transport.DefaultRekeyThreshold (1 GiB).
	RekeyThreshold uint64
	// AcceptEnv are the names a client's env requests may set, as OpenSSH's AcceptEnv: a name,
	// or a prefix followed by "*". Nil means DefaultAcceptEnv. Names starting with TOKENLAB_
	// are refused whatever it says: the server sets those.
	AcceptEnv []string
	// Banner is sent before authentication (RFC 4252 §5.4), when set.
	Banner string
	// Version is the identification string; empty means transport.DefaultVersion.
	Version string
	Log     *slog.Logger
}

// Handler runs a session and returns its exit status.
type Handler func(ctx context.Context, s *Session) int

// Session is one "session" channel with its command (RFC 4254 §6).
type Session struct {
	Identity Identity
	// Command is the exec request's command; "" for a shell.
	Command string
	// PTY is the terminal the client asked for, nil without pty-req.
	PTY *PTY
	// Env holds the client's env requests that ServerConfig.AcceptEnv accepts.
	Env    map[string]string
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// PTY is a pty-req (RFC 4254 §6.2).
type PTY struct {
	Term       string
	Cols, Rows uint32
}

// Server is an SSH server: RFC 4253 transport with plain and RFC 6187 host keys, RFC 4252
// publickey authentication with plain and RFC 6187 keys, and RFC 4254 sessions.
type Server struct {
	cfg ServerConfig

	mu    sync.Mutex
	conns map[*serverConn]struct{}
	// Connections in their handshake or authentication: in all, and per source address.
	startups         int
	startupsBySource map[string]int
}

// NewServer checks cfg and returns a server.
func NewServer(cfg ServerConfig) (*Server, error) {
	if len(cfg.HostKeys) == 0 {
		return nil, errors.New("ssh: a server needs a host key")
	}
	if cfg.Auth == nil {
		return nil, errors.New("ssh: a server needs an Authorizer")
	}
	if cfg.MaxAuthTries <= 0 {
		cfg.MaxAuthTries = DefaultMaxAuthTries
	}
	if cfg.AuthTimeout <= 0 {
		cfg.AuthTimeout = DefaultAuthTimeout
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.MaxStartups <= 0 {
		cfg.MaxStartups = DefaultMaxStartups
	}
	if cfg.MaxStartupsPerSource <= 0 {
		cfg.MaxStartupsPerSource = DefaultMaxStartupsPerSource
	}
	if cfg.AcceptEnv == nil {
		cfg.AcceptEnv = DefaultAcceptEnv
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, conns: map[*serverConn]struct{}{}, startupsBySource: map[string]int{}}, nil
}

// Serve accepts connections on ln until ctx ends or ln fails, and then closes every
// connection it accepted.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer s.CloseAll("server stopping")
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.ServeConn(ctx, c); err != nil && !errors.Is(err, io.EOF) {
				s.cfg.Log.Info("ssh connection ended", "remote", c.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// serverConn is one authenticated connection.
type serverConn struct {
	t  *transport.Conn
	id Identity
}

// ServeConn runs one connection until it ends. It returns the reason it ended (io.EOF when
// the client closed it).
func (s *Server) ServeConn(ctx context.Context, c net.Conn) error {
	defer c.Close()
	source := sourceOf(c.RemoteAddr())
	if err := s.startup(source); err != nil {
		return err
	}
	started := true
	defer func() {
		if started {
			s.startupDone(source)
		}
	}()
	c.SetDeadline(time.Now().Add(s.cfg.AuthTimeout))
	algs := userKeyAlgorithms
	t, err := transport.Server(c, &transport.Config{HostKeys: s.cfg.HostKeys, Version: s.cfg.Version,
		RekeyThreshold: s.cfg.RekeyThreshold, ExtInfo: [][2]string{{"server-sig-algs", strings.Join(algs, ",")}}})
	if err != nil {
		return fmt.Errorf("ssh: handshake: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { t.Disconnect(transport.DisconnectByApplication, "server stopping") })
	defer stop()
	id, err := s.authenticate(t)
	if err != nil {
		return err
	}
	s.startupDone(source)
	started = false
	c.SetDeadline(time.Time{})
	t.SetWriteTimeout(s.cfg.WriteTimeout)
	sc := &serverConn{t: t, id: *id}
	s.mu.Lock()
	s.conns[sc] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, sc)
		s.mu.Unlock()
	}()
	s.cfg.Log.Info("ssh login", "user", id.User, "key", id.Key.Type(), "name", id.Name, "remote", c.RemoteAddr().String())

	m := connection.New(t)
	var wg sync.WaitGroup
	sctx, cancel := context.WithCancel(ctx)
	accepting := make(chan struct{})
	go func() {
		defer close(accepting)
		for nc := range m.Incoming() {
			if nc.Type != "session" {
				nc.Reject(connection.OpenUnknownChannelType, "only session channels")
				continue
			}
			ch, err := nc.Accept()
			if err != nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.session(sctx, sc.id, ch)
			}()
		}
	}()
	err = m.Run()
	cancel()
	<-accepting // no wg.Add after this: Incoming is closed
	wg.Wait()
	return err
}

// ErrMaxStartups is why a connection was closed before its handshake: too many others were
// not yet authenticated (ServerConfig.MaxStartups).
var ErrMaxStartups = errors.New("ssh: too many unauthenticated connections")

// startup counts a connection from source into its handshake, or refuses it.
func (s *Server) startup(source string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.startups >= s.cfg.MaxStartups {
		return fmt.Errorf("%w (%d)", ErrMaxStartups, s.startups)
	}
	if s.startupsBySource[source] >= s.cfg.MaxStartupsPerSource {
		return fmt.Errorf("%w from %s (%d)", ErrMaxStartups, source, s.startupsBySource[source])
	}
	s.startups++
	s.startupsBySource[source]++
	return nil
}

func (s *Server) startupDone(source string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.startups--
	if s.startupsBySource[source]--; s.startupsBySource[source] <= 0 {
		delete(s.startupsBySource, source)
	}
}

// sourceOf is the host part of a peer's address: its IP for TCP.
func sourceOf(a net.Addr) string {
	if a == nil {
		return ""
	}
	if h, _, err := net.SplitHostPort(a.String()); err == nil {
		return h
	}
	return a.String()
}

// authenticate runs the user authentication service (RFC 4252) and returns who logged in.
func (s *Server) authenticate(t *transport.Conn) (*Identity, error) {
	p, err := t.ReadPacket()
	if err != nil {
		return nil, err
	}
	svc, err := transport.ParseService(p, false)
	if err != nil || svc != serviceUserAuth {
		t.Disconnect(transport.DisconnectServiceNotAvailable, "ssh-userauth is the only service before authentication")
		return nil, fmt.Errorf("ssh: client asked for service %q first", sanitize([]byte(svc)))
	}
	if err := t.WritePacket(transport.MarshalServiceAccept(serviceUserAuth)); err != nil {
		return nil, err
	}
	if s.cfg.Banner != "" {
		if err := t.WritePacket(marshalBanner(s.cfg.Banner)); err != nil {
			return nil, err
		}
	}
	a := &authState{srv: s, sessionID: t.SessionID()}
	for {
		p, err := t.ReadPacket()
		if err != nil {
			return nil, err
		}
		reply, id, err := a.handle(p)
		if err != nil {
			var d *disconnect
			if errors.As(err, &d) {
				t.Disconnect(d.reason, d.msg)
			}
			return nil, err
		}
		if err := t.WritePacket(reply); err != nil {
			return nil, err
		}
		if id != nil {
			return id, nil
		}
	}
}

// disconnect is an authentication error that ends the connection with a reason.
type disconnect struct {
	reason uint32
	msg    string
}

func (d *disconnect) Error() string { return "ssh: " + d.msg }

// ErrTooManyAuthFailures is wrapped by the error of a connection that failed authentication
// MaxAuthTries times.
var ErrTooManyAuthFailures = errors.New("ssh: too many authentication failures")

// authState is the server's side of user authentication on one connection. It is separate
// from the transport so that fuzzing can drive it with any packet sequence.
type authState struct {
	srv       *Server
	sessionID []byte
	failures  int
	user      string
}

// handle answers one packet of the authentication phase: the reply to send, and the identity
// once a signature verified. An error ends the connection.
func (a *authState) handle(p []byte) ([]byte, *Identity, error) {
	if len(p) == 0 || p[0] != msgUserAuthRequest {
		return nil, nil, &disconnect{transport.DisconnectProtocolError, fmt.Sprintf("message %d where an authentication request belongs", first(p))}
	}
	r, err := parseAuthRequest(p)
	if err != nil {
		return nil, nil, &disconnect{transport.DisconnectProtocolError, err.Error()}
	}
	if r.service != serviceConnection {
		return nil, nil, &disconnect{transport.DisconnectServiceNotAvailable, fmt.Sprintf("service %q", sanitize([]byte(r.service)))}
	}
	fail := func(why error) ([]byte, *Identity, error) {
		a.failures++
		a.srv.cfg.Log.Info("ssh authentication failed", "user", sanitize([]byte(r.user)), "method", sanitize([]byte(r.method)), "err", why, "failures", a.failures)
		if a.failures >= a.srv.cfg.MaxAuthTries {
			msg := fmt.Sprintf("too many authentication failures for %s", sanitize([]byte(r.user)))
			return nil, nil, fmt.Errorf("%w: %w", ErrTooManyAuthFailures, &disconnect{transport.DisconnectNoMoreAuthMethods, msg})
		}
		return marshalAuthFailure([]string{methodPublicKey}, false), nil, nil
	}
	switch r.method {
	case methodNone:
		return marshalAuthFailure([]string{methodPublicKey}, false), nil, nil
	case methodPublicKey:
	default:
		return fail(fmt.Errorf("method %q not offered", sanitize([]byte(r.method))))
	}
	key, err := parseUserKey(r.algo, r.blob)
	if err != nil {
		return fail(err)
	}
	id, err := a.srv.cfg.Auth.Authorize(r.user, key)
	if err != nil {
		return fail(err)
	}
	if !r.hasSig {
		return marshalPKOK(r.algo, r.blob), nil, nil
	}
	if err := verifyUserSignature(key, r.algo, signedData(a.sessionID, r.user, r.service, r.algo, r.blob), r.sig); err != nil {
		return fail(err)
	}
	return []byte{msgUserAuthSuccess}, id, nil
}

// session serves one session channel: its requests, then the handler.
func (s *Server) session(ctx context.Context, id Identity, ch *connection.Channel) {
	defer ch.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sess := &Session{Identity: id, Env: map[string]string{}, Stdin: ch, Stdout: ch, Stderr: ch.Stderr()}
	started := false
	done := make(chan int, 1)
	reqs := ch.Requests()
	for {
		var r *connection.Request
		var ok bool
		select {
		case r, ok = <-reqs:
		case status := <-done:
			var b cryptobyte.Builder
			b.AddUint32(uint32(status))
			ch.SendRequest("exit-status", false, b.BytesOrPanic())
			ch.CloseWrite()
			return
		}
		if !ok {
			cancel()
			if started {
				<-done
			}
			return
		}
		payload := cryptobyte.String(r.Payload)
		switch {
		case r.Type == "pty-req" && !started:
			var term []byte
			var pty PTY
			if !connection.ReadString(&payload, &term) || !payload.ReadUint32(&pty.Cols) || !payload.ReadUint32(&pty.Rows) {
				r.Reply(false)
				continue
			}
			pty.Term = sanitize(term)
			sess.PTY = &pty
			r.Reply(true)
		case r.Type == "env" && !started:
			var name, value []byte
			if len(sess.Env) >= 32 || !connection.ReadString(&payload, &name) || !connection.ReadString(&payload, &value) ||
				!acceptEnv(s.cfg.AcceptEnv, string(name)) {
				r.Reply(false)
				continue
			}
			sess.Env[sanitize(name)] = sanitize(value)
			r.Reply(true)
		case (r.Type == "exec" || r.Type == "shell") && !started:
			if r.Type == "exec" {
				var cmd []byte
				if !connection.ReadString(&payload, &cmd) {
					r.Reply(false)
					continue
				}
				sess.Command = string(cmd)
			}
			started = true
			r.Reply(true)
			s.cfg.Log.Info("ssh session", "user", id.User, "request", r.Type, "command", sanitize([]byte(sess.Command)))
			go func() {
				status := 1
				if s.cfg.Handler != nil {
					status = s.cfg.Handler(ctx, sess)
				}
				done <- status
			}()
		default:
			r.Reply(false)
		}
	}
}

// CloseConns disconnects every authenticated connection whose identity match accepts, with
// reason as the message, and returns how many it closed. The connections are disconnected
// together, and a client that reads nothing delays none of them by more than about half a
// second.
func (s *Server) CloseConns(reason string, match func(Identity) bool) int {
	s.mu.Lock()
	var victims []*serverConn
	for c := range s.conns {
		if match(c.id) {
			victims = append(victims, c)
		}
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range victims {
		wg.Go(func() { c.t.Disconnect(transport.DisconnectByApplication, reason) })
	}
	wg.Wait()
	return len(victims)
}

// CloseAll disconnects every authenticated connection.
func (s *Server) CloseAll(reason string) int {
	return s.CloseConns(reason, func(Identity) bool { return true })
}

// Conns returns how many authenticated connections are open.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Presence is a card reader's view of its card: *emulator.Card and *cardsock.Watcher have it.
type Presence interface {
	Present() bool
	// Removals counts the card's removals: a removal followed at once by an insertion still
	// shows as a change of count.
	Removals() uint64
	// Changed returns a channel closed at the card's next removal or insertion.
	Changed() <-chan struct{}
}

// CloseOnRemoval watches card until ctx ends: when it leaves its reader, every connection
// that authenticated with one of keys (the card's keys) is disconnected, as SecureCRT's
// "disconnect sessions on smart card removal" does.
func (s *Server) CloseOnRemoval(ctx context.Context, card Presence, keys []gossh.PublicKey) {
	s.CloseOnRemovalFunc(ctx, card, func() []gossh.PublicKey { return keys })
}

// CloseOnRemovalFunc is CloseOnRemoval for a card whose keys may change while it is watched:
// keys is asked for them at each removal.
func (s *Server) CloseOnRemovalFunc(ctx context.Context, card Presence, keys func() []gossh.PublicKey) {
	seen := card.Removals()
	for {
		ch := card.Changed()
		if n := card.Removals(); !card.Present() || n != seen {
			seen = n
			s.CloseCardSessions(keys())
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}

// CloseCardSessions disconnects every connection that authenticated with one of keys, the
// keys of a card that left its reader, and returns how many it closed.
func (s *Server) CloseCardSessions(keys []gossh.PublicKey) int {
	return s.closeKeys(keys)
}

func (s *Server) closeKeys(keys []gossh.PublicKey) int {
	n := s.CloseConns("the smart card holding the key was removed", func(id Identity) bool {
		for _, k := range keys {
			if sameKey(k, id.Key) {
				return true
			}
		}
		return false
	})
	if n > 0 {
		s.cfg.Log.Info("card removed: sessions closed", "sessions", n)
	}
	return n
}

func first(p []byte) int {
	if len(p) == 0 {
		return -1
	}
	return int(p[0])
}

// acceptEnv reports whether a client may set the environment variable name: accept lists the
// names, or prefixes ending in "*", and TOKENLAB_ variables are the server's.
func acceptEnv(accept []string, name string) bool {
	if name == "" || strings.HasPrefix(name, "TOKENLAB_") || strings.ContainsAny(name, "= \x00") || sanitize([]byte(name)) != name {
		return false
	}
	for _, a := range accept {
		if prefix, ok := strings.CutSuffix(a, "*"); ok && strings.HasPrefix(name, prefix) || a == name {
			return true
		}
	}
	return false
}
