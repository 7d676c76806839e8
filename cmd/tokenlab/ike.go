package main

import (
	"bufio"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base32"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"tokenlab/ike"
	"tokenlab/middleware"
)

func runIKE(args []string, stdout io.Writer) error {
	return dispatch("ike", args,
		"usage: tokenlab ike listen|connect [flags]\n"+
			"  listen   an IKEv2 responder (a FortiGate-like dial-up gateway)\n"+
			"  connect  an IKEv2 initiator whose key is on the card, reached through the middleware\n",
		subcommand{"listen", func(a []string) error { return runIKEListen(a, stdout) }},
		subcommand{"connect", func(a []string) error { return runIKEConnect(a, stdout) }})
}

// ikeFlags are the flags both ends share.
type ikeFlags struct {
	id, remoteID, ca, proposals, espProposals, pskFile, signature string
	peerAuth                                                      string
	localTS, remoteTS, negotiate                                  string
	fragmentSize                                                  int
	printKeys, verbose                                            bool
}

func (f *ikeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.id, "id", "", "our identity: an FQDN, an email address, an IP address or a DN (default: the certificate's subject)")
	fs.StringVar(&f.remoteID, "remote-id", "", "the identity the peer must authenticate as")
	fs.StringVar(&f.ca, "ca", "", "PEM file of the CA certificates that validate the peer's certificate")
	fs.StringVar(&f.proposals, "proposals", "", "IKE proposals, strongSwan syntax (default: FortiGate's aes128-sha256, aes256-sha256, aes128gcm16-prfsha256, aes256gcm16-prfsha384, chacha20poly1305-prfsha256, each with DH 19, 31, 20, 21, 14)")
	fs.StringVar(&f.espProposals, "esp-proposals", "", "ESP proposals of the Child SA (default aes128gcm16, aes256gcm16, chacha20poly1305, aes128-sha256, aes256-sha256)")
	fs.StringVar(&f.pskFile, "psk-file", "", "file holding the pre-shared key (authenticates us without a certificate, and peers that use it unless --peer-auth says otherwise)")
	fs.StringVar(&f.peerAuth, "peer-auth", "", "how the peer may authenticate, comma-separated: pubkey, psk, eap (default: eap with --eap-users, so that users cannot skip EAP with the group PSK; else pubkey,psk)")
	fs.StringVar(&f.signature, "signature", "rfc7427", "how our ECDSA signature is encoded: rfc7427 (digital signature, AUTH method 14) or rfc4754 (methods 9-11)")
	fs.StringVar(&f.localTS, "local-ts", "", "our traffic selectors, comma-separated prefixes (default: everything)")
	fs.StringVar(&f.remoteTS, "remote-ts", "", "the peer's traffic selectors, comma-separated prefixes (default: everything)")
	fs.StringVar(&f.negotiate, "negotiate-timeout", "30", "IKE SA negotiation timeout in seconds, 1 to 300 (FortiGate's negotiate-timeout)")
	fs.IntVar(&f.fragmentSize, "fragment-size", 0, "largest IKE message before RFC 7383 fragmentation (default 1228, -1 disables)")
	fs.BoolVar(&f.printKeys, "print-keys", false, "print each Child SA's keys (KEYMAT, RFC 7296 §2.17), for an ESP implementation or a packet capture")
	fs.BoolVar(&f.verbose, "v", false, "log the IKE exchanges")
}

// parseNegotiateTimeout takes seconds (FortiGate's form) or a Go duration.
func parseNegotiateTimeout(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if n, nerr := strconv.Atoi(s); nerr == nil {
		d, err = time.Duration(n)*time.Second, nil
	}
	if err != nil || d < ike.MinNegotiateTimeout || d > ike.MaxNegotiateTimeout {
		return 0, usagef("--negotiate-timeout: %q is not 1 to 300 seconds", s)
	}
	return d, nil
}

