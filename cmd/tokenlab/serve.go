package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	gossh "golang.org/x/crypto/ssh"

	"tokenlab/apdu/cardsock"
	"tokenlab/emulator/piv"
	"tokenlab/emulator/vpcd"
	"tokenlab/emulator/yubikey"
	"tokenlab/internal/unixsock"
	"tokenlab/middleware"
	"tokenlab/middleware/prompt"
	"tokenlab/pkcs11srv"
)

// p11kitClient is Debian's p11-kit client module, which applications load to reach --pkcs11.
const p11kitClient = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so"

func runServe(args []string, stdout io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return serve(ctx, args, stdout, os.Stderr)
}

// serve runs the daemon until ctx ends or a part of it fails; it logs to stderr.
func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("serve", "--state DIR [--vpcd HOST:PORT|off] [--pkcs11 SOCKET] [--card-socket SOCKET] [--ssh ADDR --ssh-*...] [--profile P] [--prompt KIND] [--config FILE] [-v]")
	config := fs.String("config", "", "configuration file (testdata/serve.conf is an example); flags override it")
	dir := fs.String("state", "", "state directory of the card (tokenlab card init creates one)")
	addr := fs.String("vpcd", "", "address of pcscd's vpcd reader driver, or off (default "+vpcd.DefaultAddr+")")
	pkcs11 := fs.String("pkcs11", "", "serve PKCS#11 on this Unix socket, for p11-kit-client.so")
	cardSock := fs.String("card-socket", "", "serve the card's APDUs on this Unix socket, for tokenlab's own clients")
	profile := fs.String("profile", "", "middleware profile of the PKCS#11 server, with knobs over it as PROFILE+KNOB=VALUE (tokenlab profiles lists them; default strict-2fa)")
	promptKind := fs.String("prompt", "", "how the middleware asks for a PIN: none (applications give it), terminal, pinentry, env (TOKENLAB_PIN), file:PATH")
	auditLog := fs.String("audit-log", "", "append every middleware event to this file as JSON lines")
	touchFlag := fs.String("touch", "", "how the emulated user answers touch requests: auto (at once), refuse, or a delay such as 2s")
	verbose := fs.Bool("v", false, "log every APDU (header, lengths and status word; never its data)")
	sshAddr := fs.String("ssh", "", "run the SSH server on this address (HOST:PORT), with the --ssh-* options")
	sshFlags := defaultSSHServerOptions() // its flags are applied over the configuration file below
	sshFlags.addFlags(fs, "ssh-")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	cfg := newServeConfig()
	if *config != "" {
		var err error
		if cfg, err = loadConfig(*config); err != nil {
			return err
		}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	override := func(name string, dst *string, v string) {
		if set[name] {
			*dst = v
		}
	}
	override("state", &cfg.State, *dir)
	override("vpcd", &cfg.VPCD, *addr)
	override("pkcs11", &cfg.PKCS11, *pkcs11)
	override("card-socket", &cfg.CardSocket, *cardSock)
	override("profile", &cfg.Profile, *profile)
	override("prompt", &cfg.Prompt, *promptKind)
	override("audit-log", &cfg.AuditLog, *auditLog)
	override("touch", &cfg.Touch, *touchFlag)
	override("ssh", &cfg.SSH, *sshAddr)
	if set["v"] {
		cfg.Verbose = *verbose
	}
	var sshErr error
	sshFlag := ""
	fs.Visit(func(f *flag.Flag) {
		if name, ok := strings.CutPrefix(f.Name, "ssh-"); ok && sshErr == nil {
			sshFlag = f.Name
			sshErr = cfg.SSHServer.set(name, f.Value.String())
		}
	})
	if sshErr != nil {
		return usagef("%v", sshErr)
	}
	if sshFlag != "" && cfg.SSH == "" {
		return usagef("--%s configures the SSH server, which runs only with --ssh ADDR", sshFlag)
	}
	if cfg.SSH != "" {
		if _, _, err := net.SplitHostPort(cfg.SSH); err != nil {
			return usagef("--ssh: %q is not HOST:PORT", cfg.SSH)
		}
	}
	if err := requireFlag("state", cfg.State); err != nil {
		return err
	}
	if cfg.VPCD == "" {
		cfg.VPCD = vpcd.DefaultAddr
	}
	if cfg.VPCD != "off" {
		if _, _, err := net.SplitHostPort(cfg.VPCD); err != nil {
			return usagef("--vpcd: %q is not HOST:PORT or off", cfg.VPCD)
		}
	}
	if cfg.Touch == "" {
		cfg.Touch = "auto"
	}
	touch, err := parseTouch(cfg.Touch)
	if err != nil {
		return usagef("--touch: %v", err)
	}
	if cfg.Profile != "" {
		if _, err := middleware.ParsePolicy(cfg.Profile); err != nil {
			return usagef("--profile: %v", err)
		}
	}
	policy, err := cfg.resolvePolicy()
	if err != nil {
		return err
	}
	if cfg.Prompt == "" {
		cfg.Prompt = "none"
	}
	if err := checkPrompt(cfg.Prompt); err != nil {
		return usagef("--prompt: %v", err)
	}
	level := slog.LevelInfo
	if cfg.Verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	d, err := yubikey.Open(cfg.State, touch)
	if err != nil {
		return err
	}
	defer func() {
		// Close commits the PIN counter a right PIN left one try short (piv.Applet.Flush).
		if err := d.Close(); err != nil {
			log.Error("closing the state directory", "state", cfg.State, "err", err)
		}
	}()
	d.OnFail(func(err error) {
		log.Error("the card stopped: a save to the state directory failed; it answers 6581 to every command until tokenlab serve is restarted, and the state directory holds what was saved", "state", cfg.State, "err", err)
	})

	ctx, stop := context.WithCancel(ctx)
	defer stop()
	log.Info("serving virtual YubiKey", "serial", d.Serial(), "firmware", d.Version().String(), "state", cfg.State)

	pr, err := newPrompter(cfg.Prompt)
	if err != nil {
		return err
	}
	audit, closeAudit, err := openAudit(cfg.AuditLog, log)
	if err != nil {
		return err
	}
	defer closeAudit()

	var wg sync.WaitGroup
	errs := make(chan error, 6)
	run := func(f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil && !errors.Is(err, context.Canceled) {
				errs <- err
				stop()
			}
		}()
	}
	// An early return below stops what already runs, and waits for it.
	defer func() { stop(); wg.Wait() }()

	control := filepath.Join(cfg.State, controlSocket)
	if ln, err := unixsock.Listen(control); err != nil {
		// The card still serves; only tokenlab card remove|insert cannot reach it.
		log.Warn("no control socket: tokenlab card remove and insert will not reach this card", "err", err)
	} else {
		defer os.Remove(control)
		srv := &controlServer{dev: d, log: log}
		run(func() error { return wrap("control socket", srv.serve(ctx, ln)) })
	}

	var sshSrv *sshServer
	if cfg.SSH != "" {
		sshSrv, err = cfg.SSHServer.newServer(ctx, "ssh-", log, func(ctx context.Context) (*middleware.Token, func(), error) {
			tok, err := middleware.Open(ctx, d.Card.Dial, middleware.Options{Application: "sshd", Policy: policy, Prompter: pr, Audit: audit})
			if err != nil {
				return nil, nil, err
			}
			return tok, func() { tok.Close(context.Background()) }, nil
		})
		if err != nil {
			return err
		}
		defer sshSrv.Close()
	}
	// closeCardSessions applies SSH's close-on-removal when the card leaves a reader.
	closeCardSessions := func() {
		if sshSrv != nil && cfg.SSHServer.CloseOnRemoval {
			sshSrv.CloseCardSessions(cardSSHKeys(d))
		}
	}

	if cfg.VPCD != "off" {
		link := &vpcd.Link{Addr: cfg.VPCD, Card: d.Card, Log: log}
		// To pcscd's applications, a dropped link (pcscd gone, the card removed) is a removal.
		link.Removed = func() {
			if ctx.Err() == nil {
				closeCardSessions()
			}
		}
		log.Info("plugging the card into pcscd through vpcd", "vpcd", cfg.VPCD)
		run(func() error { return wrap("vpcd", link.Run(ctx)) })
	}
	if cfg.CardSocket != "" {
		ln, err := unixsock.Listen(cfg.CardSocket)
		if err != nil {
			return fmt.Errorf("--card-socket: %w", err)
		}
		defer os.Remove(cfg.CardSocket)
		log.Info("serving the card's APDUs", "socket", cfg.CardSocket)
		srv := &cardsock.Server{Card: d.Card, Log: log}
		run(func() error { return wrap("card socket", srv.Serve(ctx, ln)) })
	}
	if cfg.PKCS11 != "" {
		sock, err := filepath.Abs(cfg.PKCS11)
		if err != nil {
			return err
		}
		ln, err := unixsock.Listen(sock)
		if err != nil {
			return fmt.Errorf("--pkcs11: %w", err)
		}
		defer os.Remove(sock)
		srv := pkcs11srv.New(pkcs11srv.Config{Reader: d.Card, Policy: policy, Prompter: pr, Audit: audit, Log: log})
		log.Info("serving PKCS#11 over the p11-kit RPC protocol", "socket", sock, "profile", policy.Name, "prompt", cfg.Prompt)
		fmt.Fprintf(stdout, "PKCS#11 is served on %s, profile %s. Applications load p11-kit's client module:\n", sock, policy.Name)
		fmt.Fprintf(stdout, "  export P11_KIT_SERVER_ADDRESS=unix:path=%s\n", sock)
		fmt.Fprintf(stdout, "  pkcs11-tool --module %s -L\n", p11kitClient)
		fmt.Fprintf(stdout, "  ssh -I %s user@host\n", p11kitClient)
		run(func() error { return wrap("pkcs11", srv.Serve(ctx, ln)) })
	}
	if sshSrv != nil {
		ln, err := net.Listen("tcp", cfg.SSH)
		if err != nil {
			return fmt.Errorf("--ssh: %w", err)
		}
		if cfg.SSHServer.CloseOnRemoval {
			run(func() error {
				sshSrv.CloseOnRemovalFunc(ctx, d.Card, func() []gossh.PublicKey { return cardSSHKeys(d) })
				return nil
			})
		}
		log.Info("serving SSH", "addr", ln.Addr().String(), "close-on-removal", cfg.SSHServer.CloseOnRemoval)
		fmt.Fprintf(stdout, "SSH server on %s, host key %s\n", ln.Addr(), sshSrv.hostKeyLine())
		run(func() error { return wrap("ssh", sshSrv.Serve(ctx, ln)) })
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

func wrap(what string, err error) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return err
	}
	return fmt.Errorf("%s: %w", what, err)
}

