package piv

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
	"testing"

	"tokenlab/apdu"
	"tokenlab/emulator"
	"tokenlab/emulator/keystore"
	"tokenlab/emulator/state"
	"tokenlab/middleware/pivclient"
)

// FuzzCard runs arbitrary command sequences against a card that holds keys under each PIN
// policy, and checks the security invariants after every APDU:
//
//  1. no private key bytes of a key generated on the card appear in any response;
//  2. no private-key operation succeeds without its slot's PIN policy satisfied (once: a
//     VERIFY since the last reset, logout or deselect; always: a VERIFY immediately before);
//  3. no management operation succeeds without management-key authentication;
//  4. PIN and PUK retry counters rise only when a PIN, PUK or reset command succeeds, and the
//     committed state is never behind what the card acknowledged, but for the one try of a
//     deferred restore (a right PIN from a full counter) that Flush commits.
//
// A script is a sequence of operations, each a byte followed by its arguments (see fuzzOp).
func FuzzCard(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	tmpl := fuzzTemplate(f)
	f.Fuzz(func(t *testing.T, script []byte) {
		h := newFuzzHarness(t, tmpl)
		defer h.flush()
		for ops := 0; len(script) > 0 && ops < 64; ops++ {
			script = h.step(script)
		}
	})
}

// Operations of a fuzz script.
const (
	opRaw      = iota // n, n bytes: one APDU as is
	opVerify          // VERIFY with the right PIN
	opWrongPIN        // VERIFY with a wrong PIN
	opMgmAuth         // management key mutual authentication with the right key
	opPower           // k: reset, power off or power on (k%3), then SELECT PIV
	opSign            // s: GENERAL AUTHENTICATE with the key in key slot s
	opSelect          // k: SELECT PIV, the management AID, or an unknown AID (k%3)
	opGenerate        // s, a, p: GENERATE in slot s, EC/25519 algorithm a, PIN policy p
	numOps
)

var fuzzSlots = []Slot{0x9A, 0x9C, 0x9D, 0x9E, 0x82, 0x83}

func fuzzTemplate(tb testing.TB) *Applet {
	a, err := New(Config{Version: Version{5, 7, 1}, Serial: 1, Keys: fuzzStore{}}, AES192)
	if err != nil {
		tb.Fatal(err)
	}
	c := emulator.New([]byte{0x3B, 0}, a)
	cl := pivclient.New(c)
	ctx := context.Background()
	cl.Select(ctx)
	if err := cl.AuthenticateManagementKey(ctx, byte(AES192), DefaultManagementKey); err != nil {
		tb.Fatal(err)
	}
	for _, k := range []struct{ slot, pin byte }{{0x9A, 2}, {0x9C, 3}, {0x9E, 1}, {0x9D, 2}} {
		if _, err := cl.GenerateKey(ctx, k.slot, pivclient.AlgECCP256, k.pin, 1); err != nil {
			tb.Fatal(err)
		}
	}
	a.Deselect()
	return a
}

// fuzzStore is the software store with RSA generation served from fixed test keys
// (testdata/rsa*.pem): generating RSA keys is too slow to do per input, and their freshness is
// not what the fuzzer tests.
type fuzzStore struct{ keystore.Software }

func (s fuzzStore) Generate(alg keystore.Algorithm) (keystore.Key, error) {
	if !alg.IsRSA() {
		return s.Software.Generate(alg)
	}
	b, err := os.ReadFile(fmt.Sprintf("testdata/rsa%d.pem", alg.RSABits()))
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("testdata/rsa%d.pem: no PEM block", alg.RSABits())
	}
	return s.Load(alg, blk.Bytes)
}

type fuzzHarness struct {
	t    *testing.T
	a    *Applet
	card *emulator.Card
	cl   *pivclient.Client

	committed *state.PIV
	secrets   map[string]bool
	seen      map[*slotKey]bool

	// The oracle's own model of the security status.
	selected    bool // PIV is the selected application
	verified    bool
	sinceVerify []apdu.Command // complete commands and links since the last good VERIFY; nil if none
	mgmAuthed   bool
	lastPIN     int
	lastPUK     int
}