// config turns the shared flags into an ike.Config.
func (f *ikeFlags) config() (*ike.Config, error) {
	cfg := &ike.Config{FragmentSize: f.fragmentSize}
	var err error
	if cfg.NegotiateTimeout, err = parseNegotiateTimeout(f.negotiate); err != nil {
		return nil, err
	}
	if f.id != "" {
		if cfg.LocalID, err = ike.ParseIdentity(f.id); err != nil {
			return nil, usagef("--id: %v", err)
		}
	}
	if f.remoteID != "" {
		id, err := ike.ParseIdentity(f.remoteID)
		if err != nil {
			return nil, usagef("--remote-id: %v", err)
		}
		cfg.RemoteID = &id
	}
	if f.ca != "" {
		if cfg.CAs, err = readCertificates(f.ca); err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
	}
	if f.proposals != "" {
		if cfg.Proposals, err = ike.ParseProposals(f.proposals, false); err != nil {
			return nil, usagef("--proposals: %v", err)
		}
	}
	if f.espProposals != "" {
		if cfg.ChildProposals, err = ike.ParseProposals(f.espProposals, true); err != nil {
			return nil, usagef("--esp-proposals: %v", err)
		}
	}
	if f.pskFile != "" {
		b, err := os.ReadFile(f.pskFile)
		if err != nil {
			return nil, fmt.Errorf("--psk-file: %w", err)
		}
		if cfg.PSK = []byte(strings.TrimRight(string(b), "\r\n")); len(cfg.PSK) == 0 {
			return nil, fmt.Errorf("--psk-file: %s is empty", f.pskFile)
		}
	}
	if f.peerAuth != "" {
		if cfg.PeerAuth, err = ike.ParseAuthClass(f.peerAuth); err != nil {
			return nil, usagef("--peer-auth: %v", err)
		}
	}
	if cfg.SignatureMode, err = ike.ParseSignatureMode(f.signature); err != nil {
		return nil, usagef("--signature: %v", err)
	}
	for _, ts := range []struct {
		flag, v string
		dst     *[]ike.TrafficSelector
	}{{"local-ts", f.localTS, &cfg.LocalTS}, {"remote-ts", f.remoteTS, &cfg.RemoteTS}} {
		if ts.v != "" {
			if *ts.dst, err = ike.ParseSelectors(ts.v); err != nil {
				return nil, usagef("--%s: %v", ts.flag, err)
			}
		}
	}
	level := slog.LevelWarn
	if f.verbose {
		level = slog.LevelDebug
	}
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	return cfg, nil
}

// readCertificates reads every CERTIFICATE block of a PEM file.
func readCertificates(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	return out, nil
}

// readKey reads a PEM private key (SEC 1 "EC PRIVATE KEY" or PKCS #8).
func readKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, fmt.Errorf("%s: no PEM private key", path)
		}
		var k any
		switch blk.Type {
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(blk.Bytes)
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%s: %T cannot sign", path, k)
		}
		return s, nil
	}
}

// softwareIdentity loads --cert and --key.
func softwareIdentity(cfg *ike.Config, certFile, keyFile string) error {
	if (certFile == "") != (keyFile == "") {
		return usagef("--cert and --key go together")
	}
	if certFile == "" {
		return nil
	}
	certs, err := readCertificates(certFile)
	if err != nil {
		return fmt.Errorf("--cert: %w", err)
	}
	if cfg.Signer, err = readKey(keyFile); err != nil {
		return fmt.Errorf("--key: %w", err)
	}
	for _, c := range certs {
		cfg.Certificates = append(cfg.Certificates, c.Raw)
	}
	return nil
}

func parseAddrs(flagName, s string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, f := range strings.Split(s, ",") {
		a, err := netip.ParseAddr(strings.TrimSpace(f))
		if err != nil {
			return nil, usagef("--%s: %v", flagName, err)
		}
		out = append(out, a)
	}
	return out, nil
}

