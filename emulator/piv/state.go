package piv

import (
	"bytes"
	"crypto"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"

	"tokenlab/apdu/tlv"
	"tokenlab/emulator/keystore"
	"tokenlab/emulator/state"
)

// New returns an applet in factory state: default PIN, PUK and management key of algorithm
// mgmAlg, the default data objects, and an attestation key (F9) whose certificate is issued by a
// new per-card root. The caller persists State() if it wants the card kept.
func New(cfg Config, mgmAlg ManagementKeyAlgorithm) (*Applet, error) {
	if mgmAlg.isAES() && !cfg.Version.hasAES() {
		return nil, fmt.Errorf("piv: an %v management key needs firmware 5.4.0 or later, not %v", mgmAlg, cfg.Version)
	}
	if mgmAlg.KeyLen() != len(DefaultManagementKey) {
		return nil, fmt.Errorf("piv: the default management key is 24 bytes, which %v cannot use", mgmAlg)
	}
	a := &Applet{cfg: cfg, p: factory(mgmAlg, cfg.Serial)}
	if err := a.provisionAttestation(); err != nil {
		return nil, err
	}
	return a, nil
}

// State returns the applet's persistent state in its on-disk form.
func (a *Applet) State() *state.PIV { return a.p.snapshot() }

func (p *persistent) snapshot() *state.PIV {
	st := &state.PIV{
		PIN:                           state.Credential{Value: bytes.Clone(p.pin.value[:]), Retries: p.pin.retries, MaxRetries: p.pin.max},
		PUK:                           state.Credential{Value: bytes.Clone(p.puk.value[:]), Retries: p.puk.retries, MaxRetries: p.puk.max},
		ManagementKey:                 state.ManagementKey{Algorithm: p.mgm.alg.String(), Key: bytes.Clone(p.mgm.key), TouchPolicy: p.mgm.touch.String()},
		DefaultManagementKeyAlgorithm: p.defaultMgmAlg.String(),
		AttestationRoot:               p.attestRoot,
		Keys:                          []state.Key{},
		Objects:                       []state.Object{},
	}
	for _, s := range slices.Sorted(maps.Keys(p.keys)) {
		k := p.keys[s]
		st.Keys = append(st.Keys, state.Key{
			Slot:        s.String(),
			Algorithm:   k.key.Algorithm().String(),
			PINPolicy:   k.pin.String(),
			TouchPolicy: k.touch.String(),
			Origin:      k.origin.String(),
			Store:       k.store,
			Private:     k.blob,
		})
	}
	for _, t := range slices.Sorted(maps.Keys(p.objects)) {
		st.Objects = append(st.Objects, state.Object{Tag: hex.EncodeToString(tagBytes(t)), Value: p.objects[t]})
	}
	return st
}

func tagBytes(t tlv.Tag) []byte {
	b := make([]byte, t.Len())
	for i := range b {
		b[i] = byte(t >> (8 * (len(b) - 1 - i)))
	}
	return b
}

// Load returns an applet holding persisted state. Every field is checked; an error names the
// field ("piv.keys[1].pin_policy: ...") so the caller can add the file.
func Load(cfg Config, st *state.PIV) (*Applet, error) {
	var p persistent
	var err error
	if p.pin, err = loadCredential("piv.pin", st.PIN); err != nil {
		return nil, err
	}
	if p.puk, err = loadCredential("piv.puk", st.PUK); err != nil {
		return nil, err
	}
	if p.mgm.alg, err = ParseManagementKeyAlgorithm(st.ManagementKey.Algorithm); err != nil {
		return nil, fmt.Errorf("piv.management_key.algorithm: %w", err)
	}
	if _, err := p.mgm.alg.newBlock(st.ManagementKey.Key); err != nil {
		return nil, fmt.Errorf("piv.management_key.key: %w", err)
	}
	p.mgm.key = bytes.Clone(st.ManagementKey.Key)
	if p.mgm.touch, err = ParseTouchPolicy(st.ManagementKey.TouchPolicy); err != nil {
		return nil, fmt.Errorf("piv.management_key.touch_policy: %w", err)
	}
	if p.defaultMgmAlg, err = ParseManagementKeyAlgorithm(st.DefaultManagementKeyAlgorithm); err != nil {
		return nil, fmt.Errorf("piv.default_management_key_algorithm: %w", err)
	}
	p.keys = map[Slot]*slotKey{}
	for i, k := range st.Keys {
		field := fmt.Sprintf("piv.keys[%d]", i)
		s, err := ParseSlot(k.Slot)
		if err != nil {
			return nil, fmt.Errorf("%s.slot: %w", field, err)
		}
		if p.keys[s] != nil {
			return nil, fmt.Errorf("%s.slot: slot %v appears twice", field, s)
		}
		sk := &slotKey{store: k.Store, blob: bytes.Clone(k.Private)}
		alg, err := keystore.ParseAlgorithm(k.Algorithm)
		if err != nil {
			return nil, fmt.Errorf("%s.algorithm: %w", field, err)
		}
		if sk.pin, err = ParsePINPolicy(k.PINPolicy); err != nil {
			return nil, fmt.Errorf("%s.pin_policy: %w", field, err)
		}
		if sk.touch, err = ParseTouchPolicy(k.TouchPolicy); err != nil {
			return nil, fmt.Errorf("%s.touch_policy: %w", field, err)
		}
		switch k.Origin {
		case "generated":
			sk.origin = OriginGenerated
		case "imported":
			sk.origin = OriginImported
		default:
			return nil, fmt.Errorf("%s.origin: %q is not generated or imported", field, k.Origin)
		}
		if k.Store != cfg.Keys.Name() {
			return nil, fmt.Errorf("%s.store: key is in the %q store, this card uses %q", field, k.Store, cfg.Keys.Name())
		}
		if sk.key, err = cfg.Keys.Load(alg, k.Private); err != nil {
			return nil, fmt.Errorf("%s.private: %w", field, err)
		}
		p.keys[s] = sk
	}
	p.objects = map[tlv.Tag][]byte{}
	for i, o := range st.Objects {
		field := fmt.Sprintf("piv.objects[%d]", i)
		raw, err := hex.DecodeString(o.Tag)
		if err != nil || len(raw) == 0 || len(raw) > 3 {
			return nil, fmt.Errorf("%s.tag: %q is not a 1 to 3 byte hex tag", field, o.Tag)
		}
		var t tlv.Tag
		for _, b := range raw {
			t = t<<8 | tlv.Tag(b)
		}
		if _, dup := p.objects[t]; dup {
			return nil, fmt.Errorf("%s.tag: object %v appears twice", field, t)
		}
		if len(o.Value) == 0 || len(o.Value) > maxObjectSize {
			return nil, fmt.Errorf("%s.value: %d bytes is outside 1..%d", field, len(o.Value), maxObjectSize)
		}
		p.objects[t] = bytes.Clone(o.Value)
		p.objectBytes += len(o.Value)
	}
	if p.objectBytes > maxObjectTotal {
		return nil, fmt.Errorf("piv.objects: %d bytes in all exceeds %d", p.objectBytes, maxObjectTotal)
	}
	p.attestRoot = bytes.Clone(st.AttestationRoot)
	return &Applet{cfg: cfg, p: p}, nil
}