func newFuzzHarness(t *testing.T, tmpl *Applet) *fuzzHarness {
	h := &fuzzHarness{t: t, secrets: map[string]bool{}, seen: map[*slotKey]bool{}}
	cfg := tmpl.cfg
	cfg.Commit = func(st *state.PIV) error { h.committed = st; return nil }
	cfg.CommitCounters = func(pin, puk int) error {
		st := *h.committed
		st.PIN.Retries, st.PUK.Retries = pin, puk
		h.committed = &st
		return nil
	}
	h.a = &Applet{cfg: cfg, p: tmpl.p} // persistent maps are copied on write, so sharing is safe
	h.card = emulator.New([]byte{0x3B, 0}, h.a)
	h.cl = pivclient.New(transportFunc(h.transmit))
	h.committed = h.a.p.snapshot()
	h.collectSecrets()
	h.lastPIN, h.lastPUK = h.a.p.pin.retries, h.a.p.puk.retries
	h.transmit(context.Background(), []byte{0x00, 0xA4, 0x04, 0x00, 0x05, 0xA0, 0x00, 0x00, 0x03, 0x08})
	return h
}

// checkCommitted is oracle 4's second half: the committed counters are the card's, or the
// PIN's is one below a full counter while a restore is deferred.
func (h *fuzzHarness) checkCommitted(after []byte) {
	c, pin, puk := h.committed, h.a.p.pin, h.a.p.puk
	lag := 0
	if h.a.pinLag {
		lag = 1
		if pin.retries != pin.max {
			h.t.Fatalf("a restore is deferred, but the PIN counter is %d of %d after % X", pin.retries, pin.max, after)
		}
	}
	if c.PIN.Retries != pin.retries-lag || c.PUK.Retries != puk.retries {
		h.t.Fatalf("committed retries PIN %d PUK %d, card says %d %d (deferred %v) after % X", c.PIN.Retries, c.PUK.Retries, pin.retries, puk.retries, h.a.pinLag, after)
	}
}

// flush ends a run: whatever the applet deferred, Flush commits it.
func (h *fuzzHarness) flush() {
	var err error
	h.card.Exclusive(func() { err = h.a.Flush() })
	if err != nil || h.a.pinLag {
		h.t.Fatalf("Flush: %v, deferred %v", err, h.a.pinLag)
	}
	if h.a.failed == nil {
		h.checkCommitted(nil)
	}
}

type transportFunc func(context.Context, []byte) ([]byte, error)

func (f transportFunc) Transmit(ctx context.Context, b []byte) ([]byte, error) { return f(ctx, b) }

func next(script []byte, n int) ([]byte, []byte) {
	n = min(n, len(script))
	return script[:n], script[n:]
}

func arg(script []byte) (byte, []byte) {
	if len(script) == 0 {
		return 0, nil
	}
	return script[0], script[1:]
}