func runIKEListen(args []string, stdout io.Writer) error {
	fs := newFlags("ike listen", "[--listen ADDR[,ADDR]] (--cert FILE --key FILE | --psk-file FILE) [--ca FILE] [--eap-users FILE] [--pool A-B] [flags]")
	var f ikeFlags
	f.register(fs)
	listen := fs.String("listen", "127.0.0.1:500,127.0.0.1:4500", "UDP addresses: the IKE port, then the NAT-T port")
	certFile := fs.String("cert", "", "PEM file of the gateway's certificate chain, its own first")
	keyFile := fs.String("key", "", "PEM file of the gateway's private key")
	eapUsers := fs.String("eap-users", "", "file of EAP-MSCHAPv2 users, one a line: name, password and optionally a base32 TOTP secret")
	otp := fs.String("otp", "append", "how users with a TOTP secret give their code: append (to the password), separate (an EAP-GTC round after MS-CHAPv2), either, or none")
	totpStep := fs.Duration("totp-step", 30*time.Second, "TOTP time step, at least 1s (RFC 6238; FortiToken uses 60s)")
	totpWindow := fs.Int("totp-window", 1, "TOTP steps accepted either side of now (0: the current step only)")
	pool := fs.String("pool", "", "virtual IPv4 addresses handed out by the configuration payload, e.g. 10.40.40.2-10.40.40.20")
	dns := fs.String("dns", "", "DNS servers sent with an address, comma-separated")
	split := fs.String("split", "", "split-include subnets sent with an address, comma-separated (they also bound our traffic selectors)")
	cookieThreshold := fs.Int("cookie-threshold", 0, "half-open IKE SAs from which IKE_SA_INIT needs a COOKIE (RFC 7296 §2.6; default 10, -1 always)")
	maxHalfOpen := fs.Int("max-half-open", 0, "half-open IKE SAs kept at most; more IKE_SA_INIT are dropped (default 1000)")
	sessions := fs.Int("sessions", 0, "stop after this many IKE SAs have ended (default: run until interrupted)")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	cfg, err := f.config()
	if err != nil {
		return err
	}
	if err := softwareIdentity(cfg, *certFile, *keyFile); err != nil {
		return err
	}
	if cfg.Signer == nil && cfg.PSK == nil {
		return usagef("the gateway needs --cert and --key, or --psk-file")
	}
	cfg.CookieThreshold, cfg.MaxHalfOpen = *cookieThreshold, *maxHalfOpen
	if *eapUsers != "" {
		mode, err := ike.ParseOTPMode(*otp)
		if err != nil {
			return usagef("--otp: %v", err)
		}
		if *totpStep < time.Second {
			return usagef("--totp-step: %v is below 1s", *totpStep)
		}
		if *totpWindow < 0 {
			return usagef("--totp-window: %d is negative", *totpWindow)
		}
		users, err := readEAPUsers(*eapUsers, *totpStep, *totpWindow)
		if err != nil {
			return err
		}
		cfg.EAPServer = &ike.EAPServer{Users: users, OTP: mode}
	}
	if *pool != "" {
		if cfg.Pool, err = ike.ParsePool(*pool); err != nil {
			return usagef("--pool: %v", err)
		}
	}
	if *dns != "" {
		if cfg.DNS, err = parseAddrs("dns", *dns); err != nil {
			return err
		}
	}
	if *split != "" {
		for _, s := range strings.Split(*split, ",") {
			p, err := netip.ParsePrefix(strings.TrimSpace(s))
			if err != nil {
				return usagef("--split: %v", err)
			}
			cfg.SplitInclude = append(cfg.SplitInclude, p)
		}
	}
	var addrs []netip.AddrPort
	for _, s := range strings.Split(*listen, ",") {
		a, err := netip.ParseAddrPort(strings.TrimSpace(s))
		if err != nil {
			return usagef("--listen: %v", err)
		}
		addrs = append(addrs, a)
	}
	r, err := ike.Listen(cfg, addrs...)
	if err != nil {
		return err
	}
	defer r.Close()
	out := &syncWriter{w: stdout}
	for _, a := range r.Addrs() {
		out.printf("listening on %v\n", a)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ended := make(chan struct{})
	if *sessions > 0 {
		go func() {
			for n := 0; n < *sessions; n++ {
				select {
				case <-ended:
				case <-ctx.Done():
					return
				}
			}
			stop()
		}()
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		s, err := r.Accept(ctx)
		if err != nil {
			return nil // interrupted, or --sessions reached
		}
		describe(out, s, f.printKeys)
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-s.Done():
				out.printf("closed: %v %s\n", s.RemoteID(), closeReason(s.Err()))
				select {
				case ended <- struct{}{}:
				case <-ctx.Done():
				}
			case <-ctx.Done():
			}
		}()
	}
}

