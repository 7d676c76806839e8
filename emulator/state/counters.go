package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// CountersFile holds the PIN and PUK retry counters apart from the card document, so that a
// VERIFY costs one small write and one fdatasync in place instead of a replace of the whole
// document (a temporary file, two fsyncs and a rename), twice.
//
// The file has two record slots, 4 KiB apart, written alternately: a record with an odd
// sequence number in the first, an even one in the second. Each record carries a CRC, and the
// newest valid one counts. A torn write damages only the slot being written, so the file then
// reads as its previous content: for the decrement before a comparison that means the
// comparison never happened (it waits for the write), and for a restore after a match it costs
// a try, never gives one back.
const CountersFile = "counters"

// Counters are the retry counters of the PIN and the PUK.
type Counters struct{ PIN, PUK int }

// Record layout: magic (8), sequence (8), card serial (4), PIN (1), PUK (1), zero (2), CRC-32C of
// the preceding 24 bytes (4); big-endian.
const (
	recordLen = 28
	// slotOffset puts the second slot in another 4 KiB block: a file system block, a page of
	// the page cache, the physical sector of a 4Kn or 512e disk. A disk that rewrites a 4 KiB
	// sector to change 512 bytes of it can tear the whole sector, which must hold one slot only.
	slotOffset   = 4096
	countersSize = slotOffset + recordLen
	// The first layout had its slots 512 bytes apart, in one block; it is read, and rewritten
	// whole in the current layout at the next save.
	legacySlotOffset   = 512
	legacyCountersSize = legacySlotOffset + recordLen
)

var (
	recordMagic = [8]byte{'t', 'l', 'c', 't', 'r', 0, 0, 1}
	castagnoli  = crc32.MakeTable(crc32.Castagnoli)
)

type record struct {
	seq    uint64
	serial uint32
	c      Counters
}

func (r record) marshal() []byte {
	b := make([]byte, recordLen)
	copy(b, recordMagic[:])
	binary.BigEndian.PutUint64(b[8:], r.seq)
	binary.BigEndian.PutUint32(b[16:], r.serial)
	b[20], b[21] = byte(r.c.PIN), byte(r.c.PUK)
	binary.BigEndian.PutUint32(b[24:], crc32.Checksum(b[:24], castagnoli))
	return b
}

// slot returns the slot a record with sequence number seq is written to: 0 for odd, 1 for even.
func slot(seq uint64) int { return int(1 - seq%2) }

// parseRecord checks the record in slot i: magic, padding, CRC, a non-zero sequence number
// whose parity belongs to the slot.
func parseRecord(b []byte, i int) (record, bool) {
	if len(b) != recordLen || [8]byte(b[:8]) != recordMagic || b[22] != 0 || b[23] != 0 ||
		binary.BigEndian.Uint32(b[24:]) != crc32.Checksum(b[:24], castagnoli) {
		return record{}, false
	}
	r := record{seq: binary.BigEndian.Uint64(b[8:]), serial: binary.BigEndian.Uint32(b[16:]),
		c: Counters{PIN: int(b[20]), PUK: int(b[21])}}
	return r, r.seq != 0 && slot(r.seq) == i
}

// marshalCounters returns a whole counters file holding r alone, in its slot.
func marshalCounters(r record) []byte {
	b := make([]byte, countersSize)
	copy(b[slot(r.seq)*slotOffset:], r.marshal())
	return b
}

// DecodeCounters returns the newest valid record of a counters file's content, in the current
// layout or the first one. Two valid records must be consecutive writes of one card: anything
// else is a file this package did not write, and is refused rather than half believed.
func DecodeCounters(b []byte) (seq uint64, serial uint32, c Counters, err error) {
	off := slotOffset
	switch len(b) {
	case countersSize:
	case legacyCountersSize:
		off = legacySlotOffset
	default:
		return 0, 0, Counters{}, fmt.Errorf("%d bytes, not %d", len(b), countersSize)
	}
	r0, ok0 := parseRecord(b[:recordLen], 0)
	r1, ok1 := parseRecord(b[off:off+recordLen], 1)
	var best record
	switch {
	case ok0 && ok1:
		if r0.serial != r1.serial || (r0.seq != r1.seq+1 && r1.seq != r0.seq+1) {
			return 0, 0, Counters{}, fmt.Errorf("records %d (card %d) and %d (card %d) are not consecutive saves of one card",
				r0.seq, r0.serial, r1.seq, r1.serial)
		}
		best = r0
		if r1.seq > r0.seq {
			best = r1
		}
	case ok0:
		best = r0
	case ok1:
		best = r1
	default:
		return 0, 0, Counters{}, errors.New("no valid record in either copy")
	}
	return best.seq, best.serial, best.c, nil
}

// countersRecord is what a counters file holds.
type countersRecord struct {
	seq    uint64
	serial uint32
	c      Counters
	legacy bool // in the first layout
}

