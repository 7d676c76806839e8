package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"strconv"
	"strings"

	gossh "golang.org/x/crypto/ssh"

	"tokenlab/emulator/yubikey"
	"tokenlab/middleware"
	"tokenlab/ssh"
)

// sshServerOptions configure tokenlab's SSH server: `tokenlab ssh listen` takes them as flags,
// `tokenlab serve` as --ssh-* flags and ssh-* keys of its configuration file.
type sshServerOptions struct {
	AuthorizedKeys string // OpenSSH authorized_keys of plain keys that may log in as User
	User           string // "" is the local user
	CA             string // PEM CA certificates of RFC 6187 user certificates
	UserMap        string // lines "CERTIFICATE-NAME USER..."
	MaxAuthTries   int
	HostKey        string // OpenSSH private key file
	HostSlot       string // the card slot of the host key, instead
	HostX509       bool
	Shell          string
	// CloseOnRemoval disconnects the sessions that authenticated with one of the card's keys
	// when the card leaves its reader (SecureCRT's administrative option).
	CloseOnRemoval bool
}

func defaultSSHServerOptions() sshServerOptions {
	return sshServerOptions{MaxAuthTries: ssh.DefaultMaxAuthTries, Shell: "/bin/sh", CloseOnRemoval: true}
}

// sshServerKeys are the option names, as flags (after a prefix) and configuration keys; {p}
// in a usage stands for the prefix.
var sshServerKeys = []struct{ name, usage string }{
	{"authorized-keys", "OpenSSH authorized_keys file of plain keys that may log in as the user of --{p}user"},
	{"user", "the user --{p}authorized-keys logs in (default: the local user)"},
	{"ca", "PEM CA certificates whose RFC 6187 user certificates may log in"},
	{"user-map", "file of lines 'CERTIFICATE-NAME USER...': the users a certificate's UPN or CN may log in as (default: the name itself); write upn:NAME or cn:NAME to match only that field"},
	{"max-auth-tries", "failed authentication requests before the server disconnects"},
	{"host-key", "OpenSSH private host key file (default: a new Ed25519 key, or the card's with --{p}host-slot)"},
	{"host-slot", "use this card slot's key as the host key"},
	{"host-x509", "present the host slot's certificate as an RFC 6187 host key"},
	{"shell", "shell that runs the sessions' commands, as this process's user"},
	{"close-on-removal", "disconnect the sessions that authenticated with one of the card's keys when the card leaves its reader"},
}

// optionFlag is one option as a flag.Value.
type optionFlag struct {
	o    *sshServerOptions
	name string
}

func (f optionFlag) String() string {
	if f.o == nil {
		return ""
	}
	return f.o.get(f.name)
}
func (f optionFlag) Set(v string) error { return f.o.set(f.name, v) }
func (f optionFlag) IsBoolFlag() bool {
	return f.name == "host-x509" || f.name == "close-on-removal"
}

// addFlags registers the options on fs as --PREFIXNAME flags.
func (o *sshServerOptions) addFlags(fs *flag.FlagSet, prefix string) {
	for _, k := range sshServerKeys {
		fs.Var(optionFlag{o, k.name}, prefix+k.name, strings.ReplaceAll(k.usage, "{p}", prefix))
	}
}

func (o *sshServerOptions) get(name string) string {
	switch name {
	case "authorized-keys":
		return o.AuthorizedKeys
	case "user":
		return o.User
	case "ca":
		return o.CA
	case "user-map":
		return o.UserMap
	case "max-auth-tries":
		return strconv.Itoa(o.MaxAuthTries)
	case "host-key":
		return o.HostKey
	case "host-slot":
		return o.HostSlot
	case "host-x509":
		return strconv.FormatBool(o.HostX509)
	case "shell":
		return o.Shell
	case "close-on-removal":
		return strconv.FormatBool(o.CloseOnRemoval)
	}
	return ""
}

// set sets the option name from its text, as a flag or a configuration file gives it.
func (o *sshServerOptions) set(name, v string) error {
	boolean := func(dst *bool) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q is not true or false", v)
		}
		*dst = b
		return nil
	}
	switch name {
	case "authorized-keys":
		o.AuthorizedKeys = v
	case "user":
		o.User = v
	case "ca":
		o.CA = v
	case "user-map":
		o.UserMap = v
	case "max-auth-tries":
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("%q is not a count", v)
		}
		o.MaxAuthTries = n
	case "host-key":
		o.HostKey = v
	case "host-slot":
		if _, err := parseSlot(v); err != nil {
			return err
		}
		o.HostSlot = v
	case "host-x509":
		return boolean(&o.HostX509)
	case "shell":
		o.Shell = v
	case "close-on-removal":
		return boolean(&o.CloseOnRemoval)
	default:
		return fmt.Errorf("unknown SSH server option %q", name)
	}
	return nil
}