func loadCredential(field string, c state.Credential) (credential, error) {
	var out credential
	if len(c.Value) != 8 {
		return out, fmt.Errorf("%s.value: %d bytes, not 8", field, len(c.Value))
	}
	copy(out.value[:], c.Value)
	if c.MaxRetries < 1 || c.MaxRetries > 255 {
		return out, fmt.Errorf("%s.max_retries: %d is outside 1..255", field, c.MaxRetries)
	}
	if c.Retries < 0 || c.Retries > c.MaxRetries {
		return out, fmt.Errorf("%s.retries: %d is outside 0..max_retries (%d)", field, c.Retries, c.MaxRetries)
	}
	out.retries, out.max = c.Retries, c.MaxRetries
	return out, nil
}

// Status is what `tokenlab card status` shows of the applet.
type Status struct {
	PINRetries, PINMaxRetries int
	PUKRetries, PUKMaxRetries int
	PINDefault, PUKDefault    bool
	ManagementKeyAlgorithm    ManagementKeyAlgorithm
	ManagementKeyDefault      bool
	ManagementKeyTouch        TouchPolicy
	Slots                     []SlotStatus
}

// SlotStatus describes one occupied key slot.
type SlotStatus struct {
	Slot        Slot
	Algorithm   keystore.Algorithm
	PINPolicy   PINPolicy
	TouchPolicy TouchPolicy
	Origin      Origin
	// PublicKey is the slot key's public half.
	PublicKey crypto.PublicKey
	// Certificate is the DER certificate in the slot's object, nil when there is none.
	Certificate []byte
}

// Status reports the persistent state.
func (a *Applet) Status() Status {
	pin, _ := padPIN(DefaultPIN)
	puk, _ := padPIN(DefaultPUK)
	st := Status{
		PINRetries: a.p.pin.retries, PINMaxRetries: a.p.pin.max,
		PUKRetries: a.p.puk.retries, PUKMaxRetries: a.p.puk.max,
		PINDefault: equal(a.p.pin.value[:], pin[:]), PUKDefault: equal(a.p.puk.value[:], puk[:]),
		ManagementKeyAlgorithm: a.p.mgm.alg,
		ManagementKeyDefault:   equal(a.p.mgm.key, DefaultManagementKey),
		ManagementKeyTouch:     a.p.mgm.touch,
	}
	for _, s := range slices.Sorted(maps.Keys(a.p.keys)) {
		k := a.p.keys[s]
		ss := SlotStatus{Slot: s, Algorithm: k.key.Algorithm(), PINPolicy: k.pin, TouchPolicy: k.touch, Origin: k.origin,
			PublicKey: k.key.Public()}
		if obj, ok := a.p.objects[s.CertificateTag()]; ok {
			ss.Certificate, _ = certificateFromObject(obj)
		}
		st.Slots = append(st.Slots, ss)
	}
	return st
}

// certificateFromObject extracts the DER certificate from a certificate object
// (70 cert, 71 certinfo, FE LRC); compressed certificates are not decoded.
func certificateFromObject(obj []byte) ([]byte, bool) {
	info, _ := tlv.Find(obj, 0x71)
	if len(info) > 0 && info[0] != 0 {
		return nil, false
	}
	cert, ok := tlv.Find(obj, 0x70)
	return cert, ok && len(cert) > 0
}
