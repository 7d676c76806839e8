package pkcs11srv

import (
	"context"
	"crypto/ecdh"
	"encoding/asn1"
	"encoding/binary"
	"slices"

	"tokenlab/middleware/pivclient"
)

// sessionHandleBase sets session object handles apart from the card's, whose handles are
// below 2^44 (handleOf and the login generation). The low nibble 8 is no class of handleOf.
const sessionHandleBase = 1 << 48

// DeriveKey is C_DeriveKey with CKM_ECDH1_DERIVE: the card's key agreement (PIV GENERAL
// AUTHENTICATE with tag 85) on the base key, whose result becomes a session secret key.
//
// The card returns the shared secret Z, the x-coordinate of the shared point, so only
// CKD_NULL is offered, as OpenSC and ykcs11 do; an application that wants X9.63 or another KDF
// reads CKA_VALUE and applies it. The public data is the peer's point, uncompressed, or the
// DER OCTET STRING of CKA_EC_POINT (both are accepted, as OpenSC and SoftHSM do). With
// CKA_VALUE_LEN shorter than Z, the key is the last CKA_VALUE_LEN bytes of Z, as in SoftHSM2.
//
// The key is a session object: CKA_TOKEN true is refused (a PIV card has nowhere to keep a
// secret key), and it is destroyed with its session, at C_Logout when private, or by
// C_DestroyObject.
func (a *App) DeriveKey(ctx context.Context, h uint64, mech Mechanism, base uint64, tmpl []Attribute) (uint64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, err := a.session(h); err != nil {
		return 0, err
	}
	if mech.Type != ckmECDH1Derive {
		return 0, RV(ckrMechanismInvalid)
	}
	p := mech.ECDH
	if p == nil || p.KDF != ckdNull || len(p.SharedData) != 0 {
		return 0, RV(ckrMechanismParamInvalid)
	}
	o, err := a.object(ctx, base)
	if err != nil {
		if err == RV(ckrObjectHandleInvalid) {
			if a.user != ckuUser && a.privateHandle(base) {
				return 0, RV(ckrUserNotLoggedIn)
			}
			return 0, RV(ckrKeyHandleInvalid)
		}
		return 0, err
	}
	if o.class != ckoPrivateKey {
		return 0, RV(ckrKeyTypeInconsistent)
	}
	if _, _, derive := capabilities(o.key); !derive {
		return 0, RV(ckrKeyFunctionNotPermitted)
	}
	peer, ok := peerPoint(o.key.Algorithm, p.PublicData)
	if !ok {
		return 0, RV(ckrMechanismParamInvalid)
	}
	spec, err := secretTemplate(tmpl, a.user == ckuUser)
	if err != nil {
		return 0, err
	}

	t, err := a.tokenFor(ctx)
	if err != nil {
		return 0, err
	}
	always := o.key.AlwaysAuthenticate(a.srv.cfg.Policy)
	pin := a.takeLoginPIN(always)
	defer clear(pin)
	if err := a.canAuthorize(always, pin); err != nil {
		return 0, err
	}
	z, err := t.ECDHWithPIN(ctx, o.key.Slot, peer, pin)
	if err != nil {
		return 0, a.cardError(err)
	}
	if spec.length == 0 {
		spec.length = len(z)
	}
	if spec.length > len(z) {
		clear(z)
		return 0, RV(ckrTemplateInconsistent)
	}
	value := slices.Clone(z[len(z)-spec.length:])
	clear(z)

	a.nextObject++
	obj := &object{
		handle:    sessionHandleBase | a.nextObject<<4 | 8,
		class:     ckoSecretKey,
		private:   spec.private,
		session:   h,
		attrs:     spec.attrs,
		sensitive: map[uint32]bool{},
	}
	obj.attrs[ckaValue] = value
	obj.attrs[ckaValueLen] = ulong(uint64(len(value)))
	if spec.sensitive || !spec.extractable {
		obj.sensitive[ckaValue] = true
	}
	a.sessionObjs = append(a.sessionObjs, obj)
	return obj.handle, nil
}

// peerPoint returns the peer's public key in the form the card takes (an uncompressed point,
// or the 32 bytes of an X25519 key), checked to be on the base key's curve.
func peerPoint(alg byte, data []byte) ([]byte, bool) {
	var curve ecdh.Curve
	var size int
	switch alg {
	case pivclient.AlgECCP256:
		curve, size = ecdh.P256(), 65
	case pivclient.AlgECCP384:
		curve, size = ecdh.P384(), 97
	case pivclient.AlgX25519:
		curve, size = ecdh.X25519(), 32
	default:
		return nil, false
	}
	if len(data) != size {
		// CKA_EC_POINT as it is stored: a DER OCTET STRING around the point.
		var inner []byte
		rest, err := asn1.Unmarshal(data, &inner)
		if err != nil || len(rest) != 0 || len(inner) != size {
			return nil, false
		}
		data = inner
	}
	if _, err := curve.NewPublicKey(data); err != nil {
		return nil, false
	}
	return slices.Clone(data), true
}

// secretSpec is what a derivation template asks of the new key.
type secretSpec struct {
	attrs                           map[uint32][]byte
	length                          int // CKA_VALUE_LEN; 0 for all of Z
	private, sensitive, extractable bool
}

