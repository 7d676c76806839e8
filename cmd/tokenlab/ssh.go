package main

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"os/user"
	"strconv"
	"strings"
	"syscall"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
	"golang.org/x/term"

	"tokenlab/apdu/cardsock"
	"tokenlab/emulator/yubikey"
	"tokenlab/middleware"
	"tokenlab/middleware/pivclient"
	"tokenlab/ssh"
)

func runSSH(args []string, stdout io.Writer) error {
	return dispatch("ssh", args, "usage: tokenlab ssh listen|connect|export [flags]\n",
		subcommand{"listen", func(a []string) error { return runSSHListen(a, stdout) }},
		subcommand{"connect", func(a []string) error { return runSSHConnect(a, stdout) }},
		subcommand{"export", func(a []string) error { return runSSHExport(a, stdout) }})
}

// parseSlot parses a PIV key reference such as 9a or 82.
func parseSlot(s string) (byte, error) {
	n, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(s), "0x"), 16, 8)
	if err != nil {
		return 0, fmt.Errorf("%q is not a key slot such as 9a", s)
	}
	for _, k := range middleware.KeySlots() {
		if k == byte(n) {
			return k, nil
		}
	}
	return 0, fmt.Errorf("%q is not a key slot (9a, 9c, 9d, 9e, 82 to 95)", s)
}

func runSSHExport(args []string, stdout io.Writer) error {
	fs := newFlags("ssh export", "--state DIR --slot 9a [--x509]")
	dir := fs.String("state", "", "state directory of the card")
	slotFlag := fs.String("slot", "9a", "key slot")
	asX509 := fs.Bool("x509", false, "write the slot's certificate as an RFC 6187 key (x509v3-...) instead of the plain key")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	if err := requireFlag("state", *dir); err != nil {
		return err
	}
	slot, err := parseSlot(*slotFlag)
	if err != nil {
		return usagef("--slot: %v", err)
	}
	// Reading needs no lock: it works while tokenlab serve runs the card.
	d, err := yubikey.Read(*dir)
	if err != nil {
		return err
	}
	defer d.Close()
	ctx := context.Background()
	c := pivclient.New(d.Card)
	if _, err := c.Select(ctx); err != nil {
		return err
	}
	cert, _ := c.Certificate(ctx, slot)
	comment := fmt.Sprintf("tokenlab %02x YubiKey %d", slot, d.Serial())
	if *asX509 {
		if cert == nil {
			return fmt.Errorf("slot %02x holds no certificate", slot)
		}
		k, err := ssh.NewX509Key([]*x509.Certificate{cert}, nil)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s %s %s\n", k.Type(), base64.StdEncoding.EncodeToString(k.Marshal()), comment)
		return nil
	}
	var pub any
	if m, err := c.GetMetadata(ctx, slot); err == nil {
		pub = m.PublicKey
	} else if cert != nil {
		pub = cert.PublicKey
	} else {
		return fmt.Errorf("slot %02x: no key (%v)", slot, err)
	}
	k, err := gossh.NewPublicKey(pub)
	if err != nil {
		return fmt.Errorf("slot %02x: %w", slot, err)
	}
	fmt.Fprintf(stdout, "%s %s\n", strings.TrimSpace(string(gossh.MarshalAuthorizedKey(k))), comment)
	return nil
}

// cardFlags choose the card a command uses and the middleware in front of it.
type cardFlags struct {
	state, socket, profile, prompt, audit *string
}

func addCardFlags(fs *flag.FlagSet, app string) cardFlags {
	return cardFlags{
		state:   fs.String("state", "", "use the card in this state directory (no tokenlab serve may hold it)"),
		socket:  fs.String("card-socket", "", "use the card of tokenlab serve --card-socket SOCKET"),
		profile: fs.String("profile", "strict-2fa", "middleware profile, with knobs over it as PROFILE+KNOB=VALUE (tokenlab profiles lists them)"),
		prompt:  fs.String("prompt", "terminal", "how the PIN is asked for: terminal, pinentry, env (TOKENLAB_PIN), file:PATH"),
		audit:   fs.String("audit-log", "", "append every middleware event of the "+app+" to this file as JSON lines"),
	}
}

