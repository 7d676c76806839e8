// Package piv is the PIV card application of SP 800-73-4 with the YubiKey extensions: PIN, PUK
// and management key, key slots with PIN and touch policies, data objects, and attestation.
package piv

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"maps"
	"time"

	"tokenlab/apdu"
	"tokenlab/apdu/tlv"
	"tokenlab/emulator/keystore"
	"tokenlab/emulator/state"
)

// Factory credentials (YubiKey defaults).
var (
	DefaultPIN = []byte("123456")
	DefaultPUK = []byte("12345678")
)

// Default retry counters (YKPIV_RETRIES_DEFAULT).
const (
	DefaultPINRetries = 3
	DefaultPUKRetries = 3
)

// touchCacheWindow is how long a touch satisfies a key with TouchPolicyCached.
const touchCacheWindow = 15 * time.Second

// TouchFunc is asked for a touch before a private-key operation that needs one. It returns nil
// when the user touched, or an error to refuse; it may take its time, as a user does. The card
// answers 6985 when it refuses.
type TouchFunc func(ctx context.Context, slot Slot) error

// Config is what an applet needs besides its persistent state.
type Config struct {
	Version    Version
	Serial     uint32
	FormFactor byte // in attestations (extension 1.3.6.1.4.1.41482.3.9)
	Keys       keystore.Store
	// Commit persists the applet state. The applet calls it before acknowledging any change
	// and before comparing a PIN or PUK; nil keeps the card in memory only. An error stops the
	// applet (see Failed).
	Commit func(*state.PIV) error
	// CommitCounters persists the PIN and PUK retry counters alone, when nothing else changed:
	// the try a VERIFY consumes before the comparison, and its restoration after a match. It
	// must be as durable as Commit. Nil means Commit.
	CommitCounters func(pin, puk int) error
	// Touch approves touches; nil approves every touch at once.
	Touch TouchFunc
	// Now is the clock for the touch cache; nil means time.Now.
	Now func() time.Time
}

// Applet is a PIV application instance. It is not safe for concurrent use: the card runtime
// serializes commands.
type Applet struct {
	cfg Config
	p   persistent
	// failed is the first commit error. A failed commit may have reached the disk in part (the
	// document but not the counters, say), so memory no longer tells what a restart would
	// load: from then on the applet answers every command 6581 and changes nothing.
	failed error
	onFail func(error)
	// pinLag is set while the committed PIN counter is one below the one in memory, which is
	// full: a VERIFY deferred its restore (see checkReference). Every commit clears it, as it
	// writes the counters in memory.
	pinLag bool

	// Volatile security status, dropped on deselect, reset and power-off.
	pinVerified  bool
	pinFresh     bool      // the previous command was a successful VERIFY (PIN-always keys)
	mgmAuthed    bool      // card management key authenticated
	mgmWitness   []byte    // plaintext of the witness sent in step one of mutual authentication
	mgmChallenge []byte    // challenge sent for external authentication (7C 02 81 00)
	lastTouch    time.Time // the last touch, for TouchPolicyCached; zero after a reset
}

// persistent is the applet's durable state. Updates go through update, which copies it, lets a
// function change the copy, commits the copy and only then adopts it; so a failed commit leaves
// both memory and disk as they were.
type persistent struct {
	pin, puk      credential
	mgm           managementKey
	defaultMgmAlg ManagementKeyAlgorithm
	keys          map[Slot]*slotKey  // copy before changing
	objects       map[tlv.Tag][]byte // copy before changing; values are never modified in place
	objectBytes   int
	attestRoot    []byte
}

type credential struct {
	value   [8]byte // right-padded with FF
	retries int
	max     int
}

type managementKey struct {
	alg   ManagementKeyAlgorithm
	key   []byte
	touch TouchPolicy
}

type slotKey struct {
	key    keystore.Key
	blob   []byte // the store's encoding, kept to avoid re-marshalling on every commit
	store  string
	pin    PINPolicy
	touch  TouchPolicy
	origin Origin
}

// update applies f to a copy of the persistent state, commits it, and adopts it.
func (a *Applet) update(f func(p *persistent)) apdu.StatusWord {
	next := a.p
	f(&next)
	if a.cfg.Commit != nil {
		if err := a.cfg.Commit(next.snapshot()); err != nil {
			return a.fail(err)
		}
		a.pinLag = false
	}
	a.p = next
	return apdu.SWSuccess
}

// updateCounters is update for a change of the retry counters alone.
func (a *Applet) updateCounters(f func(p *persistent)) apdu.StatusWord {
	if a.cfg.CommitCounters == nil {
		return a.update(f)
	}
	next := a.p
	f(&next)
	if err := a.cfg.CommitCounters(next.pin.retries, next.puk.retries); err != nil {
		return a.fail(err)
	}
	a.pinLag = false
	a.p = next
	return apdu.SWSuccess
}

// fail stops the applet after a commit error and drops its security status.
func (a *Applet) fail(err error) apdu.StatusWord {
	if a.failed == nil {
		a.failed = err
		if a.onFail != nil {
			a.onFail(err)
		}
	}
	a.Deselect()
	return apdu.SWMemoryFailure
}