func (h *fuzzHarness) step(script []byte) []byte {
	ctx := context.Background()
	op, script := script[0]%numOps, script[1:]
	switch op {
	case opRaw:
		var n byte
		var cmd []byte
		n, script = arg(script)
		cmd, script = next(script, int(n))
		h.transmit(ctx, cmd)
	case opVerify:
		pin := bytes.TrimRight(h.a.p.pin.value[:], "\xff")
		h.cl.VerifyPIN(ctx, pin)
	case opWrongPIN:
		wrong := []byte("000000")
		if bytes.Equal(bytes.TrimRight(h.a.p.pin.value[:], "\xff"), wrong) {
			wrong = []byte("999999")
		}
		h.cl.VerifyPIN(ctx, wrong)
	case opMgmAuth:
		if err := h.cl.AuthenticateManagementKey(ctx, byte(h.a.p.mgm.alg), h.a.p.mgm.key); err == nil {
			h.mgmAuthed = true
		}
	case opPower:
		var k byte
		k, script = arg(script)
		[]func(){h.card.Reset, h.card.PowerOff, h.card.PowerOn}[k%3]()
		h.selected, h.verified, h.sinceVerify, h.mgmAuthed = false, false, nil, false
		h.transmit(ctx, []byte{0x00, 0xA4, 0x04, 0x00, 0x05, 0xA0, 0x00, 0x00, 0x03, 0x08})
	case opSign:
		var s byte
		s, script = arg(script)
		slot := fuzzSlots[int(s)%len(fuzzSlots)]
		alg := byte(algECCP256)
		if k := h.a.p.keys[slot]; k != nil {
			alg = algID(k.key.Algorithm())
		}
		h.cl.Authenticate(ctx, byte(slot), alg, bytes.Repeat([]byte{0x5A}, 32))
	case opSelect:
		var k byte
		k, script = arg(script)
		aid := [][]byte{AID[:5], {0xA0, 0x00, 0x00, 0x05, 0x27, 0x47, 0x11, 0x17}, {0xA0, 0x00, 0x00, 0x00, 0x01, 0x01}}[k%3]
		h.transmit(ctx, append([]byte{0x00, 0xA4, 0x04, 0x00, byte(len(aid))}, aid...))
	case opGenerate:
		var s, alg, pin byte
		s, script = arg(script)
		alg, script = arg(script)
		pin, script = arg(script)
		algs := []byte{algECCP256, algECCP384, algEd25519, algX25519}
		h.cl.GenerateKey(ctx, byte(fuzzSlots[int(s)%len(fuzzSlots)]), algs[int(alg)%len(algs)], pin%4, 1)
	}
	return script
}

// transmit sends one APDU to the card and checks the invariants on the exchange.
func (h *fuzzHarness) transmit(ctx context.Context, b []byte) ([]byte, error) {
	cmd, perr := apdu.ParseCommand(b)
	var policy PINPolicy
	if perr == nil && cmd.INS == insAuthenticate {
		if k := h.a.p.keys[Slot(cmd.P2)]; k != nil {
			policy = k.pin
		}
	}
	pinBefore, pukBefore := h.a.p.pin.retries, h.a.p.puk.retries
	out, err := h.card.Transmit(ctx, b)
	if err != nil {
		h.t.Fatalf("transmit % X: %v", b, err)
	}
	if testing.Verbose() {
		h.t.Logf("% X -> % X", b, out)
	}
	rsp, rerr := apdu.ParseResponse(out)
	if rerr != nil {
		h.t.Fatalf("card answered % X with % X", b, out)
	}
	sw := rsp.SW
	ok := sw == apdu.SWSuccess || sw.SW1() == 0x61

	// 1. No generated private key leaves the card.
	for s := range h.secrets {
		if bytes.Contains(out, []byte(s)) {
			h.t.Fatalf("private key bytes in the response to % X: % X", b, out)
		}
	}

	if perr == nil && cmd.CLA == 0x00 {
		// 2. Private-key operations follow the PIN policy.
		if cmd.INS == insAuthenticate && Slot(cmd.P2) != SlotCardManagement && ok && bytes.HasPrefix(rsp.Data, []byte{0x7C}) {
			switch policy {
			case PINPolicyOnce:
				if !h.verified {
					h.t.Fatalf("slot %02X (PIN once) operated without a verified PIN: % X", cmd.P2, b)
				}
			case PINPolicyAlways:
				if !h.verified || !h.freshFor(cmd) {
					h.t.Fatalf("slot %02X (PIN always) operated without a VERIFY right before: % X after %v", cmd.P2, b, h.sinceVerify)
				}
			}
		}
		// 3. Management operations need the management key.
		switch cmd.INS {
		case insGenerate, insImportKey, insPutData, insSetManagementKey, insMoveKey, insSetPINRetries:
			if ok && !h.mgmAuthed {
				h.t.Fatalf("management operation % X succeeded without management-key authentication", b)
			}
		}
	}

	// 4. Retry counters rise only on success, and disk is never behind the card.
	pinNow, pukNow := h.a.p.pin.retries, h.a.p.puk.retries
	if pinNow > pinBefore || pukNow > pukBefore {
		allowed := perr == nil && (cmd.INS == insVerify && sw == apdu.SWSuccess ||
			(cmd.INS == insChangeReference || cmd.INS == insResetRetry) && (sw == apdu.SWSuccess || sw == apdu.SWIncorrectData) ||
			(cmd.INS == insSetPINRetries || cmd.INS == insReset) && sw == apdu.SWSuccess)
		if !allowed {
			h.t.Fatalf("retries rose from PIN %d PUK %d to %d %d on % X -> %v", pinBefore, pukBefore, pinNow, pukNow, b, sw)
		}
	}
	h.checkCommitted(b)
	if pinBefore == 0 && cmd.INS == insVerify && len(cmd.Data) > 0 && sw == apdu.SWSuccess {
		h.t.Fatalf("a blocked PIN verified")
	}

	h.model(cmd, perr, b, sw, rsp.Data)
	h.collectSecrets()
	return out, nil
}

