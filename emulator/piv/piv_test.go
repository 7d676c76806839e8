package piv_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"tokenlab/apdu"
	"tokenlab/emulator"
	"tokenlab/emulator/keystore"
	"tokenlab/emulator/piv"
	"tokenlab/middleware/pivclient"
)

// card is a PIV applet on a card runtime, in memory, with a client speaking to it.
type card struct {
	t *testing.T
	*pivclient.Client
	card *emulator.Card
	pv   *piv.Applet
}

func newCard(t *testing.T, version string, mgmAlg piv.ManagementKeyAlgorithm) *card {
	t.Helper()
	v, err := piv.ParseVersion(version)
	if err != nil {
		t.Fatal(err)
	}
	a, err := piv.New(piv.Config{Version: v, Serial: 12345678, Keys: keystore.Software{}}, mgmAlg)
	if err != nil {
		t.Fatal(err)
	}
	c := emulator.New([]byte{0x3B, 0x00}, a)
	k := &card{t: t, Client: pivclient.New(c), card: c, pv: a}
	if _, err := k.Select(context.Background()); err != nil {
		t.Fatal(err)
	}
	return k
}

// tx sends an APDU written in hex and returns data and status word.
func (k *card) tx(h string) ([]byte, apdu.StatusWord) {
	k.t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(h, " ", ""))
	if err != nil {
		k.t.Fatal(err)
	}
	out, err := k.card.Transmit(context.Background(), b)
	if err != nil {
		k.t.Fatal(err)
	}
	r, err := apdu.ParseResponse(out)
	if err != nil {
		k.t.Fatal(err)
	}
	return r.Data, r.SW
}

// expect sends each APDU and checks its status word.
func (k *card) expect(steps ...string) {
	k.t.Helper()
	for i := 0; i+1 < len(steps); i += 2 {
		if _, sw := k.tx(steps[i]); sw != sw16(k.t, steps[i+1]) {
			cmd := steps[i]
			if len(cmd) > 80 {
				cmd = cmd[:80] + "..."
			}
			k.t.Errorf("%s -> %v, want %s", cmd, sw, steps[i+1])
		}
	}
}

func sw16(t *testing.T, s string) apdu.StatusWord {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 2 {
		t.Fatalf("bad status word %q", s)
	}
	return apdu.StatusWord(b[0])<<8 | apdu.StatusWord(b[1])
}

func (k *card) mgm() {
	k.t.Helper()
	m, err := k.GetMetadata(context.Background(), pivclient.SlotCardManagement)
	alg := pivclient.AlgTDES
	if err == nil {
		alg = m.Algorithm
	}
	if err := k.AuthenticateManagementKey(context.Background(), alg, piv.DefaultManagementKey); err != nil {
		k.t.Fatal(err)
	}
}

func (k *card) generate(slot, alg, pin, touch byte) *ecdsa.PublicKey {
	k.t.Helper()
	k.mgm()
	pub, err := k.GenerateKey(context.Background(), slot, alg, pin, touch)
	if err != nil {
		k.t.Fatal(err)
	}
	p, _ := pub.(*ecdsa.PublicKey)
	return p
}

const (
	pinOK    = "00 20 00 80 08 31 32 33 34 35 36 FF FF"
	pinWrong = "00 20 00 80 08 30 30 30 30 30 30 FF FF"
	pinQuery = "00 20 00 80"
)

var digest = sha256.Sum256([]byte("tokenlab"))

func signAPDU(slot string) string {
	return "00 87 11 " + slot + " 26 7C 24 82 00 81 20 " + hex.EncodeToString(digest[:])
}

