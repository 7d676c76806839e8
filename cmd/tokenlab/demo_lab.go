package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"tokenlab/lab"
)

// demoCase is one of the demo's two stories, and what each profile must show in it.
type demoCase struct {
	name, scenario string
	// violated gives, per profile, the rules the run must break; the others must hold.
	violated map[string][]string
}

var demoCases = []demoCase{
	{"The FortiClient case: IKEv2 reconnects with the ECC certificate on the card", "forticlient-reconnect",
		map[string][]string{"safenet-single-logon": {"pin-every-connection"}, "strict-2fa": nil}},
	{"The SecureCRT case: RFC 6187 SSH logins with the certificate on the card", "securecrt-x509",
		map[string][]string{"safenet-single-logon": {"pin-every-connection"}, "strict-2fa": nil}},
}

var demoProfiles = []string{"safenet-single-logon", "strict-2fa"}

// runDemo is `make demo`: the FortiClient and SecureCRT cases, each under SafeNet's single
// logon and under strict-2fa, on an in-memory card with the IKEv2 gateway and the SSH server on
// loopback. It exits 0 when each profile shows what it is known to do: single logon caught
// violating "PIN on every connection", strict-2fa complying.
func runDemo(args []string, stdout io.Writer) error {
	if len(args) > 0 && args[0] == "card" {
		return inSubcommand("demo card", runCardDemo(args[1:], stdout))
	}
	fs := newFlags("demo", "[--html FILE] | card")
	html := fs.String("html", "", "also write the HTML report with the timelines to `FILE`")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	ctx := context.Background()
	start := time.Now()
	var runs []*lab.Result
	var summary, unexpected []string
	for _, c := range demoCases {
		sc, err := lab.Load(c.scenario)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "=== %s\n\n", c.name)
		for _, p := range demoProfiles {
			r, err := lab.Run(ctx, sc, p, lab.Options{})
			if err != nil {
				return err
			}
			runs = append(runs, r)
			if err := lab.WriteTable(stdout, r); err != nil {
				return err
			}
			if r.Failed() {
				unexpected = append(unexpected, fmt.Sprintf("%s under %s: a step failed", c.scenario, p))
			}
			var broken []string
			for _, v := range r.Verdicts {
				if !v.OK {
					broken = append(broken, v.Rule)
					summary = append(summary, fmt.Sprintf("%s: %s", c.scenario, lab.VerdictLine(r, v)))
				}
			}
			if len(broken) == 0 {
				summary = append(summary, fmt.Sprintf("%s: verdict: %s complies with every rule", c.scenario, p))
			}
			if !slices.Equal(broken, c.violated[p]) {
				unexpected = append(unexpected, fmt.Sprintf("%s under %s broke %v, expected %v", c.scenario, p, broken, c.violated[p]))
			}
		}
	}
	fmt.Fprintln(stdout, "=== Summary")
	for _, l := range summary {
		fmt.Fprintln(stdout, "  "+l)
	}
	fmt.Fprintf(stdout, "\nSingle logon is caught letting reconnects through without a PIN; strict-2fa asks every time.\n")
	fmt.Fprintf(stdout, "(%d runs in %v; `tokenlab lab run SCENARIO` runs any scenario under any profile.)\n",
		len(runs), time.Since(start).Round(time.Millisecond))
	if *html != "" {
		if err := writeFileAtomic(*html, func(w io.Writer) error { return lab.WriteHTML(w, runs) }); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "HTML report: %s\n", *html)
	}
	if len(unexpected) > 0 {
		return fmt.Errorf("the demo did not show what it should:\n  %s", strings.Join(unexpected, "\n  "))
	}
	return nil
}
