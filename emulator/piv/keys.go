package piv

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"math/big"

	"golang.org/x/crypto/cryptobyte"

	"tokenlab/apdu"
	"tokenlab/apdu/tlv"
	"tokenlab/emulator/keystore"
)

// policies reads the optional PIN (AA) and touch (AB) policy objects of GENERATE and IMPORT and
// resolves defaults for the slot.
func (a *Applet) policies(slot Slot, pinObj, touchObj []byte) (PINPolicy, TouchPolicy, bool) {
	pin, touch := defaultPINPolicy(slot), TouchPolicyNever
	if pinObj != nil {
		if len(pinObj) != 1 || pinObj[0] > byte(PINPolicyAlways) {
			return 0, 0, false
		}
		if p := PINPolicy(pinObj[0]); p != PINPolicyDefault {
			pin = p
		}
	}
	if touchObj != nil {
		if len(touchObj) != 1 || touchObj[0] > byte(TouchPolicyCached) {
			return 0, 0, false
		}
		if t := TouchPolicy(touchObj[0]); t != TouchPolicyDefault {
			touch = t
		}
	}
	return pin, touch, true
}

// generate implements GENERATE ASYMMETRIC KEY PAIR (SP 800-73-4 Pt 2 §3.3.2):
// AC { 80 alg [AA pin policy] [AB touch policy] } -> 7F49 { public key }.
func (a *Applet) generate(cmd *apdu.Command, rsp []byte) ([]byte, apdu.StatusWord) {
	if !a.mgmAuthed {
		return rsp, apdu.SWSecurityStatusNotSatisfied
	}
	slot := Slot(cmd.P2)
	if cmd.P1 != 0 {
		return rsp, apdu.SWIncorrectP1P2
	}
	if !slot.IsKeySlot() || slot == SlotAttestation {
		return rsp, apdu.SWWrongP1P2
	}
	crt, ok := tlv.Unwrap(cmd.Data, tagControlReference)
	if !ok {
		return rsp, apdu.SWIncorrectData
	}
	objs, err := tlv.Parse(crt)
	if err != nil {
		return rsp, apdu.SWIncorrectData
	}
	fields := map[tlv.Tag][]byte{}
	for _, o := range objs {
		switch o.Tag {
		case tagCryptographicMechanism, tagPINPolicy, tagTouchPolicy:
		default:
			return rsp, apdu.SWIncorrectData
		}
		if _, dup := fields[o.Tag]; dup {
			return rsp, apdu.SWIncorrectData
		}
		fields[o.Tag] = o.Value
	}
	algObj := fields[tagCryptographicMechanism]
	pinObj, hasPIN := fields[tagPINPolicy]
	touchObj, hasTouch := fields[tagTouchPolicy]
	if hasPIN && pinObj == nil {
		pinObj = []byte{} // present but empty: malformed, not "absent"
	}
	if hasTouch && touchObj == nil {
		touchObj = []byte{}
	}
	if len(algObj) != 1 {
		return rsp, apdu.SWIncorrectData
	}
	alg, ok := asymmetricAlgs[algObj[0]]
	if !ok || !a.cfg.Version.supports(alg) {
		return rsp, apdu.SWIncorrectData
	}
	pin, touch, ok := a.policies(slot, pinObj, touchObj)
	if !ok {
		return rsp, apdu.SWIncorrectData
	}
	key, err := a.cfg.Keys.Generate(alg)
	if err != nil {
		return rsp, apdu.SWNoPreciseDiagnosis
	}
	sk, sw := a.newSlotKey(key, pin, touch, OriginGenerated)
	if !sw.OK() {
		return rsp, sw
	}
	if sw := a.update(func(p *persistent) { p.setKey(slot, sk) }); !sw.OK() {
		return rsp, sw
	}
	return tlv.Append(rsp, tagPublicKeyTemplate, appendPublicKey(nil, key.Public())), apdu.SWSuccess
}

func (a *Applet) newSlotKey(k keystore.Key, pin PINPolicy, touch TouchPolicy, origin Origin) (*slotKey, apdu.StatusWord) {
	blob, err := a.cfg.Keys.Marshal(k)
	if err != nil {
		return nil, apdu.SWNoPreciseDiagnosis
	}
	return &slotKey{key: k, blob: blob, store: a.cfg.Keys.Name(), pin: pin, touch: touch, origin: origin}, apdu.SWSuccess
}

