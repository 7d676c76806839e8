package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"tokenlab/apdu"
	"tokenlab/emulator/piv"
	"tokenlab/emulator/yubikey"
	"tokenlab/middleware/pivclient"
)

// The card demo plays a host application against an in-memory card: it generates a key under
// each PIN policy, signs with each three times, and asks for the PIN only when the card refuses.
func runCardDemo(args []string, stdout io.Writer) error {
	fs := newFlags("demo card", "")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	ctx := context.Background()
	d, err := yubikey.New(yubikey.Options{})
	if err != nil {
		return err
	}
	h := &demoHost{c: pivclient.New(d.Card), start: time.Now(), pin: []byte("123456")}
	fmt.Fprintf(stdout, "A virtual YubiKey 5 in memory: serial %d, firmware %v.\n", d.Serial(), d.Version())
	fmt.Fprintln(stdout, "The host signs only when asked to, and asks the user for the PIN only when the card refuses (6982).")
	fmt.Fprintln(stdout)

	if _, err := h.c.Select(ctx); err != nil {
		return err
	}
	h.log("select PIV", "9000", "")
	if err := h.c.AuthenticateManagementKey(ctx, pivclient.AlgAES192, piv.DefaultManagementKey); err != nil {
		return err
	}
	h.log("authenticate management key (AES-192, default)", "9000", "")

	slots := []struct {
		slot   byte
		policy byte
		name   string
	}{
		{pivclient.SlotAuthentication, pivclient.PINPolicyOnce, "once"},
		{pivclient.SlotSignature, pivclient.PINPolicyAlways, "always"},
		{pivclient.SlotCardAuthentication, pivclient.PINPolicyNever, "never"},
	}
	pubs := map[byte]crypto.PublicKey{}
	for _, s := range slots {
		pub, err := h.c.GenerateKey(ctx, s.slot, pivclient.AlgECCP256, s.policy, pivclient.TouchPolicyNever)
		if err != nil {
			return err
		}
		pubs[s.slot] = pub
		h.log(fmt.Sprintf("generate P-256 key in %02x, PIN policy %s", s.slot, s.name), "9000", "")
	}

	type row struct {
		label                   string
		policy                  string
		signatures, ok, prompts int
	}
	var rows []row
	signAll := func(label string, slot byte, policy string, n int) error {
		r := row{label: label, policy: policy}
		for i := 0; i < n; i++ {
			before := h.prompts
			okSig, err := h.sign(ctx, slot, pubs[slot], fmt.Sprintf("message %d", i+1))
			if err != nil {
				return err
			}
			r.signatures++
			if okSig {
				r.ok++
			}
			r.prompts += h.prompts - before
		}
		rows = append(rows, r)
		return nil
	}
	for _, s := range slots {
		if err := signAll(fmt.Sprintf("%02x", s.slot), s.slot, s.name, 3); err != nil {
			return err
		}
	}
	d.Card.Reset()
	h.log("card reset (as a reader does between applications)", "", "")
	if _, err := h.c.Select(ctx); err != nil {
		return err
	}
	h.log("select PIV", "9000", "")
	if err := signAll("9a after reset", pivclient.SlotAuthentication, "once", 1); err != nil {
		return err
	}

	fmt.Fprintln(stdout, "What happened, in order:")
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  TIME\tHOST\tCARD\tUSER ASKED")
	for _, e := range h.events {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", e.at, e.what, e.card, e.asked)
	}
	tw.Flush()
	fmt.Fprintln(stdout)
	fmt.Fprintln(stdout, "Per slot:")
	tw = tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  SLOT\tPIN POLICY\tSIGNATURES\tVERIFIED\tPIN PROMPTS")
	for _, r := range rows {
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\t%d\n", r.label, r.policy, r.signatures, r.ok, r.prompts)
	}
	tw.Flush()
	for _, r := range rows {
		if r.ok != r.signatures {
			return fmt.Errorf("%d of %d signatures from %s did not verify", r.signatures-r.ok, r.signatures, r.label)
		}
	}
	return nil
}

type demoEvent struct{ at, what, card, asked string }

type demoHost struct {
	c       *pivclient.Client
	start   time.Time
	pin     []byte
	prompts int
	events  []demoEvent
}

func (h *demoHost) log(what, card, asked string) {
	at := fmt.Sprintf("+%.1fms", float64(time.Since(h.start).Microseconds())/1000)
	h.events = append(h.events, demoEvent{at, what, card, asked})
}

// sign signs a message with slot's key, asking for the PIN when the card says the security
// status is not satisfied, and checks the signature.
func (h *demoHost) sign(ctx context.Context, slot byte, pub crypto.PublicKey, msg string) (bool, error) {
	digest := sha256.Sum256([]byte(msg))
	what := fmt.Sprintf("sign %q with %02x", msg, slot)
	sig, err := h.c.Authenticate(ctx, slot, pivclient.AlgECCP256, digest[:])
	if errors.Is(err, apdu.ErrSecurityStatus) {
		h.log(what, "6982 security status not satisfied", "")
		h.prompts++
		if err := h.c.VerifyPIN(ctx, h.pin); err != nil {
			return false, err
		}
		h.log("VERIFY PIN", "9000", "PIN")
		sig, err = h.c.Authenticate(ctx, slot, pivclient.AlgECCP256, digest[:])
	}
	if err != nil {
		return false, err
	}
	ok := ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), digest[:], sig)
	result := "9000, signature verifies"
	if !ok {
		result = "9000, SIGNATURE DOES NOT VERIFY"
	}
	h.log(what, result, "")
	return ok, nil
}
