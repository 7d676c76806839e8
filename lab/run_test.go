package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// expected gives, for a bundled scenario under a profile, the lines that break each rule; a
// rule not listed complies.
var expected = map[string]map[string]map[string][]int{
	"pkcs11-applications": {
		"strict-2fa":           {"reauth-after 15m": {19}},
		"safenet-single-logon": {"pin-every-connection": {17}, "reauth-after 15m": {19}},
		"opensc-default":       {"reauth-after 15m": {19}},
		// The cached PIN is re-sent for 9C: both 9C signatures go through unasked.
		"opensc-ignore-user-consent": {"pin-every-signature 9c": {14, 15}, "reauth-after 15m": {19}},
		"ykcs11":                     {"reauth-after 15m": {19}},
	},
	// The FortiClient case: single logon reconnects without a PIN, strict-2fa asks each time,
	// and a removal ends the single logon.
	"forticlient-reconnect": {
		"safenet-single-logon": {"pin-every-connection": {17, 20}},
		"strict-2fa":           {},
		// The Windows CSP keeps the PIN for the process's lifetime, across the removal too.
		"windows-minidriver": {"pin-every-connection": {17, 20, 24}, "no-reuse-after-removal": {24}},
	},
	// The SecureCRT case: single logon lets the next logins through unasked; OpenSC's
	// ignore-user-consent re-sends the cached PIN for the forwarded 9C signature.
	"securecrt-x509": {
		"safenet-single-logon":       {"pin-every-connection": {17, 20}},
		"strict-2fa":                 {},
		"opensc-ignore-user-consent": {"pin-every-signature 9c": {21}},
	},
	"idle-reauth": {
		"strict-2fa":           {"reauth-after 15m": {13}},
		"strict-2fa+idle=15m":  {}, // the login ends after 15 idle minutes: asked again
		"activclient":          {}, // its 15 idle minutes end the single logon: asked again
		"safenet-single-logon": {"reauth-after 15m": {13}},
	},
}

// Every bundled scenario under each of its profiles gives the expected verdicts, and every
// bundled scenario and profile has an expectation.
func TestBundledScenarios(t *testing.T) {
	scs, err := Bundled()
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range scs {
		if want := strings.TrimSuffix(sc.File[strings.LastIndexByte(sc.File, '/')+1:], ".scenario"); sc.Name != want {
			t.Errorf("%s is named %q; name it after its file", sc.File, sc.Name)
		}
		exp, ok := expected[sc.Name]
		if !ok {
			t.Errorf("no expectations for bundled scenario %s", sc.Name)
			continue
		}
		for _, p := range sc.Profiles {
			t.Run(sc.Name+"/"+p, func(t *testing.T) {
				want, ok := exp[p]
				if !ok {
					t.Fatalf("no expectation for profile %s", p)
				}
				r, err := Run(context.Background(), sc, p, Options{})
				if err != nil {
					t.Fatal(err)
				}
				for _, s := range r.Steps {
					if s.Err != "" {
						t.Errorf("line %d %q failed: %s", s.Line, s.Text, s.Err)
					}
				}
				got := map[string][]int{}
				for _, v := range r.Verdicts {
					if !v.OK {
						got[v.Rule] = v.Steps
					}
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					var b bytes.Buffer
					WriteTable(&b, r)
					t.Errorf("violations %v, want %v\n%s", got, want, b.String())
				}
				if r.Violated() != (len(want) > 0) {
					t.Errorf("Violated() = %v", r.Violated())
				}
			})
		}
	}
}

// The tallies of a run come from the audit trail: checked here on a small script whose counts
// follow from the profile.
func TestRunCounts(t *testing.T) {
	sc, err := Parse("counts.scenario", strings.NewReader(`scenario counts
require pin-every-connection
require pin-every-signature 9c
connect a pkcs11
sign a 9c
disconnect a
connect a pkcs11
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		profile string
		// prompts, cached re-uses and signatures of each step
		prompts, reuses, sigs []int
	}{
		{"strict-2fa", []int{1, 1, 0, 1}, []int{0, 0, 0, 0}, []int{1, 1, 0, 1}},
		{"safenet-single-logon", []int{1, 1, 0, 0}, []int{0, 0, 0, 1}, []int{1, 1, 0, 1}},
		{"opensc-ignore-user-consent", []int{1, 0, 0, 1}, []int{0, 1, 0, 0}, []int{1, 1, 0, 1}},
	} {
		t.Run(c.profile, func(t *testing.T) {
			r, err := Run(context.Background(), sc, c.profile, Options{})
			if err != nil {
				t.Fatal(err)
			}
			var prompts, reuses, sigs []int
			for _, s := range r.Steps {
				prompts, reuses, sigs = append(prompts, s.Prompts), append(reuses, s.Reuses), append(sigs, s.Signatures)
			}
			if !slices.Equal(prompts, c.prompts) || !slices.Equal(reuses, c.reuses) || !slices.Equal(sigs, c.sigs) {
				t.Errorf("prompts %v, re-uses %v, signatures %v; want %v, %v, %v", prompts, reuses, sigs, c.prompts, c.reuses, c.sigs)
			}
		})
	}
}

// The JSON and HTML reports carry the verdicts; the table's verdict lines are what CI greps.
func TestReports(t *testing.T) {
	sc, err := Load("idle-reauth")
	if err != nil {
		t.Fatal(err)
	}
	var runs []*Result
	for _, p := range []string{"strict-2fa", "activclient"} {
		r, err := Run(context.Background(), sc, p, Options{})
		if err != nil {
			t.Fatal(err)
		}
		runs = append(runs, r)
	}
	var table bytes.Buffer
	for _, r := range runs {
		WriteTable(&table, r)
	}
	for _, want := range []string{
		"verdict: strict-2fa VIOLATES reauth-after 15m (line 13)",
		"verdict: activclient complies with reauth-after 15m",
		"idle-reauth under activclient",
	} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}

	var js bytes.Buffer
	if err := WriteJSON(&js, runs); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Runs []struct {
			Profile  string
			Verdicts []Verdict
			Steps    []struct {
				Line    int
				Prompts int
			}
		}
	}
	if err := json.Unmarshal(js.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Runs) != 2 || doc.Runs[0].Verdicts[0].OK || !doc.Runs[1].Verdicts[0].OK || doc.Runs[0].Steps[0].Prompts != 1 {
		t.Errorf("JSON: %s", js.String())
	}

	var html bytes.Buffer
	if err := WriteHTML(&html, runs); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`<svg class="timeline"`, `class="prompt"`, `class="sign"`, `class="band"`, "strict-2fa VIOLATES reauth-after 15m"} {
		if !strings.Contains(html.String(), want) {
			t.Errorf("HTML lacks %q", want)
		}
	}
}

// Progress lines come as the steps run.
func TestProgress(t *testing.T) {
	sc, err := Load("idle-reauth")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if _, err := Run(context.Background(), sc, "strict-2fa", Options{Progress: &b}); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(b.String(), "\n"); n != len(sc.Steps) || !strings.Contains(b.String(), "step 5/5: sign mail 9a") {
		t.Errorf("progress:\n%s", b.String())
	}
}

// A run leaves nothing behind: its endpoints, connections and applications all end with it.
func TestRunLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	for _, name := range []string{"forticlient-reconnect", "securecrt-x509", "pkcs11-applications"} {
		sc, err := Load(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Run(context.Background(), sc, "strict-2fa", Options{}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines after the runs, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}
