package piv

import (
	"context"
	"errors"

	"golang.org/x/crypto/cryptobyte"

	"tokenlab/apdu"
	"tokenlab/apdu/tlv"
	"tokenlab/emulator/keystore"
)

// authTemplate is the content of the dynamic authentication template 7C: each of its tags
// absent, present and empty (a request), or present with data.
type authTemplate struct {
	witness, challenge, response, exponentiation authField
}

type authField struct {
	present bool
	data    []byte
}

func (f authField) empty() bool   { return f.present && len(f.data) == 0 }
func (f authField) filled() bool  { return f.present && len(f.data) > 0 }
func (f authField) missing() bool { return !f.present }

// parseAuthTemplate decodes 7C { 80 | 81 | 82 | 85 ... } in any order; repeated or unknown tags
// are malformed.
func parseAuthTemplate(b []byte) (authTemplate, bool) {
	var t authTemplate
	body, ok := tlv.Unwrap(b, tagDynamicAuthentication)
	if !ok {
		return t, false
	}
	s := cryptobyte.String(body)
	for !s.Empty() {
		var tag tlv.Tag
		var v cryptobyte.String
		if !tlv.Read(&s, &tag, &v) {
			return t, false
		}
		var f *authField
		switch tag {
		case tagWitness:
			f = &t.witness
		case tagChallenge:
			f = &t.challenge
		case tagResponse:
			f = &t.response
		case tagExponentiation:
			f = &t.exponentiation
		default:
			return t, false
		}
		if f.present {
			return t, false
		}
		*f = authField{present: true, data: v}
	}
	return t, true
}

// authenticate implements GENERAL AUTHENTICATE (SP 800-73-4 Pt 2 §3.2.4): P1 the algorithm, P2
// the key reference.
func (a *Applet) authenticate(ctx context.Context, cmd *apdu.Command, rsp []byte, fresh bool, witness, challenge []byte) ([]byte, apdu.StatusWord) {
	t, ok := parseAuthTemplate(cmd.Data)
	if !ok {
		return rsp, apdu.SWIncorrectData
	}
	slot := Slot(cmd.P2)
	if slot == SlotCardManagement {
		return a.authenticateManagement(ctx, cmd.P1, t, rsp, witness, challenge)
	}
	if !slot.IsKeySlot() || slot == SlotAttestation {
		return rsp, apdu.SWWrongP1P2
	}
	k := a.p.keys[slot]
	if k == nil {
		return rsp, apdu.SWNotFound
	}
	if cmd.P1 != algID(k.key.Algorithm()) {
		return rsp, apdu.SWIncorrectData
	}
	// 82 00 asks for the result; 81 carries data to sign or decrypt, 85 a peer key for ECDH.
	var input []byte
	var agree bool
	switch {
	case t.response.empty() && t.challenge.filled() && t.exponentiation.missing() && t.witness.missing():
		input = t.challenge.data
	case t.response.empty() && t.exponentiation.filled() && t.challenge.missing() && t.witness.missing():
		input, agree = t.exponentiation.data, true
	default:
		return rsp, apdu.SWIncorrectData
	}
	if sw := a.authorize(ctx, slot, k, fresh); !sw.OK() {
		return rsp, sw
	}
	var out []byte
	var err error
	alg := k.key.Algorithm()
	switch {
	case agree:
		out, err = k.key.ECDH(input)
	case alg.IsRSA():
		out, err = k.key.RSA(input)
	default:
		out, err = k.key.Sign(input)
	}
	switch {
	case errors.Is(err, keystore.ErrInput), errors.Is(err, keystore.ErrUnsupported):
		return rsp, apdu.SWIncorrectData
	case err != nil:
		return rsp, apdu.SWNoPreciseDiagnosis
	}
	// 7C L1 82 L2 result, written in place: this is the signing hot path.
	inner := tlv.HeaderLen(tagResponse, len(out)) + len(out)
	rsp = tlv.AppendHeader(rsp, tagDynamicAuthentication, inner)
	rsp = tlv.Append(rsp, tagResponse, out)
	return rsp, apdu.SWSuccess
}