// open opens the card and a middleware Token for application app. card is the card's
// presence, for removal watching: the in-process card, or a watch of the daemon's card through
// its socket.
func (f cardFlags) open(ctx context.Context, app string) (tok *middleware.Token, card ssh.Presence, closeAll func(), err error) {
	if (*f.state == "") == (*f.socket == "") {
		return nil, nil, nil, usagef("give exactly one of --state and --card-socket")
	}
	policy, err := middleware.ParsePolicy(*f.profile)
	if err != nil {
		return nil, nil, nil, usagef("--profile: %v", err)
	}
	pr, err := newPrompter(*f.prompt)
	if err != nil {
		return nil, nil, nil, usagef("%v", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	audit, closeAudit, err := openAudit(*f.audit, log)
	if err != nil {
		return nil, nil, nil, err
	}
	tok, card, closeCard, err := openCardToken(ctx, *f.state, *f.socket, true,
		middleware.Options{Application: app, Policy: policy, Prompter: pr, Audit: audit})
	if err != nil {
		closeAudit()
		return nil, nil, nil, err
	}
	return tok, card, func() {
		closeCard()
		closeAudit()
	}, nil
}

// openCardToken opens a card, in this process from its state directory or through the card
// socket of a running tokenlab serve, and the middleware Token of one application on it. With
// watch, card follows the card's presence (for closing sessions at removal); otherwise it is
// nil. done closes the token and then the card.
func openCardToken(ctx context.Context, state, socket string, watch bool, opts middleware.Options) (tok *middleware.Token, card ssh.Presence, done func(), err error) {
	var dial middleware.Dialer
	closeCard := func() {}
	switch {
	case state != "":
		d, err := yubikey.Open(state, nil)
		if err != nil {
			return nil, nil, nil, err
		}
		dial, card, closeCard = d.Card.Dial, d.Card, func() { d.Close() }
	case watch:
		w, err := cardsock.Watch(ctx, socket)
		if err != nil {
			return nil, nil, nil, err
		}
		dial, card, closeCard = cardsock.Dialer(socket), w, func() { w.Close() }
	default:
		dial = cardsock.Dialer(socket)
	}
	if tok, err = middleware.Open(ctx, dial, opts); err != nil {
		closeCard()
		return nil, nil, nil, err
	}
	return tok, card, func() {
		tok.Close(context.Background())
		closeCard()
	}, nil
}

func runSSHConnect(args []string, stdout io.Writer) error {
	fs := newFlags("ssh connect", "(--state DIR | --card-socket SOCKET) [--slot 9a] [--x509] [--user NAME] (--known-hosts FILE | --host-key FILE.pub | --host-ca PEM) HOST:PORT [COMMAND...]")
	cf := addCardFlags(fs, "client")
	slotFlag := fs.String("slot", "9a", "key slot to authenticate with: the one key offered")
	asX509 := fs.Bool("x509", false, "authenticate with the slot's certificate as an RFC 6187 key (x509v3-*)")
	userFlag := fs.String("user", "", "login name (default: from the certificate's UPN or CN with --x509, else the local user)")
	knownHosts := fs.String("known-hosts", "", "OpenSSH known_hosts file that must list the server's plain host key")
	hostKeyFile := fs.String("host-key", "", "the server's plain host key, an OpenSSH .pub line")
	hostCA := fs.String("host-ca", "", "PEM CA certificates: the server must show an RFC 6187 host key they issued for HOST")
	closeOnRemoval := fs.Bool("close-on-removal", true, "close the connection when the card leaves its reader (tokenlab card remove on the daemon of --card-socket, or the daemon going away)")
	rest, err := parse(fs, args, 1<<20)
	if err != nil {
		return err
	}
	if len(rest) == 0 {
		return usagef("missing HOST:PORT")
	}
	addr, command := rest[0], strings.Join(rest[1:], " ")
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return usagef("%q is not HOST:PORT", addr)
	}
	slot, err := parseSlot(*slotFlag)
	if err != nil {
		return usagef("--slot: %v", err)
	}
	cfg := &ssh.ClientConfig{User: *userFlag}
	switch {
	case *hostCA != "" && *knownHosts == "" && *hostKeyFile == "":
		if cfg.HostCAs, err = loadPool(*hostCA); err != nil {
			return err
		}
	case *knownHosts != "" && *hostCA == "" && *hostKeyFile == "":
		if cfg.HostKeyCallback, err = knownhosts.New(*knownHosts); err != nil {
			return fmt.Errorf("--known-hosts: %w", err)
		}
	case *hostKeyFile != "" && *hostCA == "" && *knownHosts == "":
		b, err := os.ReadFile(*hostKeyFile)
		if err != nil {
			return err
		}
		k, _, _, _, err := gossh.ParseAuthorizedKey(b)
		if err != nil {
			return fmt.Errorf("--host-key %s: %w", *hostKeyFile, err)
		}
		cfg.HostKeyCallback = gossh.FixedHostKey(k)
	default:
		return usagef("give exactly one of --known-hosts, --host-key and --host-ca")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	tok, card, closeAll, err := cf.open(ctx, "ssh")
	if err != nil {
		return err
	}
	defer closeAll()
	if cfg.Signer, err = ssh.TokenSigner(ctx, tok, slot, *asX509); err != nil {
		return err
	}
	if cfg.User == "" && !*asX509 {
		u, err := user.Current()
		if err != nil {
			return err
		}
		cfg.User = u.Username
	}
	if *closeOnRemoval && card != nil {
		cfg.Card = card
	}
	c, err := ssh.Dial(ctx, addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	o := ssh.RunOptions{Command: command, Stdin: os.Stdin, Stdout: stdout, Stderr: os.Stderr}
	if command == "" && term.IsTerminal(int(os.Stdin.Fd())) {
		w, h, _ := term.GetSize(int(os.Stdin.Fd()))
		o.PTY = &ssh.PTY{Term: os.Getenv("TERM"), Cols: uint32(w), Rows: uint32(h)}
		old, err := term.MakeRaw(int(os.Stdin.Fd()))
		if err == nil {
			defer term.Restore(int(os.Stdin.Fd()), old)
		}
	}
	status, err := c.Run(ctx, o)
	if err != nil {
		return err
	}
	if status != 0 {
		return exitStatus(status)
	}
	return nil
}

// exitStatus is a remote command's non-zero exit status, which tokenlab exits with.
type exitStatus int

func (e exitStatus) Error() string {
	return fmt.Sprintf("remote command exited with status %d", int(e))
}

func loadPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	n := 0
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d: %w", path, n+1, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	return pool, nil
}

func runSSHListen(args []string, stdout io.Writer) error {
	fs := newFlags("ssh listen", "[--listen ADDR] [--authorized-keys FILE --user NAME] [--ca PEM [--user-map FILE]] [--host-key FILE | (--state DIR | --card-socket SOCKET) --host-slot 9d [--host-x509]]")
	listen := fs.String("listen", "127.0.0.1:2222", "address to listen on")
	o := defaultSSHServerOptions()
	o.addFlags(fs, "")
	cf := addCardFlags(fs, "server")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var card ssh.Presence
	var cardKeys []gossh.PublicKey
	srv, err := o.newServer(ctx, "", log, func(ctx context.Context) (*middleware.Token, func(), error) {
		tok, c, closeAll, err := cf.open(ctx, "sshd")
		if err != nil {
			return nil, nil, err
		}
		ks, err := tok.Keys(ctx)
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		for _, k := range ks {
			if p, err := gossh.NewPublicKey(k.Public); err == nil {
				cardKeys = append(cardKeys, p)
			}
		}
		card = c
		return tok, closeAll, nil
	})
	if err != nil {
		return err
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	if card != nil && o.CloseOnRemoval {
		go srv.CloseOnRemoval(ctx, card, cardKeys)
	}
	fmt.Fprintf(stdout, "SSH server on %s, host key %s\n", ln.Addr(), srv.hostKeyLine())
	err = srv.Serve(ctx, ln)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// loadUserMap reads lines "CERTIFICATE-NAME USER..."; # starts a comment.
func loadUserMap(path string) (map[string][]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m := map[string][]string{}
	for i, line := range strings.Split(string(b), "\n") {
		if j := strings.IndexByte(line, '#'); j >= 0 {
			line = line[:j]
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) < 2 {
			return nil, fmt.Errorf("%s:%d: want a certificate name and at least one user", path, i+1)
		}
		m[f[0]] = append(m[f[0]], f[1:]...)
	}
	return m, nil
}
