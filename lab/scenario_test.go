package lab

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

const header = "scenario t\nrequire pin-every-connection\n"

func TestParse(t *testing.T) {
	sc, err := Parse("ok.scenario", strings.NewReader(`# a comment
scenario reconnects
title FortiClient and PKCS#11: three connections   # the title keeps "PKCS#11"
profiles strict-2fa safenet-single-logon
require pin-every-connection
require pin-every-signature 9c
require reauth-after 15m
require no-reuse-after-removal

connect vpn pkcs11 key 9c
sign vpn 9a
disconnect vpn
advance 1h30m
remove
insert
connect vpn pkcs11
quit vpn
`))
	if err != nil {
		t.Fatal(err)
	}
	if sc.Name != "reconnects" || sc.Title != "FortiClient and PKCS#11: three connections" {
		t.Errorf("name %q, title %q", sc.Name, sc.Title)
	}
	if got := strings.Join(sc.Profiles, " "); got != "strict-2fa safenet-single-logon" {
		t.Errorf("profiles %q", got)
	}
	var rules []string
	for _, r := range sc.Rules {
		rules = append(rules, r.String())
	}
	if got := strings.Join(rules, "; "); got != "pin-every-connection; pin-every-signature 9c; reauth-after 15m; no-reuse-after-removal" {
		t.Errorf("rules %q", got)
	}
	want := []Step{
		{Line: 10, Op: OpConnect, App: "vpn", Kind: KindPKCS11, Slot: 0x9C},
		{Line: 11, Op: OpSign, App: "vpn", Slot: 0x9A},
		{Line: 12, Op: OpDisconnect, App: "vpn"},
		{Line: 13, Op: OpAdvance, Duration: 90 * time.Minute},
		{Line: 14, Op: OpRemove},
		{Line: 15, Op: OpInsert},
		{Line: 16, Op: OpConnect, App: "vpn", Kind: KindPKCS11, Slot: 0x9A},
		{Line: 17, Op: OpQuit, App: "vpn"},
	}
	if len(sc.Steps) != len(want) {
		t.Fatalf("%d steps, want %d", len(sc.Steps), len(want))
	}
	for i, w := range want {
		g := sc.Steps[i]
		g.Text = ""
		if g != w {
			t.Errorf("step %d: %+v, want %+v", i, g, w)
		}
	}
}