// OnFail sets a function told, once, of the commit error that stops the applet: a daemon logs
// it. It runs inside the command that failed, and must not block or use the card.
func (a *Applet) OnFail(f func(error)) { a.onFail = f }

// Failed returns the commit error that stopped the applet, or nil. A stopped applet answers
// every command 6581 (memory failure) until the card is loaded again from its state.
func (a *Applet) Failed() error { return a.failed }

func (p *persistent) setKey(s Slot, k *slotKey) {
	p.keys = maps.Clone(p.keys)
	if k == nil {
		delete(p.keys, s)
	} else {
		p.keys[s] = k
	}
}

func (p *persistent) setObject(t tlv.Tag, v []byte) {
	p.objects = maps.Clone(p.objects)
	p.objectBytes -= len(p.objects[t])
	if v == nil {
		delete(p.objects, t)
	} else {
		p.objects[t] = v
		p.objectBytes += len(v)
	}
}

// AID implements emulator.Applet.
func (a *Applet) AID() []byte { return AID }

// Select implements emulator.Applet: it answers with the application property template a
// YubiKey 5 sends (61 { 4F PIX, 79 { 4F RID } }); OpenSC rejects a bare 9000.
func (a *Applet) Select(reselect bool, rsp []byte) ([]byte, apdu.StatusWord) {
	if !reselect {
		a.Deselect()
	}
	a.pinFresh = false
	a.mgmWitness, a.mgmChallenge = nil, nil
	var apt []byte
	apt = tlv.Append(apt, tagApplicationIdentifier, AID[5:])
	apt = tlv.Append(apt, tagAllocationAuthority, tlv.Append(nil, tagApplicationIdentifier, AID[:5]))
	return tlv.Append(rsp, tagApplicationProperty, apt), apdu.SWSuccess
}

// Deselect implements emulator.Applet.
func (a *Applet) Deselect() {
	a.pinVerified, a.pinFresh, a.mgmAuthed = false, false, false
	a.mgmWitness, a.mgmChallenge = nil, nil
}

// CardReset implements emulator.Resetter: a touch is cached for the powered card only, and
// survives the selection of another application but not a reset.
func (a *Applet) CardReset() { a.lastTouch = time.Time{} }

// Bypassed implements emulator.Applet: a command the applet did not see still ends a fresh
// VERIFY and a pending management-key witness or challenge.
func (a *Applet) Bypassed() {
	a.pinFresh = false
	a.mgmWitness, a.mgmChallenge = nil, nil
}

// Process implements emulator.Applet.
func (a *Applet) Process(ctx context.Context, cmd *apdu.Command, rsp []byte) ([]byte, apdu.StatusWord) {
	// Any command consumes a fresh VERIFY (PIN-always) and a pending management-key witness or
	// challenge; a chained command arrives here whole, so its links do not count.
	fresh := a.pinFresh
	witness, challenge := a.mgmWitness, a.mgmChallenge
	a.pinFresh, a.mgmWitness, a.mgmChallenge = false, nil, nil
	if a.failed != nil {
		return rsp, apdu.SWMemoryFailure
	}

	switch cmd.INS {
	case insVerify:
		return rsp, a.verify(cmd)
	case insChangeReference:
		return rsp, a.changeReference(cmd)
	case insResetRetry:
		return rsp, a.resetRetryCounter(cmd)
	case insAuthenticate:
		return a.authenticate(ctx, cmd, rsp, fresh, witness, challenge)
	case insGenerate:
		return a.generate(cmd, rsp)
	case insGetData:
		return a.getData(cmd, rsp)
	case insPutData:
		return rsp, a.putData(cmd)
	case insGetVersion:
		if len(cmd.Data) > 0 {
			return rsp, apdu.SWWrongLength
		}
		v := a.cfg.Version
		return append(rsp, v.Major, v.Minor, v.Patch), apdu.SWSuccess
	case insGetSerial:
		if !a.cfg.Version.hasSerial() {
			break
		}
		if len(cmd.Data) > 0 {
			return rsp, apdu.SWWrongLength
		}
		s := a.cfg.Serial
		return append(rsp, byte(s>>24), byte(s>>16), byte(s>>8), byte(s)), apdu.SWSuccess
	case insGetMetadata:
		if !a.cfg.Version.hasMetadata() {
			break
		}
		return a.metadata(cmd, rsp)
	case insAttest:
		if !a.cfg.Version.hasAttest() {
			break
		}
		return a.attest(cmd, rsp)
	case insImportKey:
		return rsp, a.importKey(cmd)
	case insSetManagementKey:
		return rsp, a.setManagementKey(cmd)
	case insSetPINRetries:
		return rsp, a.setPINRetries(cmd)
	case insReset:
		return rsp, a.reset(cmd)
	case insMoveKey:
		if !a.cfg.Version.has57() {
			break
		}
		return rsp, a.moveKey(cmd)
	}
	return rsp, apdu.SWInstructionNotSupported
}

// random returns n bytes from crypto/rand, which never fails (it aborts the process instead).
func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func (a *Applet) now() time.Time {
	if a.cfg.Now != nil {
		return a.cfg.Now()
	}
	return time.Now()
}

// equal compares secrets in constant time.
func equal(x, y []byte) bool { return subtle.ConstantTimeCompare(x, y) == 1 }
