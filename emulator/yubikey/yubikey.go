// Package yubikey assembles a virtual YubiKey 5 from the card runtime, the PIV and management
// applets, a key store and, optionally, a state directory that keeps it across restarts.
package yubikey

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"

	"tokenlab/emulator"
	"tokenlab/emulator/keystore"
	"tokenlab/emulator/mgmt"
	"tokenlab/emulator/piv"
	"tokenlab/emulator/state"
)

// DefaultVersion is the firmware a new card reports: 5.7 brings AES-192 as the default
// management key, Ed25519, X25519, RSA 3072/4096 and MOVE KEY.
var DefaultVersion = piv.Version{Major: 5, Minor: 7, Patch: 1}

// ATR is a YubiKey 5's answer to reset: T=1 only, historical bytes in compact-TLV naming
// "YubiKey". OpenSC then treats the card as a YubiKey and sends GET VERSION; ykman, seeing a USB
// key, switches to extended-length APDUs.
var ATR = []byte{
	0x3B, 0xFD, 0x13, 0x00, 0x00, 0x81, 0x31, 0xFE, 0x15, 0x80, 0x73, 0xC0, 0x21, 0xC0,
	0x57, 0x59, 0x75, 0x62, 0x69, 0x4B, 0x65, 0x79, 0x40,
}

// maxATR is MAX_ATR_SIZE of pcsc-lite.
const maxATR = 33

// Options shape a new card. Zero values pick the defaults.
type Options struct {
	Serial                 uint32 // 0: random eight digits
	Version                piv.Version
	ManagementKeyAlgorithm piv.ManagementKeyAlgorithm // 0: AES-192 from firmware 5.7, else 3DES
	ATR                    []byte
	Touch                  piv.TouchFunc // nil: every touch is approved at once
}

// Device is a virtual YubiKey.
type Device struct {
	// Card is the card as readers see it: ATR, power, APDUs.
	Card *emulator.Card
	// PIV is the PIV applet. Hosts reach it through Card; calling its methods directly while a
	// host uses the card races with the card's commands (use Status).
	PIV *piv.Applet

	serial  uint32
	version piv.Version
	atr     []byte
	dir     *state.Dir
}

// Status reports the PIV applet's persistent state, taken between two commands.
func (d *Device) Status() piv.Status {
	var st piv.Status
	d.Card.Exclusive(func() { st = d.PIV.Status() })
	return st
}

// AttestationRoot returns the per-card root that issued the attestation certificate.
func (d *Device) AttestationRoot() []byte {
	var b []byte
	d.Card.Exclusive(func() { b = d.PIV.AttestationRoot() })
	return b
}

// Failed returns the save error that stopped the card, or nil. A stopped card answers its PIV
// commands 6581 until it is opened again from its state directory, which holds the truth.
func (d *Device) Failed() error {
	var err error
	d.Card.Exclusive(func() { err = d.PIV.Failed() })
	return err
}

// OnFail sets a function told, once, when a failed save stops the card (see Failed). It runs
// inside the card command that failed and must not block or use the card.
func (d *Device) OnFail(f func(error)) { d.Card.Exclusive(func() { d.PIV.OnFail(f) }) }

// formFactor is what the device reports in its attestations and device info: USB-A keychain.
const formFactor = 0x01

// Serial returns the card's serial number.
func (d *Device) Serial() uint32 { return d.serial }

// Version returns the firmware version the card reports.
func (d *Device) Version() piv.Version { return d.version }

// New returns a fresh card that lives in memory only.
func New(opts Options) (*Device, error) {
	return create(opts, nil)
}

// Init creates a fresh card in dir. It fails if dir already holds one, unless replace is set.
func Init(dir string, opts Options, replace bool) (*Device, error) {
	sd, err := state.Create(dir, replace)
	if err != nil {
		return nil, err
	}
	d, err := create(opts, sd)
	if err == nil {
		err = sd.Save(d.document(d.PIV.State()))
	}
	if err != nil {
		sd.Close()
		return nil, err
	}
	return d, nil
}

func create(opts Options, sd *state.Dir) (*Device, error) {
	d := &Device{serial: opts.Serial, version: opts.Version, atr: opts.ATR, dir: sd}
	if d.version == (piv.Version{}) {
		d.version = DefaultVersion
	}
	if d.atr == nil {
		d.atr = ATR
	}
	if len(d.atr) < 2 || len(d.atr) > maxATR {
		return nil, fmt.Errorf("yubikey: an ATR is 2 to %d bytes, not %d", maxATR, len(d.atr))
	}
	if d.serial == 0 {
		var b [4]byte
		rand.Read(b[:])
		d.serial = 10_000_000 + binary.BigEndian.Uint32(b[:])%90_000_000
	}
	alg := opts.ManagementKeyAlgorithm
	if alg == 0 {
		alg = piv.TDES
		if d.version.AtLeast(5, 7, 0) {
			alg = piv.AES192
		}
	}
	a, err := piv.New(d.pivConfig(opts.Touch), alg)
	if err != nil {
		return nil, err
	}
	d.PIV = a
	d.assemble()
	return d, nil
}