// freshFor reports whether only links of cmd's own chain came between the last good VERIFY and cmd.
func (h *fuzzHarness) freshFor(cmd apdu.Command) bool {
	if h.sinceVerify == nil {
		return false
	}
	for _, c := range h.sinceVerify {
		if c.CLA != apdu.ClassChaining || c.INS != cmd.INS || c.P1 != cmd.P1 || c.P2 != cmd.P2 {
			return false
		}
	}
	return true
}

// model updates the oracle's view of the security status after an exchange, from SP 800-73-4
// rather than from the applet's code.
func (h *fuzzHarness) model(cmd apdu.Command, perr error, raw []byte, sw apdu.StatusWord, data []byte) {
	if h.sinceVerify != nil {
		h.sinceVerify = append(h.sinceVerify, cmd)
	}
	if perr != nil || cmd.CLA != 0x00 {
		return
	}
	switch cmd.INS {
	case apdu.InsSelect:
		if sw == apdu.SWSuccess {
			isPIV := cmd.P1 == 0x04 && len(cmd.Data) >= 5 && bytes.HasPrefix(AID, cmd.Data)
			if !isPIV || !h.selected {
				h.verified, h.sinceVerify, h.mgmAuthed = false, nil, false
			}
			h.selected = isPIV
		}
	case insVerify:
		_, wrong := sw.Retries()
		wrong = wrong || sw == apdu.SWAuthenticationBlocked
		switch {
		case len(cmd.Data) > 0 && sw == apdu.SWSuccess:
			h.verified, h.sinceVerify = true, []apdu.Command{}
		case len(cmd.Data) > 0 && wrong: // a failed comparison (SP 800-73-4 Pt 2 §3.2.1)
			h.verified = false
		case cmd.P1 == 0xFF && sw == apdu.SWSuccess:
			h.verified = false
		}
	case insResetRetry, insReset:
		if sw == apdu.SWSuccess {
			h.verified = false
		}
	case insChangeReference:
		if _, wrong := sw.Retries(); Slot(cmd.P2) == refPIN && (wrong || sw == apdu.SWAuthenticationBlocked) {
			h.verified = false
		}
	case insAuthenticate:
		if Slot(cmd.P2) == SlotCardManagement {
			t, ok := parseAuthTemplate(cmd.Data)
			switch {
			case ok && t.challenge.empty() && t.witness.missing() && t.response.missing():
				// a challenge request changes nothing
			case sw == apdu.SWSuccess && ok && (t.response.filled() || t.witness.filled() && t.challenge.filled()):
				h.mgmAuthed = true
			default:
				h.mgmAuthed = false
			}
		}
	}
}

