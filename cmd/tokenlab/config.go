package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"tokenlab/middleware"
)

// serveConfig is what `tokenlab serve` runs with: flags, or a configuration file they override.
//
// The file is lines of `key = value`; `#` starts a comment; a `[policy]` section overrides the
// knobs of the chosen profile. testdata/serve.conf is a documented example.
type serveConfig struct {
	State      string
	VPCD       string // "off" disables the vpcd link
	PKCS11     string // socket path, "" for none
	CardSocket string // socket path, "" for none
	Profile    string
	Prompt     string // none, terminal, pinentry, env, file:PATH
	AuditLog   string // path of a JSON-lines audit log, "" for none
	Touch      string
	Verbose    bool
	SSH        string // address of the SSH server, "" for none
	SSHServer  sshServerOptions

	overrides [][2]string // knob and value, from [policy], set over the profile
}

func newServeConfig() *serveConfig {
	return &serveConfig{SSHServer: defaultSSHServerOptions()}
}

// parseConfig reads a configuration file. An error names the file, the line and the key.
func parseConfig(name string, b []byte) (*serveConfig, error) {
	c := newServeConfig()
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if i := strings.IndexByte(text, '#'); i >= 0 {
			text = text[:i]
		}
		text = strings.TrimSpace(text)
		if text == "" {
			continue
		}
		errf := func(format string, args ...any) error {
			return fmt.Errorf("%s:%d: %s", name, line, fmt.Sprintf(format, args...))
		}
		if strings.HasPrefix(text, "[") {
			if !strings.HasSuffix(text, "]") {
				return nil, errf("section header %q lacks its closing ]", text)
			}
			section = strings.TrimSpace(text[1 : len(text)-1])
			if section != "policy" {
				return nil, errf("unknown section [%s] (the only section is [policy])", section)
			}
			continue
		}
		key, value, ok := strings.Cut(text, "=")
		if !ok {
			return nil, errf("%q is not key = value", text)
		}
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		if value == "" {
			return nil, errf("%s: no value", key)
		}
		var err error
		if section == "policy" {
			err = c.policyKey(key, value)
		} else {
			err = c.topKey(key, value)
		}
		if err != nil {
			return nil, errf("%s: %v", key, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s:%d: %v", name, line+1, err)
	}
	return c, nil
}

func (c *serveConfig) topKey(key, value string) error {
	switch key {
	case "state":
		c.State = value
	case "vpcd":
		c.VPCD = value
	case "pkcs11":
		c.PKCS11 = value
	case "card-socket":
		c.CardSocket = value
	case "profile":
		if _, err := middleware.ParsePolicy(value); err != nil {
			return err
		}
		c.Profile = value
	case "prompt":
		if err := checkPrompt(value); err != nil {
			return err
		}
		c.Prompt = value
	case "audit-log":
		c.AuditLog = value
	case "touch":
		if _, err := parseTouch(value); err != nil {
			return err
		}
		c.Touch = value
	case "verbose":
		v, err := strconv.ParseBool(value)
		if err != nil {
			return fmt.Errorf("%q is not true or false", value)
		}
		c.Verbose = v
	case "ssh":
		if _, _, err := net.SplitHostPort(value); err != nil {
			return fmt.Errorf("%q is not HOST:PORT", value)
		}
		c.SSH = value
	default:
		if name, ok := strings.CutPrefix(key, "ssh-"); ok {
			return c.SSHServer.set(name, value)
		}
		return fmt.Errorf("unknown key (state, vpcd, pkcs11, card-socket, profile, prompt, audit-log, touch, verbose, ssh, ssh-*)")
	}
	return nil
}

func (c *serveConfig) policyKey(key, value string) error {
	var p middleware.Policy
	if err := p.Set(key, value); err != nil {
		return err
	}
	c.overrides = append(c.overrides, [2]string{key, value})
	return nil
}

// resolvePolicy is the profile with the [policy] knobs set over it; each knob that changes the
// profile is named in the policy's name ("strict-2fa+idle=15m"), so that audit trails do not
// claim the stock behaviour.
func (c *serveConfig) resolvePolicy() (middleware.Policy, error) {
	name := c.Profile
	if name == "" {
		name = "strict-2fa"
	}
	p, err := middleware.ParsePolicy(name)
	if err != nil {
		return p, err
	}
	for _, o := range c.overrides {
		if err := p.Override(o[0], o[1]); err != nil {
			return p, err
		}
	}
	return p, nil
}

func checkPrompt(v string) error {
	switch {
	case v == "none", v == "terminal", v == "pinentry", v == "env":
		return nil
	case strings.HasPrefix(v, "file:") && len(v) > len("file:"):
		return nil
	}
	return fmt.Errorf("%q is not none, terminal, pinentry, env or file:PATH", v)
}

// loadConfig reads the configuration file at path.
func loadConfig(path string) (*serveConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseConfig(path, b)
}