func TestVerify(t *testing.T) {
	k := newCard(t, "5.7.1", piv.AES192)
	k.expect(
		pinQuery, "63C3", // ISO case 1, as OpenSC sends it
		"00 20 00 80 00", "63C3", // with a zero Le byte, as ykpiv and piv-go send it
		pinWrong, "63C2",
		pinQuery, "63C2",
		"00 20 00 80 09 31 32 33 34 35 36 FF FF FF", "6A80", // too long: no try consumed
		pinQuery, "63C2",
		"00 20 00 81 08 31 32 33 34 35 36 FF FF", "6A88", // no VERIFY of the PUK
		"00 20 01 80 08 31 32 33 34 35 36 FF FF", "6A86",
		pinOK, "9000",
		pinQuery, "9000", // verified
		"00 20 FF 80", "9000", // log out (SP 800-73-4)
		pinQuery, "63C3",
		pinOK, "9000",
		pinWrong, "63C2", // a failed VERIFY also drops the verified status
		pinQuery, "63C2",
		pinWrong, "63C1",
		pinWrong, "63C0", // the try that blocks
		pinWrong, "6983",
		pinOK, "6983", // blocked stays blocked
		pinQuery, "6983",
		// RESET RETRY COUNTER with the PUK unblocks and sets a new PIN.
		"00 2C 00 80 10 30 30 30 30 30 30 30 30 31 31 31 31 31 31 FF FF", "63C2",
		"00 2C 00 80 10 31 32 33 34 35 36 37 38 31 31 31 31 31 31 FF FF", "9000",
		pinQuery, "63C3",
		pinOK, "63C2",
		"00 20 00 80 06 31 31 31 31 31 31", "9000", // unpadded PIN is padded by the card
	)
}

func TestChangeReference(t *testing.T) {
	k := newCard(t, "5.7.1", piv.AES192)
	k.expect(
		"00 24 00 80 0F 31 32 33 34 35 36 FF FF 36 35 34 33 32 31 FF", "6A80", // 15 bytes
		"00 24 00 82 10 31 32 33 34 35 36 FF FF 36 35 34 33 32 31 FF FF", "6A88",
		"00 24 00 80 10 39 39 39 39 39 39 FF FF 36 35 34 33 32 31 FF FF", "63C2", // wrong old PIN
		"00 24 00 80 10 31 32 33 34 35 36 FF FF 36 35 34 FF FF FF FF FF", "6A80", // new PIN of 3 digits
		pinQuery, "63C3", // the right old PIN restored the counter
		"00 24 00 80 10 31 32 33 34 35 36 FF FF 36 35 34 33 32 31 FF FF", "9000",
		pinOK, "63C2",
		"00 20 00 80 08 36 35 34 33 32 31 FF FF", "9000",
		// PUK
		"00 24 00 81 10 31 32 33 34 35 36 37 38 38 37 36 35 34 33 32 31", "9000",
		"00 2C 00 80 10 31 32 33 34 35 36 37 38 31 31 31 31 31 31 FF FF", "63C2",
	)
	// Blocking the PUK with short random values, as piv-go's Reset does, costs tries and never 6A80.
	k.expect(
		"00 24 00 81 10 37 FF FF FF FF FF FF FF 37 FF FF FF FF FF FF FF", "63C1",
		"00 24 00 81 10 37 FF FF FF FF FF FF FF 37 FF FF FF FF FF FF FF", "63C0",
		"00 24 00 81 10 37 FF FF FF FF FF FF FF 37 FF FF FF FF FF FF FF", "6983",
	)
}

func TestPINAlways(t *testing.T) {
	k := newCard(t, "5.7.1", piv.AES192)
	k.generate(0x9C, pivclient.AlgECCP256, 0, 0) // 9C: always by default
	sign := signAPDU("9C")
	k.expect(
		sign, "6982", // no PIN
		pinOK, "9000",
		sign, "9000", // right after VERIFY
		sign, "6982", // the signature consumed it
		pinOK, "9000",
		pinQuery, "9000", // even a status query in between...
		sign, "6982", // ...breaks it (SP 800-73-4 Pt 2 §3.2.1)
		pinOK, "9000",
		"00 A4 04 00 05 A0 00 00 03 08", "9000", // as does a re-SELECT
		sign, "6982",
		pinOK, "9000",
		"00 02", "6700", // and a malformed APDU the runtime answers itself
		sign, "6982",
		pinOK, "9000",
		"00 A4 04 00 05 A0 00 00 09 99", "6A82", // and a failed SELECT
		sign, "6982",
	)
	// A chained signature after VERIFY works: continuation links are part of the command.
	k.expect(pinOK, "9000")
	full := "7C 24 82 00 81 20 " + hex.EncodeToString(digest[:])
	b, _ := hex.DecodeString(strings.ReplaceAll(full, " ", ""))
	k.expect(
		"10 87 11 9C 10 "+hex.EncodeToString(b[:16]), "9000",
		"00 87 11 9C 16 "+hex.EncodeToString(b[16:]), "9000",
	)
}

