package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"tokenlab/emulator/piv"
	"tokenlab/emulator/state"
	"tokenlab/emulator/yubikey"
)

func runCard(args []string, stdout io.Writer) error {
	return dispatch("card", args,
		"usage: tokenlab card init|status|attestation-root|remove|insert --state DIR [flags]\n"+
			"  remove and insert take the card that tokenlab serve runs out of its reader and put it back\n",
		subcommand{"init", func(a []string) error { return runCardInit(a, stdout) }},
		subcommand{"status", func(a []string) error { return runCardStatus(a, stdout) }},
		subcommand{"attestation-root", func(a []string) error { return runCardAttestationRoot(a, stdout) }},
		subcommand{"remove", func(a []string) error { return runCardReader("remove", a, stdout) }},
		subcommand{"insert", func(a []string) error { return runCardReader("insert", a, stdout) }})
}

func runCardInit(args []string, stdout io.Writer) error {
	fs := newFlags("card init", "--state DIR [--serial N] [--version X.Y.Z] [--mgmt-key-alg aes192|3des] [--force]")
	dir := fs.String("state", "", "state directory of the card (created if missing)")
	serial := fs.String("serial", "", "serial number (default: random eight digits)")
	version := fs.String("version", yubikey.DefaultVersion.String(), "firmware version the card reports")
	mgmAlg := fs.String("mgmt-key-alg", "", "algorithm of the default management key: aes192 (default from firmware 5.7.0) or 3des (default before)")
	force := fs.Bool("force", false, "replace a card that already exists in the state directory")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	if err := requireFlag("state", *dir); err != nil {
		return err
	}
	var opts yubikey.Options
	if *serial != "" {
		n, err := strconv.ParseUint(*serial, 10, 32)
		if err != nil || n == 0 {
			return usagef("--serial: %q is not a serial number (1 to 4294967295)", *serial)
		}
		opts.Serial = uint32(n)
	}
	v, err := piv.ParseVersion(*version)
	if err != nil {
		return usagef("--version: %v", err)
	}
	opts.Version = v
	if *mgmAlg != "" {
		if opts.ManagementKeyAlgorithm, err = piv.ParseManagementKeyAlgorithm(*mgmAlg); err != nil {
			return usagef("--mgmt-key-alg: %v", err)
		}
	}
	d, err := yubikey.Init(*dir, opts, *force)
	if err != nil {
		return err
	}
	defer d.Close()
	st := d.Status()
	fmt.Fprintf(stdout, "initialized card %d (firmware %v) in %s\n", d.Serial(), d.Version(), *dir)
	fmt.Fprintf(stdout, "PIN 123456, PUK 12345678, management key %v 010203040506070801020304050607080102030405060708\n", st.ManagementKeyAlgorithm)
	return nil
}

// statusJSON is the machine-readable form of `card status --json`.
type statusJSON struct {
	Serial        uint32      `json:"serial"`
	Version       string      `json:"version"`
	PIN           retriesJSON `json:"pin"`
	PUK           retriesJSON `json:"puk"`
	ManagementKey mgmJSON     `json:"management_key"`
	Slots         []slotJSON  `json:"slots"`
	// Served says a `tokenlab serve` runs the card: the retry counters are the card's own, from
	// its control socket, rather than the state directory's.
	Served bool `json:"served"`
}

type retriesJSON struct {
	Retries    int  `json:"retries"`
	MaxRetries int  `json:"max_retries"`
	Default    bool `json:"default"`
}

type mgmJSON struct {
	Algorithm   string `json:"algorithm"`
	Default     bool   `json:"default"`
	TouchPolicy string `json:"touch_policy"`
}

type slotJSON struct {
	Slot        string `json:"slot"`
	Algorithm   string `json:"algorithm"`
	PINPolicy   string `json:"pin_policy"`
	TouchPolicy string `json:"touch_policy"`
	Origin      string `json:"origin"`
	Subject     string `json:"certificate_subject,omitempty"`
}