// authorize checks a private-key operation against the slot's PIN and touch policies.
func (a *Applet) authorize(ctx context.Context, slot Slot, k *slotKey, fresh bool) apdu.StatusWord {
	switch k.pin {
	case PINPolicyNever:
	case PINPolicyOnce:
		if !a.pinVerified {
			return apdu.SWSecurityStatusNotSatisfied
		}
	case PINPolicyAlways:
		// SP 800-73-4 Pt 2 §3.2.1: verified "every time immediately before" the operation.
		if !a.pinVerified || !fresh {
			return apdu.SWSecurityStatusNotSatisfied
		}
	default:
		return apdu.SWSecurityStatusNotSatisfied // closed by default
	}
	return a.touch(ctx, slot, k.touch)
}

func (a *Applet) touch(ctx context.Context, slot Slot, p TouchPolicy) apdu.StatusWord {
	switch p {
	case TouchPolicyAlways:
	case TouchPolicyCached:
		if !a.lastTouch.IsZero() && a.now().Sub(a.lastTouch) < touchCacheWindow {
			return apdu.SWSuccess
		}
	default:
		return apdu.SWSuccess
	}
	if a.cfg.Touch != nil {
		if err := a.cfg.Touch(ctx, slot); err != nil {
			return apdu.SWConditionsNotSatisfied
		}
	}
	a.lastTouch = a.now()
	return apdu.SWSuccess
}

// authenticateManagement implements the symmetric card management key (9B) forms:
//
//	mutual, step 1:  7C { 80 00 }               -> 7C { 80 E(witness) }
//	mutual, step 2:  7C { 80 witness, 81 chal } -> 7C { 82 E(chal) }
//	external:        7C { 81 00 }               -> 7C { 81 chal }      (also OpenSC's RNG)
//	                 7C { 82 E(chal) }          -> 9000
//
// A pending witness or challenge is valid for the next command only.
func (a *Applet) authenticateManagement(ctx context.Context, alg byte, t authTemplate, rsp, witness, challenge []byte) ([]byte, apdu.StatusWord) {
	mgm := a.p.mgm
	if alg != 0 && ManagementKeyAlgorithm(alg) != mgm.alg {
		return rsp, apdu.SWIncorrectData
	}
	block, err := mgm.alg.newBlock(mgm.key)
	if err != nil {
		return rsp, apdu.SWNoPreciseDiagnosis
	}
	n := block.BlockSize()
	appendField := func(tag tlv.Tag, v []byte) []byte {
		return tlv.Append(rsp, tagDynamicAuthentication, tlv.Append(nil, tag, v))
	}
	switch {
	case t.witness.empty() && t.challenge.missing() && t.response.missing():
		w := random(n)
		enc := make([]byte, n)
		block.Encrypt(enc, w)
		a.mgmAuthed = false
		a.mgmWitness = w
		return appendField(tagWitness, enc), apdu.SWSuccess

	case t.witness.filled() && t.challenge.filled() && t.response.missing():
		a.mgmAuthed = false
		if witness == nil || len(t.challenge.data) != n {
			return rsp, apdu.SWIncorrectData
		}
		if !equal(t.witness.data, witness) {
			return rsp, apdu.SWSecurityStatusNotSatisfied
		}
		if sw := a.touch(ctx, SlotCardManagement, mgm.touch); !sw.OK() {
			return rsp, sw
		}
		enc := make([]byte, n)
		block.Encrypt(enc, t.challenge.data)
		a.mgmAuthed = true
		return appendField(tagResponse, enc), apdu.SWSuccess

	case t.challenge.empty() && t.witness.missing() && t.response.missing():
		c := random(n)
		a.mgmChallenge = c
		return appendField(tagChallenge, c), apdu.SWSuccess

	case t.response.filled() && t.witness.missing() && t.challenge.missing():
		a.mgmAuthed = false
		if challenge == nil || len(t.response.data) != n {
			return rsp, apdu.SWIncorrectData
		}
		want := make([]byte, n)
		block.Encrypt(want, challenge)
		if !equal(t.response.data, want) {
			return rsp, apdu.SWSecurityStatusNotSatisfied
		}
		if sw := a.touch(ctx, SlotCardManagement, mgm.touch); !sw.OK() {
			return rsp, sw
		}
		a.mgmAuthed = true
		return rsp, apdu.SWSuccess
	}
	return rsp, apdu.SWIncorrectData
}