func TestPINOnceAndNever(t *testing.T) {
	k := newCard(t, "5.7.1", piv.AES192)
	k.generate(0x9A, pivclient.AlgECCP256, 0, 0) // once
	k.generate(0x9E, pivclient.AlgECCP256, 0, 0) // never
	k.expect(
		signAPDU("9A"), "6982",
		signAPDU("9E"), "9000", // card authentication: no PIN
		pinOK, "9000",
		signAPDU("9A"), "9000",
		pinQuery, "9000",
		signAPDU("9A"), "9000", // once: stays verified
	)
	k.card.Reset()
	k.Select(context.Background())
	k.expect(signAPDU("9A"), "6982") // a reset drops it
	k.expect(pinOK, "9000")
	k.expect("00 A4 04 00 08 A0 00 00 05 27 47 11 17", "6A82") // unknown here: PIV stays selected
	k.expect(signAPDU("9A"), "9000")
}

func TestGeneralAuthenticateErrors(t *testing.T) {
	k := newCard(t, "5.7.1", piv.AES192)
	pub := k.generate(0x9A, pivclient.AlgECCP256, pivclient.PINPolicyNever, 0)
	k.expect(
		signAPDU("9D"), "6A82", // empty slot
		signAPDU("01"), "6B00", // not a key reference
		signAPDU("F9"), "6B00", // the attestation key signs attestations only
		"00 87 14 9A 26 7C 24 82 00 81 20 "+hex.EncodeToString(digest[:]), "6A80", // P-384 id for a P-256 key
		"00 87 11 9A 04 7C 02 82 00", "6A80", // nothing to sign
		"00 87 11 9A 06 7C 04 82 00 82 00", "6A80", // repeated tag
		"00 87 11 9A 05 7D 03 82 00 81", "6A80", // not a 7C template
		"00 87 11 9A 46 7C 44 82 00 81 40 "+strings.Repeat("AB", 64), "6A80", // digest longer than the order
	)
	data, sw := k.tx(signAPDU("9A"))
	if sw != apdu.SWSuccess {
		t.Fatalf("sign: %v", sw)
	}
	if !bytes.HasPrefix(data, []byte{0x7C}) || data[2] != 0x82 {
		t.Fatalf("response % X is not 7C { 82 signature }", data)
	}
	if !ecdsa.VerifyASN1(pub, digest[:], data[4:]) {
		t.Error("signature does not verify")
	}
	// A digest shorter than the order is a smaller integer, as OpenSC and piv-go send it.
	short := "00 87 11 9A 17 7C 15 82 00 81 11 " + hex.EncodeToString(digest[:17])
	data, sw = k.tx(short)
	if sw != apdu.SWSuccess || !ecdsa.VerifyASN1(pub, digest[:17], data[4:]) {
		t.Errorf("17-byte digest: %v", sw)
	}
}

