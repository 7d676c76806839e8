package piv

import (
	"bytes"

	"tokenlab/apdu"
)

// PIN and PUK lengths a YubiKey accepts (YKPIV_MIN_PIN_LEN, YKPIV_MAX_PIN_LEN).
const (
	minPINLen = 6
	maxPINLen = 8
)

// padPIN right-pads a PIN to the 8-byte reference data format with FF (SP 800-73-4 Pt 2 §2.4.3).
// Only the PIN's own length is checked: malformed input must not consume a try.
func padPIN(b []byte) ([8]byte, bool) {
	var out [8]byte
	if len(b) == 0 || len(b) > maxPINLen {
		return out, false
	}
	copy(out[:], b)
	for i := len(b); i < len(out); i++ {
		out[i] = 0xFF
	}
	return out, true
}

// validNewPIN checks a new PIN or PUK in its padded form: 6 to 8 bytes, padding only at the end.
func validNewPIN(v [8]byte) bool {
	n := bytes.IndexByte(v[:], 0xFF)
	if n < 0 {
		n = len(v)
	}
	if n < minPINLen {
		return false
	}
	for _, b := range v[n:] {
		if b != 0xFF {
			return false
		}
	}
	return true
}

// asciiPUK reports whether a padded PUK is 7-bit before its padding, which firmware 5.7 requires
// of a new PUK (Yubico's CHANGE REFERENCE DATA documentation).
func asciiPUK(v [8]byte) bool {
	for _, b := range v {
		if b == 0xFF {
			break
		}
		if b > 0x7F {
			return false
		}
	}
	return true
}

func (c *credential) blocked() bool { return c.retries <= 0 }

// checkReference compares reference data against a credential the way a card must: a try is
// consumed and committed before the comparison, so a crash or a torn write can never give it
// back. A match restores the counter and applies onMatch (a new PIN, say) in the same commit.
// which selects PIN or PUK in the persistent state.
//
// A VERIFY that matches from a full counter defers its restore (see pinLag): the committed
// counter stays one below, which already holds the try of the next VERIFY, so a run of right
// PINs costs one commit instead of two each. A crash in between loses that one try, never
// more: a restore from any lower counter is committed at once, so the next right PIN after a
// restart commits the full counter again. Flush commits a deferred restore.
func (a *Applet) checkReference(which func(*persistent) *credential, candidate [8]byte, onMatch func(*persistent)) apdu.StatusWord {
	if which(&a.p).blocked() {
		return apdu.SWAuthenticationBlocked
	}
	if c := which(&a.p); c == &a.p.pin && a.pinLag {
		// The committed counter is one below already: the try is on disk.
		c.retries--
		a.pinLag = false
	} else if sw := a.updateCounters(func(p *persistent) { which(p).retries-- }); !sw.OK() {
		return sw
	}
	c := which(&a.p)
	if !equal(candidate[:], c.value[:]) {
		return apdu.VerifyFailed(c.retries) // 63C0 on the try that blocks, 6983 after
	}
	restore := func(p *persistent) { which(p).retries = which(p).max }
	if onMatch == nil {
		if c == &a.p.pin && c.retries == c.max-1 && a.cfg.Commit != nil {
			c.retries = c.max
			a.pinLag = true
			return apdu.SWSuccess
		}
		return a.updateCounters(restore)
	}
	return a.update(func(p *persistent) {
		restore(p)
		onMatch(p)
	})
}

// Flush commits a restore of the PIN counter that a VERIFY deferred, so that the committed
// counters are those in memory. A card with a state directory flushes before it closes it.
func (a *Applet) Flush() error {
	if !a.pinLag {
		return nil
	}
	if a.failed != nil {
		return a.failed
	}
	if sw := a.updateCounters(func(*persistent) {}); !sw.OK() {
		return a.failed
	}
	return nil
}

func pinOf(p *persistent) *credential { return &p.pin }
func pukOf(p *persistent) *credential { return &p.puk }

