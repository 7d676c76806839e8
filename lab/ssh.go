package lab

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"sync"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"tokenlab/middleware"
	"tokenlab/ssh"
)

func init() { starters[KindSSH] = startSSH }

// sshServerName is the SSH server's certificate name.
const sshServerName = "ssh.tokenlab.test"

// sshServer is tokenlab's SSH server on loopback with an RFC 6187 host key from the lab's CA,
// accepting RFC 6187 user keys from the lab's CA: the set-up of SecureCRT's X.509 smart-card
// logins.
type sshServer struct {
	srv    *ssh.Server
	ln     net.Listener
	roots  *x509.CertPool
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startSSH(ctx context.Context, e *env) (endpoint, error) {
	key, cert, err := e.card.issueServer(sshServerName)
	if err != nil {
		return nil, err
	}
	host, err := ssh.NewX509Signer(key, []*x509.Certificate{cert})
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(e.card.ca)
	srv, err := ssh.NewServer(ssh.ServerConfig{
		HostKeys: []gossh.Signer{host},
		Auth:     &ssh.Keys{CAs: roots, Now: e.clock.Now},
		Handler:  func(context.Context, *ssh.Session) int { return 0 },
	})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &sshServer{srv: srv, ln: ln, roots: roots, cancel: cancel}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		srv.Serve(sctx, ln)
	}()
	return s, nil
}

// connect logs in as SecureCRT does with a smart card: the certificate of slot as an RFC 6187
// key (x509v3-ecdsa-sha2-nistp256), the user name taken from it, the signature made by the card
// through the application's middleware; the server's RFC 6187 host key is checked against the
// lab's CA. A command runs, to show the session works.
func (s *sshServer) connect(ctx context.Context, e *env, app *application, slot byte) (connection, error) {
	tok, err := e.token(ctx, app)
	if err != nil {
		return nil, err
	}
	signer, err := ssh.TokenSigner(ctx, tok, slot, true)
	if err != nil {
		return nil, err
	}
	c, err := ssh.Dial(ctx, s.ln.Addr().String(), &ssh.ClientConfig{Signer: signer, HostCAs: s.roots, Now: e.clock.Now, Timeout: 10 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("ssh: %w", err)
	}
	if c.User() != User {
		c.Close()
		return nil, fmt.Errorf("ssh: logged in as %q, want %q from the certificate", c.User(), User)
	}
	if code, err := c.Run(ctx, ssh.RunOptions{Command: "true"}); err != nil || code != 0 {
		c.Close()
		return nil, fmt.Errorf("ssh: a command in the session: status %d, %v", code, err)
	}
	return &sshConn{c: c, tok: tok}, nil
}

func (s *sshServer) close() error {
	s.cancel()
	s.wg.Wait()
	return nil
}

type sshConn struct {
	c   *ssh.Client
	tok *middleware.Token
}

func (c *sshConn) sign(ctx context.Context, slot byte) error { return tokenSign(ctx, c.tok, slot) }

// close ends the connection, and with it the application's login as its profile says, as the
// IKE initiator does when a tunnel closes.
func (c *sshConn) close(ctx context.Context) error {
	err := c.c.Close()
	if lerr := c.tok.Logout(ctx); err == nil {
		err = lerr
	}
	return err
}
