package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"tokenlab/middleware"
)

func runProfiles(args []string, stdout io.Writer) error {
	fs := newFlags("profiles", "")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PROFILE\tSCOPE\tTTL\tIDLE\tMAX USES\tPIN-ALWAYS\tTRUST CARD\tLOGOUT\tDISCONNECT\tREMOVAL\tRE-INSERT")
	dur := func(d time.Duration) string {
		if d == 0 {
			return "-"
		}
		return d.String()
	}
	for _, p := range middleware.Profiles {
		uses := "-"
		if p.MaxUses > 0 {
			uses = fmt.Sprint(p.MaxUses)
		}
		always := "honoured"
		if p.BypassPINAlways {
			always = "bypassed"
		}
		logout := "clear cache"
		if p.KeepCacheAtLogout {
			logout = "keep cache"
		}
		removal := "keep cache"
		if p.ClearOnRemoval {
			removal = "clear"
		}
		reinsert := "-"
		if p.ReverifyOnReinsert {
			reinsert = "re-verify"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%v\t%s\t%s\t%s\t%s\n", p.Name, p.Scope, dur(p.TTL), dur(p.Idle), uses, always,
			p.TrustCardStatus, logout, p.AtDisconnect, removal, reinsert)
	}
	tw.Flush()
	fmt.Fprintln(stdout)
	for _, p := range middleware.Profiles {
		fmt.Fprintf(stdout, "%s: %s.\n", p.Name, p.Reproduces)
	}
	fmt.Fprintf(stdout, "\nWherever a profile is named, knobs can be set over it as PROFILE+KNOB=VALUE..., such as strict-2fa+idle=15m.\nKnobs: %s.\n",
		strings.Join(middleware.Knobs, ", "))
	return nil
}