func closeReason(err error) string {
	if err == nil {
		return "(deleted)"
	}
	return "(" + err.Error() + ")"
}

// describe prints an established IKE SA: who, how, the configuration and the Child SAs.
func describe(out *syncWriter, s *ike.Session, printKeys bool) {
	spiI, spiR := s.SPIs()
	who := s.RemoteID().String()
	if e := s.EAPIdentity(); e != "" {
		who += " (EAP " + e + ")"
	}
	verb := "established"
	if s.Initiator() {
		verb = "connected"
	}
	out.printf("%s: %s at %v, IKE SA %016x_i %016x_r %v, peer authenticated with %v\n",
		verb, who, s.RemoteAddr(), spiI, spiR, s.Suite(), s.PeerAuthMethod())
	if c := s.Configuration(); c.Address.IsValid() {
		out.printf("configuration: %v\n", c)
	}
	for _, c := range s.Children() {
		out.printf("child SA: %v\n", c)
		if printKeys {
			out.print(c.PrintKeys)
		}
	}
}

// syncWriter serialises the output of concurrent sessions.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) printf(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(s.w, format, args...)
}

func (s *syncWriter) print(f func(io.Writer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s.w)
}

// readEAPUsers reads `name password [totp-secret-base32]` lines; # starts a comment.
func readEAPUsers(path string, step time.Duration, window int) (map[string]ike.EAPUser, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--eap-users: %w", err)
	}
	defer fh.Close()
	users := map[string]ike.EAPUser{}
	sc := bufio.NewScanner(fh)
	for line := 1; sc.Scan(); line++ {
		text, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(text)
		switch len(fields) {
		case 0:
			continue
		case 2, 3:
		default:
			return nil, fmt.Errorf("%s:%d: want `name password [totp-secret-base32]`", path, line)
		}
		u := ike.EAPUser{Password: []byte(fields[1])}
		if len(fields) == 3 {
			secret, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(strings.ToUpper(strings.TrimRight(fields[2], "=")))
			if err != nil {
				return nil, fmt.Errorf("%s:%d: TOTP secret: %v", path, line, err)
			}
			u.TOTP = &ike.TOTP{Secret: secret, Step: step, Window: window}
		}
		users[fields[0]] = u
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("%s: no users", path)
	}
	return users, nil
}