// appendPublicKey appends the content of a public key template: 81 n 82 e for RSA, 86 point for
// EC (uncompressed) and 25519 (32 bytes).
func appendPublicKey(dst []byte, pub crypto.PublicKey) []byte {
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		dst = tlv.Append(dst, tagRSAModulus, pub.N.Bytes())
		return tlv.Append(dst, tagRSAExponent, big.NewInt(int64(pub.E)).Bytes())
	case *ecdsa.PublicKey:
		point, err := pub.Bytes()
		if err != nil {
			return dst
		}
		return tlv.Append(dst, tagECPoint, point)
	case ed25519.PublicKey:
		return tlv.Append(dst, tagECPoint, pub)
	case *ecdh.PublicKey:
		return tlv.Append(dst, tagECPoint, pub.Bytes())
	}
	return dst
}

// Tags of IMPORT ASYMMETRIC KEY (Yubico FE).
const (
	tagImportP       tlv.Tag = 0x01
	tagImportQ       tlv.Tag = 0x02
	tagImportDP      tlv.Tag = 0x03
	tagImportDQ      tlv.Tag = 0x04
	tagImportQInv    tlv.Tag = 0x05
	tagImportECPriv  tlv.Tag = 0x06
	tagImportEd25519 tlv.Tag = 0x07
	tagImportX25519  tlv.Tag = 0x08
)

// importKey implements the Yubico IMPORT ASYMMETRIC KEY (FE): P1 algorithm, P2 slot, data the
// private key (RSA 01 p, 02 q, 03 dP, 04 dQ, 05 qInv; EC 06 s; Ed25519 07; X25519 08) and
// optional AA/AB policies.
func (a *Applet) importKey(cmd *apdu.Command) apdu.StatusWord {
	if !a.mgmAuthed {
		return apdu.SWSecurityStatusNotSatisfied
	}
	slot := Slot(cmd.P2)
	if !slot.IsKeySlot() {
		return apdu.SWWrongP1P2
	}
	alg, ok := asymmetricAlgs[cmd.P1]
	if !ok || !a.cfg.Version.supports(alg) {
		return apdu.SWIncorrectP1P2
	}
	fields := map[tlv.Tag][]byte{}
	s := cryptobyte.String(cmd.Data)
	for !s.Empty() {
		var tag tlv.Tag
		var v cryptobyte.String
		if !tlv.Read(&s, &tag, &v) {
			return apdu.SWIncorrectData
		}
		if _, dup := fields[tag]; dup || tag < tagImportP || (tag > tagImportX25519 && tag != tagPINPolicy && tag != tagTouchPolicy) {
			return apdu.SWIncorrectData
		}
		fields[tag] = v
	}
	priv, ok := parseImport(alg, fields)
	if !ok {
		return apdu.SWIncorrectData
	}
	pinObj, hasPIN := fields[tagPINPolicy]
	touchObj, hasTouch := fields[tagTouchPolicy]
	if !hasPIN {
		pinObj = nil
	}
	if !hasTouch {
		touchObj = nil
	}
	pin, touch, ok := a.policies(slot, pinObj, touchObj)
	if !ok {
		return apdu.SWIncorrectData
	}
	key, err := a.cfg.Keys.Import(alg, priv)
	if err != nil {
		return apdu.SWIncorrectData
	}
	sk, sw := a.newSlotKey(key, pin, touch, OriginImported)
	if !sw.OK() {
		return sw
	}
	return a.update(func(p *persistent) { p.setKey(slot, sk) })
}

// parseImport builds a private key of type alg from exactly the fields that type needs.
func parseImport(alg keystore.Algorithm, f map[tlv.Tag][]byte) (crypto.PrivateKey, bool) {
	only := func(tags ...tlv.Tag) bool {
		n := 0
		for t := range f {
			if t != tagPINPolicy && t != tagTouchPolicy {
				n++
			}
		}
		for _, t := range tags {
			if _, ok := f[t]; !ok {
				return false
			}
		}
		return n == len(tags)
	}
	switch {
	case alg.IsRSA():
		if !only(tagImportP, tagImportQ, tagImportDP, tagImportDQ, tagImportQInv) {
			return nil, false
		}
		k, err := keystore.ImportRSA(alg.RSABits(), f[tagImportP], f[tagImportQ], f[tagImportDP], f[tagImportDQ], f[tagImportQInv])
		if err != nil {
			return nil, false
		}
		return k, true
	case alg.IsEC():
		if !only(tagImportECPriv) {
			return nil, false
		}
		c := elliptic.P256()
		if alg == keystore.ECCP384 {
			c = elliptic.P384()
		}
		n := (c.Params().BitSize + 7) / 8
		s := f[tagImportECPriv]
		if len(s) > n {
			return nil, false
		}
		// Scalars are sent without leading zeros by some hosts; ParseRawPrivateKey wants n bytes.
		padded := make([]byte, n)
		copy(padded[n-len(s):], s)
		k, err := ecdsa.ParseRawPrivateKey(c, padded)
		if err != nil {
			return nil, false
		}
		return k, true
	case alg == keystore.Ed25519:
		if !only(tagImportEd25519) || len(f[tagImportEd25519]) != ed25519.SeedSize {
			return nil, false
		}
		return ed25519.NewKeyFromSeed(f[tagImportEd25519]), true
	case alg == keystore.X25519:
		if !only(tagImportX25519) {
			return nil, false
		}
		k, err := ecdh.X25519().NewPrivateKey(f[tagImportX25519])
		if err != nil {
			return nil, false
		}
		return k, true
	}
	return nil, false
}