func TestManagementKey(t *testing.T) {
	for _, alg := range []piv.ManagementKeyAlgorithm{piv.TDES, piv.AES192} {
		t.Run(alg.String(), func(t *testing.T) {
			k := newCard(t, "5.7.1", alg)
			gen := "00 47 00 9A 05 AC 03 80 01 11"
			k.expect(gen, "6982") // GENERATE needs the management key
			ctx := context.Background()
			wrongAlg := pivclient.AlgAES192
			if alg == piv.AES192 {
				wrongAlg = pivclient.AlgTDES
			}
			if err := k.AuthenticateManagementKey(ctx, wrongAlg, piv.DefaultManagementKey); err == nil {
				t.Error("authenticated with the wrong algorithm")
			}
			wrongKey := bytes.Repeat([]byte{7}, 24)
			if err := k.AuthenticateManagementKey(ctx, byte(alg), wrongKey); err == nil {
				t.Error("authenticated with a wrong key")
			}
			k.expect(gen, "6982")
			// Step two without step one, and a response for a challenge never sent.
			n := 8
			if alg == piv.AES192 {
				n = 16
			}
			a := hex.EncodeToString([]byte{byte(alg)})
			body := "80 " + hex.EncodeToString([]byte{byte(n)}) + strings.Repeat("00", n) + " 81 " + hex.EncodeToString([]byte{byte(n)}) + strings.Repeat("00", n)
			k.expect("00 87 "+a+" 9B "+hex.EncodeToString([]byte{byte(2*n + 6)})+" 7C "+hex.EncodeToString([]byte{byte(2*n + 4)})+" "+body, "6A80")
			k.expect("00 87 "+a+" 9B "+hex.EncodeToString([]byte{byte(n + 4)})+" 7C "+hex.EncodeToString([]byte{byte(n + 2)})+" 82 "+hex.EncodeToString([]byte{byte(n)})+strings.Repeat("00", n), "6A80")
			// OpenSC's random number source: 81 00 with P1 00.
			data, sw := k.tx("00 87 00 9B 04 7C 02 81 00 00")
			if sw != apdu.SWSuccess || len(data) != 4+n || data[2] != 0x81 {
				t.Errorf("challenge: % X %v", data, sw)
			}
			k.mgm()
			k.expect(gen, "9000")
			k.expect("00 FF FF FF 1B 0A 9B 18 "+strings.Repeat("11", 24), "9000") // set an AES-192 key
			if err := k.AuthenticateManagementKey(ctx, pivclient.AlgAES192, bytes.Repeat([]byte{0x11}, 24)); err != nil {
				t.Errorf("new key: %v", err)
			}
			k.expect(
				"00 FF FF FF 1B 0B 9B 18 "+strings.Repeat("11", 24), "6A80", // unknown algorithm
				"00 FF FF FF 12 08 9B 10 "+strings.Repeat("22", 15), "6A80", // length byte lies
				"00 FF 00 FF 13 08 9B 10 "+strings.Repeat("22", 16), "6A86",
			)
		})
	}
	k := newCard(t, "5.3.0", piv.TDES)
	k.mgm()
	k.expect("00 FF FF FF 1B 0A 9B 18 "+strings.Repeat("11", 24), "6A80") // AES needs 5.4
	if _, err := piv.New(piv.Config{Version: piv.Version{Major: 5, Minor: 3}, Keys: keystore.Software{}}, piv.AES192); err == nil {
		t.Error("piv.New made an AES management key on firmware 5.3")
	}
}