// A bad scenario names the file, the line and the problem.
func TestParseErrors(t *testing.T) {
	for _, c := range []struct {
		name, text string
		line       int
		want       string
	}{
		{"empty", "", 0, `no "scenario NAME" line`},
		{"no steps", header, 0, "no steps"},
		{"no rules", "scenario t\nconnect a pkcs11\n", 0, `no "require" line`},
		{"before name", "connect a pkcs11\nscenario t\n", 1, `"connect" before the "scenario NAME" line`},
		{"two names", "scenario t\nscenario u\n", 2, `a second "scenario" line`},
		{"bad name", "scenario a/b\n", 1, "want \"scenario NAME\""},
		{"unknown step", header + "dance\n", 3, `unknown step "dance"`},
		{"unknown profile", "scenario t\nprofiles strict-2fa lax\n", 2, `"lax" is not a profile`},
		{"profile twice", "scenario t\nprofiles ykcs11 ykcs11\n", 2, `"ykcs11" twice`},
		{"unknown rule", "scenario t\nrequire be-safe\n", 2, `unknown rule "be-safe"`},
		{"rule twice", header + "require pin-every-connection\n", 3, "already required on line 2"},
		{"rule without slot", "scenario t\nrequire pin-every-signature\n", 2, "takes a slot"},
		{"rule bad slot", "scenario t\nrequire pin-every-signature 9b\n", 2, `"9b" is not a PIV key slot`},
		{"rule bad duration", "scenario t\nrequire reauth-after soon\n", 2, `"soon" is not a duration`},
		{"negative duration", header + "advance -5m\n", 3, `"-5m" is not a duration`},
		{"huge duration", header + "advance 9000h\n", 3, `"9000h" is not a duration`},
		{"unknown kind", header + "connect a telnet\n", 3, `unknown connection kind "telnet"`},
		{"no endpoint", header + "connect a ike\n", 3, `no ike endpoint; add "start ike" before`},
		{"start pkcs11", header + "start pkcs11\n", 3, "needs no start"},
		{"start twice", header + "start ssh\nstart ssh\n", 4, "ssh is already started"},
		{"connect twice", header + "connect a pkcs11\nconnect a pkcs11\n", 4, `"a" is already connected`},
		{"bad key word", header + "connect a pkcs11 slot 9a\n", 3, `"slot" where "key" was expected`},
		{"bad connect slot", header + "connect a pkcs11 key 9f\n", 3, `"9f" is not a PIV key slot`},
		{"disconnect stranger", header + "disconnect a\n", 3, `"a" is not connected`},
		{"sign unconnected", header + "connect a pkcs11\ndisconnect a\nsign a 9c\n", 5, `"a" is not connected`},
		{"quit stranger", header + "quit a\n", 3, `no application "a" is running`},
		{"remove twice", header + "remove\nremove\n", 4, "already out of the reader"},
		{"insert present", header + "insert\n", 3, "already in the reader"},
		{"connect without card", header + "remove\nconnect a pkcs11\n", 4, "the card is out of the reader"},
		{"extra argument", header + "remove now\n", 3, `want "remove"`},
		{"bad app name", header + "connect a;b pkcs11\n", 3, `"a;b" is not an application name`},
		{"control character", header + "connect a\x01 pkcs11\n", 3, "non-printable"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("bad.scenario", strings.NewReader(c.text))
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v, want a *ParseError", err)
			}
			if pe.File != "bad.scenario" || pe.Line != c.line || !strings.Contains(pe.Msg, c.want) {
				t.Fatalf("%v; want bad.scenario line %d and %q", err, c.line, c.want)
			}
			prefix := "bad.scenario:"
			if c.line > 0 {
				prefix = fmt.Sprintf("bad.scenario:%d:", c.line)
			}
			if !strings.HasPrefix(err.Error(), prefix) {
				t.Errorf("message %q does not start with %q", err, prefix)
			}
		})
	}
}

func TestParseTooLarge(t *testing.T) {
	big := header + strings.Repeat("advance 1s\n", maxScenarioBytes/11+1)
	if _, err := Parse("big.scenario", strings.NewReader(big)); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("a file over the limit: %v", err)
	}
}

// FuzzParse: any input gives a scenario or a *ParseError naming the file, never a panic; a
// scenario that parses has steps and rules that keep the parser's invariants.
func FuzzParse(f *testing.F) {
	scs, err := Bundled()
	if err != nil {
		f.Fatal(err)
	}
	for _, sc := range scs {
		b, err := readBundled(sc.File)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(header + "connect a pkcs11 key 9c\nsign a 9c\nremove\ninsert\nadvance 20m\nquit a\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		sc, err := Parse("fuzz.scenario", strings.NewReader(string(b)))
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || pe.File != "fuzz.scenario" {
				t.Fatalf("error %v is not a ParseError naming the file", err)
			}
			return
		}
		if sc.Name == "" || len(sc.Steps) == 0 || len(sc.Rules) == 0 {
			t.Fatalf("parsed without name, steps or rules: %+v", sc)
		}
		connected := map[string]bool{}
		for _, st := range sc.Steps {
			switch st.Op {
			case OpConnect:
				if connected[st.App] {
					t.Fatalf("line %d: %s connected twice", st.Line, st.App)
				}
				connected[st.App] = true
			case OpDisconnect, OpQuit:
				delete(connected, st.App)
			case OpSign:
				if !connected[st.App] {
					t.Fatalf("line %d: %s signs unconnected", st.Line, st.App)
				}
			case OpAdvance:
				if st.Duration <= 0 || st.Duration > maxAdvance {
					t.Fatalf("line %d: advance %v", st.Line, st.Duration)
				}
			}
		}
	})
}