func runCardStatus(args []string, stdout io.Writer) error {
	fs := newFlags("card status", "--state DIR [--json]")
	dir := fs.String("state", "", "state directory of the card")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	if err := requireFlag("state", *dir); err != nil {
		return err
	}
	// Reading needs no lock: saves replace the file atomically, so this works while serving.
	d, err := yubikey.Read(*dir)
	if err != nil {
		return err
	}
	st := d.Status()
	// A served card's counters may be ahead of the directory's by the restore a right PIN
	// defers (piv.Applet.Flush): the card tells its own.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	live, err := controlCard(ctx, *dir, "status")
	served := err == nil && live.serial == d.Serial()
	if served {
		st.PINRetries, st.PUKRetries = live.pin, live.puk
	}
	out := statusJSON{
		Served:        served,
		Serial:        d.Serial(),
		Version:       d.Version().String(),
		PIN:           retriesJSON{st.PINRetries, st.PINMaxRetries, st.PINDefault},
		PUK:           retriesJSON{st.PUKRetries, st.PUKMaxRetries, st.PUKDefault},
		ManagementKey: mgmJSON{st.ManagementKeyAlgorithm.String(), st.ManagementKeyDefault, st.ManagementKeyTouch.String()},
		Slots:         []slotJSON{},
	}
	for _, s := range st.Slots {
		sj := slotJSON{Slot: s.Slot.String(), Algorithm: s.Algorithm.String(), PINPolicy: s.PINPolicy.String(),
			TouchPolicy: s.TouchPolicy.String(), Origin: s.Origin.String()}
		if s.Certificate != nil {
			if c, err := x509.ParseCertificate(s.Certificate); err == nil {
				sj.Subject = c.Subject.String()
			} else {
				sj.Subject = "(unparsable certificate)"
			}
		}
		out.Slots = append(out.Slots, sj)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	def := func(b bool) string {
		if b {
			return ", default"
		}
		return ""
	}
	fmt.Fprintf(stdout, "Card:            virtual YubiKey 5, serial %d, firmware %s\n", out.Serial, out.Version)
	if served {
		fmt.Fprintf(stdout, "State:           %s/%s, served by tokenlab serve\n", *dir, state.CardFile)
	} else {
		fmt.Fprintf(stdout, "State:           %s/%s\n", *dir, state.CardFile)
	}
	fmt.Fprintf(stdout, "PIN:             %d of %d tries left%s\n", out.PIN.Retries, out.PIN.MaxRetries, def(out.PIN.Default))
	fmt.Fprintf(stdout, "PUK:             %d of %d tries left%s\n", out.PUK.Retries, out.PUK.MaxRetries, def(out.PUK.Default))
	fmt.Fprintf(stdout, "Management key:  %s%s, touch %s\n", out.ManagementKey.Algorithm, def(out.ManagementKey.Default), out.ManagementKey.TouchPolicy)
	if len(out.Slots) == 0 {
		fmt.Fprintln(stdout, "Slots:           none")
		return nil
	}
	fmt.Fprintln(stdout, "Slots:")
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  SLOT\tALGORITHM\tPIN\tTOUCH\tORIGIN\tCERTIFICATE")
	for _, s := range out.Slots {
		subj := s.Subject
		if subj == "" {
			subj = "-"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", s.Slot, s.Algorithm, s.PINPolicy, s.TouchPolicy, s.Origin, subj)
	}
	return tw.Flush()
}

func runCardAttestationRoot(args []string, stdout io.Writer) error {
	fs := newFlags("card attestation-root", "--state DIR")
	dir := fs.String("state", "", "state directory of the card")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	if err := requireFlag("state", *dir); err != nil {
		return err
	}
	d, err := yubikey.Read(*dir)
	if err != nil {
		return err
	}
	root := d.AttestationRoot()
	if root == nil {
		return fmt.Errorf("card %d has no attestation root (its attestation key was imported)", d.Serial())
	}
	return pem.Encode(stdout, &pem.Block{Type: "CERTIFICATE", Bytes: root})
}
