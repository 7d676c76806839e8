package piv

import (
	"bytes"

	"tokenlab/apdu"
	"tokenlab/apdu/tlv"
)

// setManagementKey implements the Yubico SET MANAGEMENT KEY (FF): P1 FF, P2 FF (no touch) or FE
// (touch required), data alg 9B len key. It needs the current management key.
func (a *Applet) setManagementKey(cmd *apdu.Command) apdu.StatusWord {
	if !a.mgmAuthed {
		return apdu.SWSecurityStatusNotSatisfied
	}
	if cmd.P1 != 0xFF || (cmd.P2 != 0xFF && cmd.P2 != 0xFE) {
		return apdu.SWIncorrectP1P2
	}
	d := cmd.Data
	if len(d) < 3 || Slot(d[1]) != SlotCardManagement || int(d[2]) != len(d)-3 {
		return apdu.SWIncorrectData
	}
	alg := ManagementKeyAlgorithm(d[0])
	if alg.KeyLen() == 0 || (alg.isAES() && !a.cfg.Version.hasAES()) {
		return apdu.SWIncorrectData
	}
	key := bytes.Clone(d[3:])
	if _, err := alg.newBlock(key); err != nil {
		return apdu.SWIncorrectData
	}
	touch := TouchPolicyNever
	if cmd.P2 == 0xFE {
		touch = TouchPolicyAlways
	}
	return a.update(func(p *persistent) { p.mgm = managementKey{alg: alg, key: key, touch: touch} })
}

// reset implements the Yubico RESET (FB): allowed only when both PIN and PUK are blocked, it
// restores the factory state. The attestation key and its certificate survive, as on a YubiKey.
func (a *Applet) reset(cmd *apdu.Command) apdu.StatusWord {
	if cmd.P1 != 0 || cmd.P2 != 0 {
		return apdu.SWIncorrectP1P2
	}
	if !a.p.pin.blocked() || !a.p.puk.blocked() {
		return apdu.SWConditionsNotSatisfied
	}
	sw := a.update(func(p *persistent) {
		attKey := p.keys[SlotAttestation]
		attCert, hasCert := p.objects[tagCertAttestation]
		fresh := factory(p.defaultMgmAlg, a.cfg.Serial)
		fresh.attestRoot = p.attestRoot
		if attKey != nil {
			fresh.setKey(SlotAttestation, attKey)
		}
		if hasCert {
			fresh.setObject(tagCertAttestation, attCert)
		}
		*p = fresh
	})
	if sw.OK() {
		a.Deselect()
	}
	return sw
}

// factory returns the persistent state of a freshly reset applet, without attestation key.
func factory(mgmAlg ManagementKeyAlgorithm, serial uint32) persistent {
	pin, _ := padPIN(DefaultPIN)
	puk, _ := padPIN(DefaultPUK)
	p := persistent{
		pin:           credential{value: pin, retries: DefaultPINRetries, max: DefaultPINRetries},
		puk:           credential{value: puk, retries: DefaultPUKRetries, max: DefaultPUKRetries},
		mgm:           managementKey{alg: mgmAlg, key: bytes.Clone(DefaultManagementKey), touch: TouchPolicyNever},
		defaultMgmAlg: mgmAlg,
		keys:          map[Slot]*slotKey{},
		objects:       map[tlv.Tag][]byte{},
	}
	for t, v := range defaultObjects(serial) {
		p.objects[t] = v
		p.objectBytes += len(v)
	}
	return p
}