func TestGenerateAndImportErrors(t *testing.T) {
	k := newCard(t, "5.7.1", piv.AES192)
	k.mgm()
	k.expect(
		"00 47 01 9A 05 AC 03 80 01 11", "6A86",
		"00 47 00 9B 05 AC 03 80 01 11", "6B00",
		"00 47 00 F9 05 AC 03 80 01 11", "6B00",
		"00 47 00 9A 05 AC 03 80 01 99", "6A80", // unknown algorithm
		"00 47 00 9A 05 AD 03 80 01 11", "6A80",
		"00 47 00 9A 08 AC 06 80 01 11 AA 01 05", "6A80", // biometric PIN policy
		"00 47 00 9A 08 AC 06 80 01 11 AB 01 04", "6A80",
		"00 47 00 9A 05 AC 03 80 01 E0", "9000", // Ed25519 on 5.7
		"00 FE 11 9A 03 06 01 00", "6A80", // zero scalar
		"00 FE 11 9A 22 06 20 "+strings.Repeat("FF", 32), "6A80", // scalar above the order
		"00 FE 11 9A 05 06 01 05 07 00", "6A80", // fields of two key types
		"00 FE 99 9A 03 06 01 05", "6A86",
		"00 FE 11 01 03 06 01 05", "6B00",
		"00 FE 11 9D 03 06 01 05", "9000",
		"00 47 00 9A 08 AC 06 80 01 11 80 01 14", "6A80", // repeated algorithm
		"00 47 00 9A 07 AC 05 80 01 11 AA 00", "6A80", // empty PIN policy
		// RSA primes of one (p-1 = 0) once crashed the import; and primes of the wrong size.
		"00 FE 07 9A 0F 01 01 01 02 01 01 03 01 00 04 01 00 05 01 00", "6A80",
		"00 FE 07 9A 0F 01 01 03 02 01 05 03 01 01 04 01 01 05 01 02", "6A80",
	)
	old := newCard(t, "5.4.3", piv.TDES)
	old.mgm()
	old.expect(
		"00 47 00 9A 05 AC 03 80 01 E0", "6A80", // no Ed25519 before 5.7
		"00 47 00 9A 05 AC 03 80 01 16", "6A80", // no RSA 4096 either
		"00 F6 FF 9A", "6D00", // MOVE KEY is 5.7
	)
}

func TestDataObjects(t *testing.T) {
	k := newCard(t, "5.7.1", piv.AES192)
	k.expect(
		"00 CB 3F FF 05 5C 03 5F C1 05", "6A82", // no certificate yet
		"00 CB 3F FE 05 5C 03 5F C1 05", "6A86",
		"00 CB 3F FF 05 5C 04 5F C1 05 01", "6A80", // four-byte tag
		"00 CB 3F FF 03 5D 01 7E", "6A80",
		"00 CB 3F FF 05 5C 03 5F C1 09", "6982", // printed information: PIN first, even when absent
		"00 CB 3F FF 05 5C 03 5F C1 02", "9000", // CHUID
		"00 CB 3F FF 05 5C 03 5F C1 07", "9000", // CCC
		"00 DB 3F FF 09 5C 03 5F C1 05 53 02 70 00", "6982", // PUT DATA needs the management key
	)
	disc, sw := k.tx("00 CB 3F FF 03 5C 01 7E 00")
	if sw != apdu.SWSuccess || !bytes.HasPrefix(disc, []byte{0x7E, 0x12, 0x4F, 0x0B, 0xA0, 0x00, 0x00, 0x03, 0x08}) {
		t.Errorf("discovery object % X %v", disc, sw)
	}
	k.mgm()
	big := strings.Repeat("AB", 3073)
	k.expect(
		"00 DB 3F FF 09 5C 03 5F C1 05 53 02 70 00", "9000",
		"00 CB 3F FF 05 5C 03 5F C1 05", "9000",
		"00 DB 3F FF 07 5C 03 5F C1 05 53 00", "9000", // empty 53 deletes
		"00 CB 3F FF 05 5C 03 5F C1 05", "6A82",
		"00 DB 3F FF 00 0C 0A 5C 03 5F C1 05 53 82 0C 01 "+big, "6A84",
		"00 DB 3F FE 09 5C 03 5F C1 05 53 02 70 00", "6A86",
		"00 DB 3F FF 05 5C 03 5F C1 05", "6A80", // no value
		"00 DB 3F FF 06 7E 04 4F 02 A0 00", "9000", // the discovery object, written whole
	)
	disc, _ = k.tx("00 CB 3F FF 03 5C 01 7E")
	if !bytes.Equal(disc, []byte{0x7E, 0x04, 0x4F, 0x02, 0xA0, 0x00}) {
		t.Errorf("discovery object after PUT DATA: % X", disc)
	}
	k.expect(pinOK, "9000", "00 CB 3F FF 05 5C 03 5F C1 09", "6A82") // after VERIFY: simply absent
}

