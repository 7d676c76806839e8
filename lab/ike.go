package lab

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"tokenlab/ike"
	"tokenlab/middleware"
)

func init() { starters[KindIKE] = startIKE }

// gatewayName is the VPN gateway's identity and certificate name.
const gatewayName = "vpn.tokenlab.test"

// ikeGateway is an IKEv2 responder on loopback with a certificate from the lab's CA, handing
// out addresses as a FortiGate dial-up gateway does.
type ikeGateway struct {
	r      *ike.Responder
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startIKE(ctx context.Context, e *env) (endpoint, error) {
	key, cert, err := e.card.issueServer(gatewayName)
	if err != nil {
		return nil, err
	}
	pool, err := ike.ParsePool("10.40.40.2-10.40.40.20")
	if err != nil {
		return nil, err
	}
	cfg := &ike.Config{
		LocalID:      ike.Identity{Type: ike.IDFQDN, Data: []byte(gatewayName)},
		Signer:       key,
		Certificates: [][]byte{cert.Raw},
		CAs:          []*x509.Certificate{e.card.ca},
		Pool:         pool,
		Clock:        e.clock,
	}
	r, err := ike.Listen(cfg, netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		return nil, err
	}
	actx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	g := &ikeGateway{r: r, cancel: cancel}
	g.wg.Add(1)
	go func() { // established sessions run by themselves; take them so none waits
		defer g.wg.Done()
		for {
			if _, err := r.Accept(actx); err != nil {
				return
			}
		}
	}()
	return g, nil
}

// connect makes an IKEv2 tunnel as FortiClient does with a certificate on the card: the AUTH
// signature is made by the card through the application's middleware, which asks for the PIN
// as its profile says, and the tunnel's end logs the application out (as the profile says).
func (g *ikeGateway) connect(ctx context.Context, e *env, app *application, slot byte) (connection, error) {
	tok, err := e.token(ctx, app)
	if err != nil {
		return nil, err
	}
	signer, err := tok.Signer(ctx, slot)
	if err != nil {
		return nil, err
	}
	cert := e.card.certs[slot]
	if cert == nil {
		return nil, fmt.Errorf("ike: slot %02x has no certificate", slot)
	}
	cfg := &ike.Config{
		RemoteID:         &ike.Identity{Type: ike.IDFQDN, Data: []byte(gatewayName)},
		Signer:           signer,
		Certificates:     [][]byte{cert.Raw},
		CAs:              []*x509.Certificate{e.card.ca},
		Childless:        true,
		RequestConfig:    true,
		Token:            tok,
		Clock:            e.clock,
		NegotiateTimeout: 10 * time.Second,
	}
	s, err := ike.Dial(ctx, cfg, netip.MustParseAddrPort("127.0.0.1:0"), g.r.Addrs()[0])
	if err != nil {
		return nil, fmt.Errorf("ike: %w", err)
	}
	if !s.Configuration().Address.IsValid() {
		s.Close(ctx)
		return nil, errors.New("ike: the gateway gave no address")
	}
	return &ikeTunnel{s: s, tok: tok}, nil
}

func (g *ikeGateway) close() error {
	err := g.r.Close()
	g.cancel()
	g.wg.Wait()
	return err
}

type ikeTunnel struct {
	s   *ike.Session
	tok *middleware.Token
}

func (t *ikeTunnel) sign(ctx context.Context, slot byte) error { return tokenSign(ctx, t.tok, slot) }

func (t *ikeTunnel) close(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := t.s.Close(cctx)
	<-t.s.Done() // the token's logout or reset has happened
	if errors.Is(err, ike.ErrClosed) {
		err = nil
	}
	return err
}

// tokenSign makes a signature with the key in slot through the application's middleware.
func tokenSign(ctx context.Context, tok *middleware.Token, slot byte) error {
	s, err := tok.Signer(ctx, slot)
	if err != nil {
		return err
	}
	d := sha256.Sum256([]byte("tokenlab lab"))
	_, err = s.Sign(rand.Reader, d[:], crypto.SHA256)
	return err
}