// newPrompter builds the middleware's PIN dialog; nil for "none".
func newPrompter(kind string) (prompt.Prompter, error) {
	switch {
	case kind == "none":
		return nil, nil
	case kind == "terminal":
		return prompt.NewTerminal(""), nil
	case kind == "pinentry":
		return prompt.NewPinentry("", os.Getenv("GPG_TTY")), nil
	case kind == "env":
		return prompt.Env{}, nil
	case strings.HasPrefix(kind, "file:"):
		return prompt.File{Path: strings.TrimPrefix(kind, "file:")}, nil
	}
	return nil, fmt.Errorf("--prompt: %q is not none, terminal, pinentry, env or file:PATH", kind)
}

// openAudit returns the audit sink: the log at debug level, and a JSON-lines file when asked.
func openAudit(path string, log *slog.Logger) (middleware.Audit, func(), error) {
	logEvent := func(e middleware.Event) {
		log.Debug("audit", "kind", e.Kind.String(), "app", e.Application, "slot", e.Slot, "reason", e.Reason)
	}
	if path == "" {
		return middleware.AuditFunc(logEvent), func() {}, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("--audit-log: %w", err)
	}
	var mu sync.Mutex
	enc := json.NewEncoder(f)
	return middleware.AuditFunc(func(e middleware.Event) {
			logEvent(e)
			mu.Lock()
			defer mu.Unlock()
			enc.Encode(struct {
				Time        time.Time `json:"time"`
				Kind        string    `json:"kind"`
				Application string    `json:"application"`
				Token       string    `json:"token"`
				Slot        string    `json:"slot,omitempty"`
				Reason      string    `json:"reason,omitempty"`
			}{e.Time, e.Kind.String(), e.Application, e.Token, e.Slot, e.Reason})
		}), func() {
			f.Close()
		}, nil
}

// parseTouch turns --touch into the card's touch approver: "auto" touches at once, "refuse"
// never touches (the card answers 6985, as a YubiKey after its 15-second wait), and a duration
// touches after that long, unless the host gives up first.
func parseTouch(s string) (piv.TouchFunc, error) {
	switch s {
	case "auto":
		return nil, nil
	case "refuse":
		return func(context.Context, piv.Slot) error { return errors.New("touch refused") }, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return nil, fmt.Errorf("%q is not auto, refuse or a duration such as 2s", s)
	}
	return func(ctx context.Context, _ piv.Slot) error {
		select {
		case <-time.After(d):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}, nil
}