// verify implements VERIFY (SP 800-73-4 Pt 2 §3.2.1): with data it checks the PIN; without data
// P1 00 asks for the status (9000 when verified, else 63Cx) and P1 FF logs the PIN out.
func (a *Applet) verify(cmd *apdu.Command) apdu.StatusWord {
	if Slot(cmd.P2) != refPIN {
		return apdu.SWReferenceNotFound
	}
	switch {
	case cmd.P1 == 0xFF && len(cmd.Data) == 0:
		a.pinVerified = false
		return apdu.SWSuccess
	case cmd.P1 != 0x00:
		return apdu.SWIncorrectP1P2
	case len(cmd.Data) == 0:
		switch {
		case a.p.pin.blocked():
			return apdu.SWAuthenticationBlocked
		case a.pinVerified:
			return apdu.SWSuccess
		}
		return apdu.VerifyFailed(a.p.pin.retries)
	}
	pin, ok := padPIN(cmd.Data)
	if !ok {
		return apdu.SWIncorrectData
	}
	// A failed VERIFY sets the security status to FALSE (SP 800-73-4 Pt 2 §3.2.1).
	a.pinVerified = false
	sw := a.checkReference(pinOf, pin, nil)
	if sw.OK() {
		a.pinVerified, a.pinFresh = true, true
	}
	return sw
}

// changeReference implements CHANGE REFERENCE DATA for the PIN (80) and PUK (81): 16 bytes of
// old and new reference data, each FF-padded to 8.
func (a *Applet) changeReference(cmd *apdu.Command) apdu.StatusWord {
	var which func(*persistent) *credential
	switch Slot(cmd.P2) {
	case refPIN:
		which = pinOf
	case refPUK:
		which = pukOf
	default:
		return apdu.SWReferenceNotFound
	}
	if cmd.P1 != 0 {
		return apdu.SWIncorrectP1P2
	}
	if len(cmd.Data) != 16 {
		return apdu.SWIncorrectData
	}
	var old, next [8]byte
	copy(old[:], cmd.Data[:8])
	copy(next[:], cmd.Data[8:])
	// The old value is checked first, as on a YubiKey: a wrong old PIN costs a try whatever the
	// new one looks like (piv-go blocks the PUK this way with short random values).
	valid := validNewPIN(next)
	if Slot(cmd.P2) == refPUK && a.cfg.Version.has57() {
		valid = valid && asciiPUK(next)
	}
	sw := a.checkReference(which, old, func(p *persistent) {
		if valid {
			which(p).value = next
		}
	})
	switch {
	case !sw.OK():
		if Slot(cmd.P2) == refPIN {
			a.pinVerified = false
		}
		return sw
	case !valid:
		return apdu.SWIncorrectData
	}
	return sw
}

// resetRetryCounter implements RESET RETRY COUNTER: the PUK unblocks the PIN and sets a new one.
func (a *Applet) resetRetryCounter(cmd *apdu.Command) apdu.StatusWord {
	if Slot(cmd.P2) != refPIN {
		return apdu.SWReferenceNotFound
	}
	if cmd.P1 != 0 {
		return apdu.SWIncorrectP1P2
	}
	if len(cmd.Data) != 16 {
		return apdu.SWIncorrectData
	}
	var puk, pin [8]byte
	copy(puk[:], cmd.Data[:8])
	copy(pin[:], cmd.Data[8:])
	valid := validNewPIN(pin)
	sw := a.checkReference(pukOf, puk, func(p *persistent) {
		if valid {
			p.pin.value = pin
			p.pin.retries = p.pin.max
		}
	})
	switch {
	case !sw.OK():
		return sw
	case !valid:
		return apdu.SWIncorrectData
	}
	a.pinVerified = false
	return sw
}

// setPINRetries implements the Yubico SET PIN RETRIES (FA): P1 PIN tries, P2 PUK tries. It needs
// the management key and the PIN, and resets PIN and PUK to their factory values.
func (a *Applet) setPINRetries(cmd *apdu.Command) apdu.StatusWord {
	if !a.mgmAuthed || !a.pinVerified {
		return apdu.SWSecurityStatusNotSatisfied
	}
	if cmd.P1 == 0 || cmd.P2 == 0 {
		return apdu.SWIncorrectP1P2
	}
	if len(cmd.Data) > 0 {
		return apdu.SWWrongLength
	}
	pin, _ := padPIN(DefaultPIN)
	puk, _ := padPIN(DefaultPUK)
	return a.update(func(p *persistent) {
		p.pin = credential{value: pin, retries: int(cmd.P1), max: int(cmd.P1)}
		p.puk = credential{value: puk, retries: int(cmd.P2), max: int(cmd.P2)}
	})
}