// assemble puts the applets on the card: PIV, and the management application ykman reads the
// device info from.
func (d *Device) assemble() {
	v := d.version
	m := &mgmt.Applet{Version: [3]byte{v.Major, v.Minor, v.Patch}, Serial: d.serial, FormFactor: formFactor}
	d.Card = emulator.New(d.atr, d.PIV, m)
}

// Open locks the state directory dir and loads its card; every change the card acknowledges is
// on disk first. touch approves touches (nil: always).
func Open(dir string, touch piv.TouchFunc) (*Device, error) {
	sd, doc, err := state.Open(dir)
	if err != nil {
		return nil, err
	}
	d, err := load(doc, touch, sd)
	if err != nil {
		sd.Close()
		return nil, fmt.Errorf("state: %s/%s: %w", dir, state.CardFile, err)
	}
	if sd.Migrating() {
		// A card of an older schema is rewritten before its first command: its counters could
		// otherwise change in the counters file alone, which an older binary does not read.
		if err := sd.Save(d.document(d.PIV.State())); err != nil {
			sd.Close()
			return nil, fmt.Errorf("state: %s: migrating to schema %d: %w", dir, state.SchemaVersion, err)
		}
	}
	return d, nil
}

// Read loads the card of dir into memory without locking it, for a look at its state; changes
// made to the returned device are not saved.
func Read(dir string) (*Device, error) {
	doc, err := state.Read(dir)
	if err != nil {
		return nil, err
	}
	d, err := load(doc, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("state: %s/%s: %w", dir, state.CardFile, err)
	}
	return d, nil
}

// Load builds an in-memory card from a state document, as a state directory holds it; changes
// to it are not saved. Tests and fuzzers use it to start every run from the same card.
func Load(doc *state.Card, touch piv.TouchFunc) (*Device, error) { return load(doc, touch, nil) }

// Document returns the card's state as a state directory would hold it.
func (d *Device) Document() *state.Card {
	var doc *state.Card
	d.Card.Exclusive(func() { doc = d.document(d.PIV.State()) })
	return doc
}

func load(doc *state.Card, touch piv.TouchFunc, sd *state.Dir) (*Device, error) {
	v, err := piv.ParseVersion(doc.Version)
	if err != nil {
		return nil, fmt.Errorf("version: %w", err)
	}
	if doc.Serial == 0 {
		return nil, errors.New("serial: 0 is not a serial number")
	}
	if len(doc.ATR) < 2 || len(doc.ATR) > maxATR {
		return nil, fmt.Errorf("atr: an ATR is 2 to %d bytes, not %d", maxATR, len(doc.ATR))
	}
	d := &Device{serial: doc.Serial, version: v, atr: doc.ATR, dir: sd}
	a, err := piv.Load(d.pivConfig(touch), &doc.PIV)
	if err != nil {
		return nil, err
	}
	d.PIV = a
	d.assemble()
	return d, nil
}

// pivConfig configures the PIV applet; with a state directory, every change is saved there
// before the card acknowledges it.
func (d *Device) pivConfig(touch piv.TouchFunc) piv.Config {
	cfg := piv.Config{Version: d.version, Serial: d.serial, FormFactor: formFactor, Keys: keystore.Software{}, Touch: touch}
	if d.dir != nil {
		cfg.Commit = func(st *state.PIV) error { return d.dir.Save(d.document(st)) }
		cfg.CommitCounters = func(pin, puk int) error {
			return d.dir.SaveCounters(d.serial, state.Counters{PIN: pin, PUK: puk})
		}
	}
	return cfg
}

func (d *Device) document(st *state.PIV) *state.Card {
	return &state.Card{Serial: d.serial, Version: d.version.String(), ATR: d.atr, PIV: *st}
}

// Close commits what the applet deferred (see piv.Applet.Flush) and releases the state
// directory.
func (d *Device) Close() error {
	if d.dir == nil {
		return nil
	}
	var err error
	d.Card.Exclusive(func() { err = d.PIV.Flush() })
	return errors.Join(err, d.dir.Close())
}
