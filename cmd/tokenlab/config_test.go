package main

import (
	"os"
	"strings"
	"testing"
	"time"

	"tokenlab/middleware"
)

func TestExampleConfig(t *testing.T) {
	c, err := loadConfig("../../testdata/serve.conf")
	if err != nil {
		t.Fatal(err)
	}
	if c.State != "/var/lib/tokenlab/card" || c.PKCS11 != "/run/tokenlab/pkcs11.sock" || c.Profile != "strict-2fa" {
		t.Errorf("parsed %+v", c)
	}
	p, err := c.resolvePolicy()
	// The example sets each knob to strict-2fa's own value: the policy is the stock profile.
	if err != nil || p.Name != "strict-2fa" || p.AtDisconnect != middleware.DisconnectReset || !p.ClearOnRemoval {
		t.Errorf("policy %+v, %v", p, err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"profile = sloppy", `x.conf:1: profile: "sloppy" is not a profile`},
		{"\n\ncolour = blue", "x.conf:3: colour: unknown key"},
		{"state", `x.conf:1: "state" is not key = value`},
		{"[policy]\nttl = soon", `x.conf:2: ttl: "soon" is not a duration`},
		{"[policy]\nmax-uses = -1", `x.conf:2: max-uses: "-1" is not a count`},
		{"[policy]\nscope = galaxy", `x.conf:2: scope: "galaxy" is not a cache scope`},
		{"[policy\nscope = none", "x.conf:1: section header"},
		{"[network]", "x.conf:1: unknown section [network]"},
		{"prompt = telepathy", `x.conf:1: prompt: "telepathy" is not none`},
		{"state =", "x.conf:1: state: no value"},
		{"[policy]\nbypass-pin-always = maybe", `x.conf:2: bypass-pin-always: "maybe" is not true or false`},
	} {
		_, err := parseConfig("x.conf", []byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.in, err, tc.want)
		}
	}
	c, _ := parseConfig("x.conf", []byte("profile = activclient\n[policy]\nidle = 5m\n"))
	p, _ := c.resolvePolicy()
	if p.Idle != 5*time.Minute || p.Scope != middleware.ScopeLogonSession || p.Name != "activclient+idle=5m" {
		t.Errorf("override: %+v", p)
	}
}

func FuzzConfig(f *testing.F) {
	b, _ := os.ReadFile("../../testdata/serve.conf")
	f.Add(b)
	f.Add([]byte("[policy]\nttl = 1h\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parseConfig("fuzz.conf", b)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.conf:") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		c.resolvePolicy()
	})
}