// moveKey implements the Yubico MOVE KEY (F6, 5.7): P1 the destination slot, or FF to delete
// the key in P2; P2 the source slot. The attestation key stays where it is.
func (a *Applet) moveKey(cmd *apdu.Command) apdu.StatusWord {
	if !a.mgmAuthed {
		return apdu.SWSecurityStatusNotSatisfied
	}
	if len(cmd.Data) > 0 {
		return apdu.SWWrongLength
	}
	from, to := Slot(cmd.P2), Slot(cmd.P1)
	if !from.IsKeySlot() || from == SlotAttestation || (to != 0xFF && (!to.IsKeySlot() || to == SlotAttestation || to == from)) {
		return apdu.SWIncorrectP1P2
	}
	k := a.p.keys[from]
	if k == nil {
		return apdu.SWNotFound
	}
	if to != 0xFF && a.p.keys[to] != nil {
		return apdu.SWAlreadyExists // the destination must be empty (Yubico SDK, MoveKey)
	}
	return a.update(func(p *persistent) {
		p.setKey(from, nil)
		if to != 0xFF {
			p.setKey(to, k)
		}
	})
}

// metadata implements the Yubico GET METADATA (F7, 5.3) for a key slot, the management key
// (9B), the PIN (80) and the PUK (81). The algorithm comes first: piv-go reads the 9B key type
// from the third byte.
func (a *Applet) metadata(cmd *apdu.Command, rsp []byte) ([]byte, apdu.StatusWord) {
	if cmd.P1 != 0 {
		return rsp, apdu.SWIncorrectP1P2
	}
	if len(cmd.Data) > 0 {
		return rsp, apdu.SWWrongLength
	}
	b := func(v ...byte) []byte { return v }
	switch ref := Slot(cmd.P2); {
	case ref == refPIN || ref == refPUK:
		c, def := a.p.pin, DefaultPIN
		if ref == refPUK {
			c, def = a.p.puk, DefaultPUK
		}
		d, _ := padPIN(def)
		rsp = tlv.Append(rsp, tagMetadataAlgorithm, b(algPIN))
		rsp = tlv.Append(rsp, tagMetadataPolicy, b(0, 0))
		rsp = tlv.Append(rsp, tagMetadataIsDefault, b(boolByte(equal(c.value[:], d[:]))))
		return tlv.Append(rsp, tagMetadataRetries, b(byte(c.max), byte(max(c.retries, 0)))), apdu.SWSuccess
	case ref == SlotCardManagement:
		m := a.p.mgm
		rsp = tlv.Append(rsp, tagMetadataAlgorithm, b(byte(m.alg)))
		rsp = tlv.Append(rsp, tagMetadataPolicy, b(0, byte(m.touch)))
		return tlv.Append(rsp, tagMetadataIsDefault, b(boolByte(equal(m.key, DefaultManagementKey)))), apdu.SWSuccess
	case ref.IsKeySlot():
		k := a.p.keys[ref]
		if k == nil {
			return rsp, apdu.SWNotFound
		}
		rsp = tlv.Append(rsp, tagMetadataAlgorithm, b(algID(k.key.Algorithm())))
		rsp = tlv.Append(rsp, tagMetadataPolicy, b(byte(k.pin), byte(k.touch)))
		rsp = tlv.Append(rsp, tagMetadataOrigin, b(byte(k.origin)))
		return tlv.Append(rsp, tagMetadataPublicKey, appendPublicKey(nil, k.key.Public())), apdu.SWSuccess
	}
	return rsp, apdu.SWReferenceNotFound
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}
