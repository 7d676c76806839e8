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
// The file has two record slots, in different disk sectors, written alternately; each record
// carries a sequence number and a CRC, and the newest valid one counts. A torn write damages
// only the slot being written, so the file then reads as its previous content: for the
// decrement before a comparison that means the comparison never happened (it waits for the
// write), and for a restore after a match it costs a try, never gives one back.
const CountersFile = "counters"

// Counters are the retry counters of the PIN and the PUK.
type Counters struct{ PIN, PUK int }

// Record layout: magic (8), sequence (8), card serial (4), PIN (1), PUK (1), zero (2), CRC-32C of
// the preceding 24 bytes (4); big-endian.
const (
	recordLen    = 28
	slotOffset   = 512 // the second slot, in the next sector
	countersSize = slotOffset + recordLen
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

func parseRecord(b []byte) (record, bool) {
	if len(b) != recordLen || [8]byte(b[:8]) != recordMagic || b[22] != 0 || b[23] != 0 ||
		binary.BigEndian.Uint32(b[24:]) != crc32.Checksum(b[:24], castagnoli) {
		return record{}, false
	}
	r := record{seq: binary.BigEndian.Uint64(b[8:]), serial: binary.BigEndian.Uint32(b[16:]),
		c: Counters{PIN: int(b[20]), PUK: int(b[21])}}
	return r, r.seq != 0
}

// DecodeCounters returns the newest valid record of a counters file's content.
func DecodeCounters(b []byte) (seq uint64, serial uint32, c Counters, err error) {
	if len(b) != countersSize {
		return 0, 0, Counters{}, fmt.Errorf("%d bytes, not %d", len(b), countersSize)
	}
	var best record
	for _, off := range []int{0, slotOffset} {
		if r, ok := parseRecord(b[off : off+recordLen]); ok && r.seq > best.seq {
			best = r
		}
	}
	if best.seq == 0 {
		return 0, 0, Counters{}, errors.New("no valid record in either copy")
	}
	return best.seq, best.serial, best.c, nil
}

// readCounters reads dir's counters file; ok is false when there is none.
func readCounters(dir string) (seq uint64, serial uint32, c Counters, ok bool, err error) {
	name := filepath.Join(dir, CountersFile)
	f, err := os.OpenFile(name, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, 0, Counters{}, false, nil
	}
	if err != nil {
		return 0, 0, Counters{}, false, fmt.Errorf("state: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, Counters{}, false, fmt.Errorf("state: %w", err)
	}
	if err := ownedByUs(name, fi); err != nil {
		return 0, 0, Counters{}, false, err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return 0, 0, Counters{}, false, fmt.Errorf("state: %s: permissions %04o are too open (chmod 600 %s)", name, perm, name)
	}
	if fi.Size() != countersSize {
		return 0, 0, Counters{}, false, fmt.Errorf("state: %s: %d bytes, not %d (damaged?)", name, fi.Size(), countersSize)
	}
	b := make([]byte, countersSize)
	if _, err := f.ReadAt(b, 0); err != nil {
		return 0, 0, Counters{}, false, fmt.Errorf("state: %s: %w", name, err)
	}
	seq, serial, c, err = DecodeCounters(b)
	if err != nil {
		return 0, 0, Counters{}, false, fmt.Errorf("state: %s: %w", name, err)
	}
	return seq, serial, c, true, nil
}

// applyCounters puts the counters of dir's counters file into c, when the file belongs to c's
// card. A counter never exceeds the document's maximum, which SET PIN RETRIES may have lowered
// just before a crash. It returns the file's sequence number.
func applyCounters(dir string, c *Card) (uint64, error) {
	seq, serial, ctr, ok, err := readCounters(dir)
	if err != nil || !ok {
		return 0, err
	}
	if serial != c.Serial {
		// Left by the card this one replaced (card init --force) before its first save.
		return seq, nil
	}
	apply(&c.PIV.PIN, ctr.PIN)
	apply(&c.PIV.PUK, ctr.PUK)
	return seq, nil
}

// apply sets a credential's counter from the counters file. A document whose own counter is
// out of range is left as it is, for the applet's validation to name.
func apply(cr *Credential, n int) {
	if cr.Retries >= 0 && cr.Retries <= cr.MaxRetries {
		cr.Retries = min(n, cr.MaxRetries)
	}
}

// SaveCounters writes the retry counters of card serial in place and waits until they are on
// disk. When it returns nil, a crash cannot bring back the previous counters.
func (d *Dir) SaveCounters(serial uint32, c Counters) error {
	if c.PIN < 0 || c.PIN > 255 || c.PUK < 0 || c.PUK > 255 {
		return fmt.Errorf("state: counters %+v out of range", c)
	}
	if err := d.openCounters(); err != nil {
		return err
	}
	r := record{seq: d.seq + 1, serial: serial, c: c}
	if d.counters == nil {
		// The first record: the file appears whole, at its final size, by an atomic replace.
		b := make([]byte, countersSize)
		copy(b, r.marshal())
		if err := replaceFile(d.path, CountersFile, b); err != nil {
			return err
		}
		d.seq = r.seq
		return d.openCounters()
	}
	off := int64(0)
	if r.seq%2 == 0 {
		off = slotOffset
	}
	if _, err := d.counters.WriteAt(r.marshal(), off); err != nil {
		return fmt.Errorf("state: %s: %w", CountersFile, err)
	}
	// The file's size never changes, so its data is all an fdatasync has to wait for.
	if err := unix.Fdatasync(int(d.counters.Fd())); err != nil {
		return fmt.Errorf("state: fdatasync %s: %w", CountersFile, err)
	}
	d.seq = r.seq
	return nil
}

// openCounters opens the counters file for writing when there is one, and learns its sequence
// number if Open did not (a card made over another's, say).
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
	b := make([]byte, countersSize+1)
	n, _ := f.ReadAt(b, 0)
	if seq, _, _, err := DecodeCounters(b[:n]); err == nil {
		d.seq = max(d.seq, seq)
	} else if n != countersSize {
		f.Close()
		return fmt.Errorf("state: %s: %w", name, err)
	}
	d.counters = f
	return nil
}