// sshServer is a configured SSH server and what it needs to watch its card.
type sshServer struct {
	*ssh.Server
	host gossh.Signer
	// closeToken closes the middleware Token of an on-card host key.
	closeToken func()
}

// Close closes the host key's Token, if any.
func (s *sshServer) Close() {
	if s.closeToken != nil {
		s.closeToken()
	}
}

// newServer builds the server. openToken opens a middleware Token on the card for an on-card
// host key, and returns it with the function that closes it; it is called only with HostSlot
// set, and the server's Close calls that function. prefix is how the options are spelled as flags
// ("" or "ssh-"), for error messages.
func (o *sshServerOptions) newServer(ctx context.Context, prefix string, log *slog.Logger,
	openToken func(ctx context.Context) (*middleware.Token, func(), error)) (*sshServer, error) {
	if o.MaxAuthTries < 1 {
		return nil, usagef("--%smax-auth-tries: at least 1", prefix)
	}
	if o.AuthorizedKeys == "" && o.CA == "" {
		return nil, usagef("give --%sauthorized-keys, --%sca or both: nobody could log in", prefix, prefix)
	}
	if o.HostKey != "" && o.HostSlot != "" {
		return nil, usagef("give --%shost-key or --%shost-slot, not both", prefix, prefix)
	}
	keys := &ssh.Keys{Authorized: map[string][]gossh.PublicKey{}}
	if o.AuthorizedKeys != "" {
		b, err := os.ReadFile(o.AuthorizedKeys)
		if err != nil {
			return nil, err
		}
		list, err := ssh.ParseAuthorizedKeys(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", o.AuthorizedKeys, err)
		}
		u := o.User
		if u == "" {
			cur, err := user.Current()
			if err != nil {
				return nil, err
			}
			u = cur.Username
		}
		keys.Authorized[u] = list
	}
	if o.CA != "" {
		pool, err := loadPool(o.CA)
		if err != nil {
			return nil, err
		}
		keys.CAs = pool
	}
	if o.UserMap != "" {
		m, err := loadUserMap(o.UserMap)
		if err != nil {
			return nil, err
		}
		keys.Users = m
	}
	s := &sshServer{}
	switch {
	case o.HostKey != "":
		b, err := os.ReadFile(o.HostKey)
		if err != nil {
			return nil, err
		}
		if s.host, err = gossh.ParsePrivateKey(b); err != nil {
			return nil, fmt.Errorf("--%shost-key %s: %w", prefix, o.HostKey, err)
		}
	case o.HostSlot != "":
		slot, err := parseSlot(o.HostSlot)
		if err != nil {
			return nil, usagef("--%shost-slot: %v", prefix, err)
		}
		var tok *middleware.Token
		if tok, s.closeToken, err = openToken(ctx); err != nil {
			return nil, err
		}
		if s.host, err = ssh.TokenSigner(ctx, tok, slot, o.HostX509); err != nil {
			s.Close()
			return nil, err
		}
	default:
		_, k, _ := ed25519.GenerateKey(rand.Reader)
		s.host, _ = gossh.NewSignerFromSigner(k)
	}
	srv, err := ssh.NewServer(ssh.ServerConfig{HostKeys: []gossh.Signer{s.host}, Auth: keys, Handler: ssh.ExecHandler(o.Shell),
		MaxAuthTries: o.MaxAuthTries, Log: log})
	if err != nil {
		s.Close()
		return nil, err
	}
	s.Server = srv
	return s, nil
}

// hostKeyLine describes the host key for the startup message.
func (s *sshServer) hostKeyLine() string {
	return s.host.PublicKey().Type() + " " + gossh.FingerprintSHA256(s.host.PublicKey())
}

// cardSSHKeys returns the public keys in the card's slots, read from the card's state rather
// than through APDUs, so that it works while the card is out of its reader.
func cardSSHKeys(d *yubikey.Device) []gossh.PublicKey {
	var keys []gossh.PublicKey
	for _, s := range d.Status().Slots {
		if k, err := gossh.NewPublicKey(s.PublicKey); err == nil {
			keys = append(keys, k)
		}
	}
	return keys
}