// readCounters reads dir's counters file; ok is false when there is none.
func readCounters(dir string) (cr countersRecord, ok bool, err error) {
	name := filepath.Join(dir, CountersFile)
	f, err := os.OpenFile(name, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return cr, false, nil
	}
	if err != nil {
		return cr, false, fmt.Errorf("state: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return cr, false, fmt.Errorf("state: %w", err)
	}
	if err := ownedByUs(name, fi); err != nil {
		return cr, false, err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return cr, false, fmt.Errorf("state: %s: permissions %04o are too open (chmod 600 %s)", name, perm, name)
	}
	if fi.Size() != countersSize && fi.Size() != legacyCountersSize {
		return cr, false, fmt.Errorf("state: %s: %d bytes, not %d (damaged?)", name, fi.Size(), countersSize)
	}
	b := make([]byte, fi.Size())
	if _, err := f.ReadAt(b, 0); err != nil {
		return cr, false, fmt.Errorf("state: %s: %w", name, err)
	}
	cr.seq, cr.serial, cr.c, err = DecodeCounters(b)
	if err != nil {
		return cr, false, fmt.Errorf("state: %s: %w", name, err)
	}
	cr.legacy = len(b) == legacyCountersSize
	return cr, true, nil
}

// applyCounters puts the counters of dir's counters file into c, and returns what the file
// holds (nil: no counters apply).
//
// A schema 2 document has its counters only there: without the file, or with another card's
// (an interrupted card init --force), the document's own counters may be older and higher, so
// that is an error naming the file, never a silent reset. Beside a schema 1 document the file is
// a migration's first step, or an older binary's doing: the lower counter of the two counts.
// A counter never exceeds the document's maximum, which SET PIN RETRIES may have lowered just
// before a crash.
func applyCounters(dir string, c *Card) (*countersRecord, error) {
	name := filepath.Join(dir, CountersFile)
	cr, ok, err := readCounters(dir)
	if err != nil {
		return nil, err
	}
	if c.Schema < 2 {
		if !ok || cr.serial != c.Serial {
			return nil, nil
		}
		apply(&c.PIV.PIN, min(cr.c.PIN, c.PIV.PIN.Retries))
		apply(&c.PIV.PUK, min(cr.c.PUK, c.PIV.PUK.Retries))
		return &cr, nil
	}
	if !ok {
		return nil, fmt.Errorf("state: %s: missing: a schema %d card keeps its PIN and PUK retry counters there (restore the file, or start a new card with tokenlab card init --force)", name, c.Schema)
	}
	if cr.serial != c.Serial {
		return nil, fmt.Errorf("state: %s: holds the counters of card %d, not of card %d (an interrupted tokenlab card init --force? run it again)", name, cr.serial, c.Serial)
	}
	apply(&c.PIV.PIN, cr.c.PIN)
	apply(&c.PIV.PUK, cr.c.PUK)
	return &cr, nil
}

// apply sets a credential's counter from the counters file. A document whose own counter is
// out of range is left as it is, for the applet's validation to name.
func apply(cr *Credential, n int) {
	if cr.Retries >= 0 && cr.Retries <= cr.MaxRetries {
		cr.Retries = min(n, cr.MaxRetries)
	}
}

// SaveCounters writes the retry counters of card serial and waits until they are on disk. When
// it returns nil, a crash cannot bring back the previous counters.
func (d *Dir) SaveCounters(serial uint32, c Counters) error {
	if c.PIN < 0 || c.PIN > 255 || c.PUK < 0 || c.PUK > 255 {
		return fmt.Errorf("state: counters %+v out of range", c)
	}
	if d.created || d.schema1 {
		// A counters file beside a document that does not know of it would be missed by a
		// binary that reads the document alone.
		return fmt.Errorf("state: %s: the card is saved whole (Save) before its counters alone", d.path)
	}
	r := record{seq: d.seq + 1, serial: serial, c: c}
	if err := d.openCounters(); err != nil {
		return err
	}
	if d.counters == nil {
		// No file in the current layout: it appears whole, by an atomic replace.
		return d.replaceCounters(r)
	}
	if _, err := d.counters.WriteAt(r.marshal(), int64(slot(r.seq)*slotOffset)); err != nil {
		return fmt.Errorf("state: %s: %w", CountersFile, err)
	}
	// The file's size never changes, so its data is all an fdatasync has to wait for.
	if err := unix.Fdatasync(int(d.counters.Fd())); err != nil {
		return fmt.Errorf("state: fdatasync %s: %w", CountersFile, err)
	}
	d.seq = r.seq
	return nil
}

// replaceCounters replaces the counters file with one holding r alone.
func (d *Dir) replaceCounters(r record) error {
	d.closeCounters()
	if err := replaceFile(d.path, CountersFile, marshalCounters(r)); err != nil {
		return err
	}
	d.seq = r.seq
	return d.openCounters()
}

// openCounters opens the counters file for writing in place, when there is one in the current
// layout; Open has read and checked it.
func (d *Dir) openCounters() error {
	if d.counters != nil {
		return nil
	}
	name := filepath.Join(d.path, CountersFile)
	f, err := os.OpenFile(name, os.O_RDWR|unix.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("state: %w", err)
	}
	if fi.Size() != countersSize {
		f.Close() // the first layout, or damage Open would have named: replaced whole
		return nil
	}
	d.counters = f
	return nil
}

func (d *Dir) closeCounters() {
	if d.counters != nil {
		d.counters.Close()
		d.counters = nil
	}
}