// secretTemplate checks the template of a derived secret key and fills in the defaults:
// CKK_GENERIC_SECRET, a session object, not sensitive, extractable, private when the user is
// logged in. It names the first attribute it cannot take in its error.
func secretTemplate(tmpl []Attribute, loggedIn bool) (secretSpec, error) {
	spec := secretSpec{private: loggedIn, extractable: true, attrs: map[uint32][]byte{
		ckaClass:       ulong(ckoSecretKey),
		ckaKeyType:     ulong(ckkGenericSecret),
		ckaToken:       boolean(false),
		ckaLabel:       {},
		ckaID:          {},
		ckaLocal:       boolean(false),
		ckaModifiable:  boolean(false),
		ckaCopyable:    boolean(false),
		ckaDestroyable: boolean(true),
		ckaEncrypt:     boolean(false),
		ckaDecrypt:     boolean(false),
		ckaSign:        boolean(false),
		ckaVerify:      boolean(false),
		ckaWrap:        boolean(false),
		ckaUnwrap:      boolean(false),
		ckaDerive:      boolean(false),
	}}
	seen := map[uint32]bool{}
	for _, at := range tmpl {
		if seen[at.Type] {
			return spec, RV(ckrTemplateInconsistent)
		}
		seen[at.Type] = true
		v := at.Value
		isBool := len(v) == 1 && v[0] <= 1
		isUlong := len(v) == 8
		switch at.Type {
		case ckaClass:
			if !isUlong {
				return spec, RV(ckrAttributeValueInvalid)
			}
			if binary.LittleEndian.Uint64(v) != ckoSecretKey {
				return spec, RV(ckrTemplateInconsistent)
			}
		case ckaKeyType:
			if !isUlong {
				return spec, RV(ckrAttributeValueInvalid)
			}
			switch binary.LittleEndian.Uint64(v) {
			case ckkGenericSecret, ckkAES:
				spec.attrs[ckaKeyType] = slices.Clone(v)
			default:
				return spec, RV(ckrTemplateInconsistent)
			}
		case ckaValueLen:
			if !isUlong {
				return spec, RV(ckrAttributeValueInvalid)
			}
			n := binary.LittleEndian.Uint64(v)
			if n == 0 || n > 1024 {
				return spec, RV(ckrAttributeValueInvalid)
			}
			spec.length = int(n)
		case ckaToken:
			if !isBool {
				return spec, RV(ckrAttributeValueInvalid)
			}
			if v[0] == 1 {
				return spec, RV(ckrAttributeValueInvalid) // no room for secret keys on a PIV card
			}
		case ckaPrivate:
			if !isBool {
				return spec, RV(ckrAttributeValueInvalid)
			}
			spec.private = v[0] == 1
			if spec.private && !loggedIn {
				return spec, RV(ckrUserNotLoggedIn)
			}
		case ckaSensitive:
			if !isBool {
				return spec, RV(ckrAttributeValueInvalid)
			}
			spec.sensitive = v[0] == 1
		case ckaExtractable:
			if !isBool {
				return spec, RV(ckrAttributeValueInvalid)
			}
			spec.extractable = v[0] == 1
		case ckaLabel, ckaID:
			spec.attrs[at.Type] = slices.Clone(v)
		case ckaEncrypt, ckaDecrypt, ckaSign, ckaVerify, ckaWrap, ckaUnwrap, ckaDerive,
			ckaModifiable, ckaCopyable, ckaDestroyable:
			if !isBool {
				return spec, RV(ckrAttributeValueInvalid)
			}
			spec.attrs[at.Type] = slices.Clone(v)
		case ckaValue, ckaLocal, ckaAlwaysSensitive, ckaNeverExtractable, ckaKeyGenMechanism:
			return spec, RV(ckrAttributeReadOnly)
		default:
			return spec, RV(ckrAttributeTypeInvalid)
		}
	}
	if kt := binary.LittleEndian.Uint64(spec.attrs[ckaKeyType]); kt == ckkAES {
		switch spec.length {
		case 16, 24, 32:
		case 0:
			return spec, RV(ckrTemplateIncomplete)
		default:
			return spec, RV(ckrAttributeValueInvalid)
		}
	}
	spec.attrs[ckaPrivate] = boolean(spec.private)
	spec.attrs[ckaSensitive] = boolean(spec.sensitive)
	spec.attrs[ckaExtractable] = boolean(spec.extractable)
	spec.attrs[ckaAlwaysSensitive] = boolean(spec.sensitive)
	spec.attrs[ckaNeverExtractable] = boolean(!spec.extractable)
	spec.attrs[ckaKeyGenMechanism] = ulong(ckUnavailable)
	return spec, nil
}

// DestroyObject is C_DestroyObject. Only session objects can go: the card's keys and
// certificates are not destroyable through PKCS#11 (CKA_DESTROYABLE false), as in OpenSC.
func (a *App) DestroyObject(ctx context.Context, h, obj uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, err := a.session(h); err != nil {
		return err
	}
	o, err := a.object(ctx, obj)
	if err != nil {
		return err
	}
	if o.session == 0 {
		return RV(ckrActionProhibited)
	}
	a.dropSessionObjects(func(x *object) bool { return x == o })
	return nil
}

// dropSessionObjects destroys the session objects drop picks, wiping their values.
func (a *App) dropSessionObjects(drop func(*object) bool) {
	a.sessionObjs = slices.DeleteFunc(a.sessionObjs, func(o *object) bool {
		if drop(o) {
			clear(o.attrs[ckaValue])
			return true
		}
		return false
	})
}