// collectSecrets remembers the private key bytes of every key generated on the card.
func (h *fuzzHarness) collectSecrets() {
	for _, k := range h.a.p.keys {
		if k.origin != OriginGenerated || h.seen[k] {
			continue
		}
		h.seen[k] = true
		priv, err := x509.ParsePKCS8PrivateKey(k.blob)
		if err != nil {
			h.t.Fatal(err)
		}
		for _, s := range secretBytes(priv) {
			if len(s) >= 16 {
				h.secrets[string(s)] = true
			}
		}
	}
}

func secretBytes(priv crypto.PrivateKey) [][]byte {
	switch k := priv.(type) {
	case *ecdsa.PrivateKey:
		b, _ := k.Bytes()
		return [][]byte{b}
	case ed25519.PrivateKey:
		return [][]byte{k.Seed()}
	case *ecdh.PrivateKey:
		return [][]byte{k.Bytes()}
	case *rsa.PrivateKey:
		return [][]byte{k.Primes[0].Bytes(), k.Primes[1].Bytes(), k.D.Bytes()}
	}
	return nil
}

// Seeds: the APDU sequences real hosts send (piv-card.md §13), then scripts that reach deep states.
func fuzzSeeds() [][]byte {
	raw := func(hexes ...string) []byte {
		var s []byte
		for _, h := range hexes {
			b, err := hex.DecodeString(strings.ReplaceAll(h, " ", ""))
			if err != nil {
				panic(err)
			}
			s = append(s, opRaw, byte(len(b)))
			s = append(s, b...)
		}
		return s
	}
	join := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	opensc := raw( // OpenSC 0.23.0 card detection and pkcs11-tool -L
		"00A4040007627601FF000000", "00A4040006A00000000101", "00CADF3005", "00CB3FFF035C017E08",
		"00A4040009A0000003080000100000", "00CB3FFF035C017E00", "00FD000003", "00CB3FFF055C035FC10C08",
		"00CB3FFF055C035FC10208", "00CB3FFF055C035FC10508", "00200080", "0087009B047C02810000")
	ykpiv := raw( // yubico-piv-tool 2.2.0 -a status
		"00A4040005A000000308", "0020008000", "00FD000000", "00F8000000", "00CB3FFF055C035FC102",
		"00CB3FFF055C035FC107", "00CB3FFF055C035FC105", "0020008000")
	ykcs11 := raw("00A4040005A000000308", "0020008000", "00FD000000", "00F8000000",
		"00F99A0000", "00F7009A00", "00CB3FFF055C035FC105")
	pivgo := raw("00A4040005A000000308", "00FD000000", "00F8000000", "0020008000", "00F7009B00")
	ykman := raw("00A4040008A000000527471117", "001D000000", "00A4040005A000000308", "00FD000000",
		"00CB3FFF0000055C035FFF00", "00F70080000000", "00F7009B000000")
	sign9C := []byte{opVerify, opSign, 1, opSign, 1, opVerify, opRaw, 4, 0x00, 0x20, 0x00, 0x80, opSign, 1}
	manage := []byte{opMgmAuth, opGenerate, 0, 2, 3, opSign, 0, opVerify, opSign, 0, opPower, 1, opSign, 0}
	pins := join([]byte{opWrongPIN, opWrongPIN, opWrongPIN, opVerify},
		raw("002C008010313233343536373831313131313131FFFF", "0020008008313131313131FFFF"))
	chained := join([]byte{opVerify}, raw( // a PIN-always signature sent as a two-link chain
		"1087119C107C248200812000010203040506070809",
		"0087119C160A0B0C0D0E0F101112131415161718191A1B1C1D1E1F"))
	mgmtRaw := join([]byte{opMgmAuth}, raw("00DB3FFF095C035FC10553027000", "00F69D9A", "00F6FF9D",
		"00FE119A2206200101010101010101010101010101010101010101010101010101010101010101", "00F99A00"))
	rsaImport := join([]byte{opMgmAuth}, raw("00FE079A0F010101020101030100040100050100")) // once crashed ImportRSA
	return [][]byte{opensc, ykpiv, ykcs11, pivgo, ykman, sign9C, manage, pins, chained, mgmtRaw, rsaImport}
}