func runIKEConnect(args []string, stdout io.Writer) error {
	fs := newFlags("ike connect", "--remote HOST:PORT (--state DIR | --card-socket SOCKET | --cert FILE --key FILE | --psk-file FILE | --eap-user NAME) [--ca FILE] [flags]")
	var f ikeFlags
	f.register(fs)
	remote := fs.String("remote", "", "the gateway's IKE address and port")
	local := fs.String("local", "0.0.0.0:0", "our UDP address")
	state := fs.String("state", "", "sign with the card in this state directory (tokenlab card init), through the middleware")
	cardSocket := fs.String("card-socket", "", "sign with the card of a running tokenlab serve (its --card-socket), through the middleware")
	slotFlag := fs.String("slot", "9a", "the card's key slot; its certificate is ours")
	profile := fs.String("profile", "strict-2fa", "middleware profile: when the PIN is asked for, and what closing a tunnel does to the card; PROFILE+KNOB=VALUE sets knobs over it (tokenlab profiles)")
	promptKind := fs.String("prompt", "terminal", "how the PIN, the EAP password and the one-time code are asked for: terminal, pinentry, env (TOKENLAB_PIN), file:PATH")
	certFile := fs.String("cert", "", "PEM file of our certificate chain, for a software key")
	keyFile := fs.String("key", "", "PEM file of our software private key")
	eapUser := fs.String("eap-user", "", "authenticate with EAP-MSCHAPv2 as this user (the gateway uses a certificate or the PSK)")
	otp := fs.String("otp", "none", "one-time code with EAP: append (to the password), separate (asked on its own) or none")
	childless := fs.Bool("childless", false, "create no Child SA (RFC 6023)")
	requestConfig := fs.Bool("request-config", false, "ask for a virtual address, DNS servers and split-include subnets (configuration payload)")
	hold := fs.Duration("hold", 0, "keep each tunnel up this long before closing it (0: close at once)")
	connections := fs.Int("connections", 1, "connect this many times in a row with the same middleware token, to see when the PIN is asked for")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	if err := requireFlag("remote", *remote); err != nil {
		return err
	}
	raddr, err := netip.ParseAddrPort(*remote)
	if err != nil {
		return usagef("--remote: %v", err)
	}
	laddr, err := netip.ParseAddrPort(*local)
	if err != nil {
		return usagef("--local: %v", err)
	}
	if *connections < 1 {
		return usagef("--connections: %d is not a count", *connections)
	}
	cfg, err := f.config()
	if err != nil {
		return err
	}
	cfg.Childless, cfg.RequestConfig = *childless, *requestConfig
	if err := softwareIdentity(cfg, *certFile, *keyFile); err != nil {
		return err
	}
	if *state != "" && *cardSocket != "" {
		return usagef("--state and --card-socket are two roads to a card: pick one")
	}
	pr, err := newPrompter(*promptKind)
	if err != nil || pr == nil {
		return usagef("--prompt: %q is not terminal, pinentry, env or file:PATH", *promptKind)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	var tok *middleware.Token
	var audit middleware.Recorder
	var policy middleware.Policy
	if *state != "" || *cardSocket != "" {
		if cfg.Signer != nil {
			return usagef("a card (--state, --card-socket) and --cert/--key are two keys: pick one")
		}
		slot, err := strconv.ParseUint(*slotFlag, 16, 8)
		if err != nil {
			return usagef("--slot: %q is not a slot such as 9a", *slotFlag)
		}
		if policy, err = middleware.ParsePolicy(*profile); err != nil {
			return usagef("--profile: %v", err)
		}
		var done func()
		tok, _, done, err = openCardToken(ctx, *state, *cardSocket, false,
			middleware.Options{Application: "ike", Policy: policy, Prompter: pr, Audit: &audit})
		if err != nil {
			return err
		}
		defer done()
		if cfg.Signer, err = tok.Signer(ctx, byte(slot)); err != nil {
			return fmt.Errorf("slot %02x: %w", slot, err)
		}
		keys, err := tok.Keys(ctx)
		if err != nil {
			return err
		}
		for _, k := range keys {
			if k.Slot == byte(slot) && k.Certificate != nil {
				cfg.Certificates = [][]byte{k.Certificate.Raw}
			}
		}
		if cfg.Certificates == nil {
			return fmt.Errorf("slot %02x holds no certificate: the gateway needs one to check our signature", slot)
		}
		cfg.Token = tok
	}
	if *eapUser != "" {
		mode, err := ike.ParseOTPMode(*otp)
		if err != nil {
			return usagef("--otp: %v", err)
		}
		cfg.EAP = &ike.EAPClient{Identity: *eapUser, OTP: mode, Prompter: pr}
		if cfg.LocalID.Type == 0 {
			if cfg.LocalID, err = ike.ParseIdentity(*eapUser); err != nil {
				return usagef("--eap-user: %v", err)
			}
		}
	}
	if cfg.Signer == nil && cfg.PSK == nil && cfg.EAP == nil {
		return usagef("no way to authenticate: give --state, --card-socket, --cert and --key, --psk-file or --eap-user")
	}
	out := &syncWriter{w: stdout}
	for i := 0; i < *connections; i++ {
		s, err := ike.Dial(ctx, cfg, laddr, raddr)
		if err != nil {
			return err
		}
		describe(out, s, f.printKeys)
		if *hold > 0 {
			select {
			case <-time.After(*hold):
			case <-s.Done():
			case <-ctx.Done():
			}
		}
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = s.Close(cctx)
		cancel()
		if err != nil && !errors.Is(err, ike.ErrClosed) {
			return fmt.Errorf("closing the IKE SA: %w", err)
		}
		<-s.Done() // the token's logout or reset has happened
		out.printf("closed\n")
		if ctx.Err() != nil {
			break
		}
	}
	if tok != nil {
		out.printf("PIN prompts: %d over %d connection(s), profile %s; card resets at close: %d, logouts: %d\n",
			audit.Count("ike", middleware.EventPrompt), *connections, policy.Name,
			audit.Count("ike", middleware.EventCardReset), audit.Count("ike", middleware.EventCardLogout))
	}
	return nil
}