func TestYubicoInstructions(t *testing.T) {
	k := newCard(t, "5.7.1", piv.AES192)
	data, sw := k.tx("00 FD 00 00 00")
	if sw != apdu.SWSuccess || !bytes.Equal(data, []byte{5, 7, 1}) {
		t.Errorf("GET VERSION % X %v", data, sw)
	}
	data, sw = k.tx("00 F8 00 00")
	if sw != apdu.SWSuccess || !bytes.Equal(data, []byte{0x00, 0xBC, 0x61, 0x4E}) {
		t.Errorf("GET SERIAL % X %v", data, sw)
	}
	data, sw = k.tx("00 F7 00 9B")
	if sw != apdu.SWSuccess || !bytes.HasPrefix(data, []byte{0x01, 0x01, 0x0A}) {
		t.Errorf("GET METADATA 9B % X %v: piv-go reads the key type from the third byte", data, sw)
	}
	data, sw = k.tx("00 F7 00 80")
	if sw != apdu.SWSuccess || !bytes.Contains(data, []byte{0x06, 0x02, 0x03, 0x03}) || !bytes.Contains(data, []byte{0x05, 0x01, 0x01}) {
		t.Errorf("GET METADATA 80 % X %v", data, sw)
	}
	k.expect(
		"00 F7 00 9A", "6A82", // empty slot
		"00 F7 00 01", "6A88",
		"00 F7 01 80", "6A86",
		"00 FD 00 00 01 00", "6700",
		"00 FB 00 00", "6985", // RESET needs PIN and PUK blocked
		"00 FA 05 05", "6982", // SET PIN RETRIES needs management key and PIN
		"00 F9 9A 00", "6A82", // nothing to attest
		"00 F9 F9 00", "6B00",
		"00 F9 9A 01", "6A86",
		"00 F6 9D 9A", "6982", // MOVE KEY needs the management key
		"00 99 00 00", "6D00",
	)
	k.mgm()
	k.expect("00 FA 05 05", "6982") // and the PIN
	k.expect(pinOK, "9000", "00 FA 00 05", "6A86", "00 FA 05 04", "9000")
	data, _ = k.tx("00 F7 00 81")
	if !bytes.Contains(data, []byte{0x06, 0x02, 0x04, 0x04}) {
		t.Errorf("PUK metadata after SET PIN RETRIES: % X", data)
	}

	// MOVE and DELETE.
	k.mgm()
	k.expect("00 FE 11 9A 22 06 20 "+strings.Repeat("01", 32), "9000")
	k.expect("00 F9 9A 00", "6A80") // imported keys cannot be attested
	k.expect(
		"00 F6 9D 9A", "9000",
		"00 F7 00 9A", "6A82",
		"00 F7 00 9D", "9000",
		"00 F6 FF 9D", "9000",
		"00 F7 00 9D", "6A82",
		"00 F6 FF 9D", "6A82",
		"00 F6 9A F9", "6A86", // the attestation key stays
		"00 FE 11 9A 22 06 20 "+strings.Repeat("02", 32), "9000",
		"00 FE 11 9C 22 06 20 "+strings.Repeat("03", 32), "9000",
		"00 F6 9C 9A", "6A89", // the destination must be empty
		"00 F7 00 9C", "9000",
	)
}

func TestReset(t *testing.T) {
	k := newCard(t, "5.7.1", piv.AES192)
	k.generate(0x9A, pivclient.AlgECCP256, 0, 0)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		k.VerifyPIN(ctx, []byte("000000"))
		k.Unblock(ctx, []byte("00000000"), []byte("000000"))
	}
	k.expect("00 FB 00 01", "6A86", "00 FB 00 00", "9000")
	st := k.pv.Status()
	if !st.PINDefault || !st.PUKDefault || !st.ManagementKeyDefault || st.PINRetries != 3 || st.PUKRetries != 3 {
		t.Errorf("after reset: %+v", st)
	}
	if len(st.Slots) != 1 || st.Slots[0].Slot != piv.SlotAttestation || st.Slots[0].Certificate == nil {
		t.Errorf("after reset the slots are %+v, want the attestation key and its certificate", st.Slots)
	}
	k.expect(signAPDU("9A"), "6A82")
}

// A cached touch lasts while the card stays powered: selecting another application keeps it,
// a reset, a power cycle or a removal does not.
func TestTouchCacheEndsAtReset(t *testing.T) {
	touches := 0
	now := time.Unix(1_700_000_000, 0)
	a, err := piv.New(piv.Config{Version: piv.Version{Major: 5, Minor: 7, Patch: 1}, Serial: 1, Keys: keystore.Software{},
		Touch: func(context.Context, piv.Slot) error { touches++; return nil },
		Now:   func() time.Time { return now }}, piv.AES192)
	if err != nil {
		t.Fatal(err)
	}
	other := &emptyApplet{aid: []byte{0xA0, 0x00, 0x00, 0x05, 0x27, 0x47, 0x11, 0x17}}
	c := emulator.New([]byte{0x3B, 0x00}, a, other)
	k := &card{t: t, Client: pivclient.New(c), card: c, pv: a}
	k.Select(context.Background())
	k.generate(0x9A, pivclient.AlgECCP256, 1 /* never */, 3 /* cached */)
	steps := []struct {
		name  string
		event func()
		want  int
	}{
		{"first signature", func() {}, 1},
		{"within the window", func() {}, 1},
		{"another application selected", func() { k.tx("00 A4 04 00 08 A0 00 00 05 27 47 11 17") }, 1},
		{"after the window", func() { now = now.Add(16 * time.Second) }, 2},
		{"reset", c.Reset, 3},
		{"power cycle", func() { c.PowerOff(); c.PowerOn() }, 4},
		{"removal", func() { c.Remove(); c.Insert() }, 5},
		{"reset by the reader", func() { c.ReaderReset(context.Background()) }, 6},
	}
	for _, s := range steps {
		s.event()
		k.expect("00 A4 04 00 05 A0 00 00 03 08", "9000", signAPDU("9A"), "9000")
		if touches != s.want {
			t.Errorf("%s: %d touches asked for in all, want %d", s.name, touches, s.want)
		}
	}
}

// emptyApplet is a second application to select.
type emptyApplet struct{ aid []byte }

func (e *emptyApplet) AID() []byte { return e.aid }
func (e *emptyApplet) Select(_ bool, rsp []byte) ([]byte, apdu.StatusWord) {
	return rsp, apdu.SWSuccess
}
func (e *emptyApplet) Deselect() {}
func (e *emptyApplet) Bypassed() {}
func (e *emptyApplet) Process(_ context.Context, _ *apdu.Command, rsp []byte) ([]byte, apdu.StatusWord) {
	return rsp, apdu.SWInstructionNotSupported
}

// From firmware 5.7 a new PUK is 7-bit ASCII. Like a short new PIN, a PUK that is not is
// refused only once the old PUK has been checked: a wrong old PUK costs its try first.
func TestNewPUKIsASCIIFrom57(t *testing.T) {
	const highByte = "00 24 00 81 10 31 32 33 34 35 36 37 38 31 32 33 34 35 36 37 F0"
	k := newCard(t, "5.7.1", piv.AES192)
	k.expect(
		"00 24 00 81 10 39 39 39 39 39 39 39 39 31 32 33 34 35 36 37 F0", "63C2", // wrong old PUK
		highByte, "6A80",
		"00 24 00 81 10 31 32 33 34 35 36 37 38 38 37 36 35 34 33 32 31", "9000", // old PUK unchanged, tries restored
	)
	if st := k.pv.Status(); st.PUKRetries != st.PUKMaxRetries {
		t.Errorf("PUK tries %d of %d after the right old PUK", st.PUKRetries, st.PUKMaxRetries)
	}
	k = newCard(t, "5.4.3", piv.TDES)
	k.expect(highByte, "9000") // before 5.7 any byte goes
}
