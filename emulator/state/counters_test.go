package state

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func newCard(t *testing.T) (string, *Dir) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "card")
	d, err := Create(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	c := sample()
	c.PIV.PUK = Credential{Value: Hex("12345678"), Retries: 3, MaxRetries: 3}
	if err := d.Save(c); err != nil {
		t.Fatal(err)
	}
	return dir, d
}

func retries(t *testing.T, dir string) Counters {
	t.Helper()
	c, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	return Counters{c.PIV.PIN.Retries, c.PIV.PUK.Retries}
}

// The counters file overrides the document's counters; Open continues its sequence; the
// newest record of the two slots counts.
func TestCounters(t *testing.T) {
	dir, d := newCard(t)
	for i, c := range []Counters{{2, 3}, {1, 3}, {3, 3}, {3, 2}, {0, 1}} {
		if err := d.SaveCounters(7, c); err != nil {
			t.Fatal(err)
		}
		if got := retries(t, dir); got != c {
			t.Fatalf("after SaveCounters #%d: %+v, want %+v", i, got, c)
		}
	}
	d.Close()
	d, c, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if c.PIV.PIN.Retries != 0 || c.PIV.PUK.Retries != 1 {
		t.Errorf("Open: PIN %d PUK %d, want 0 and 1", c.PIV.PIN.Retries, c.PIV.PUK.Retries)
	}
	if err := d.SaveCounters(7, Counters{3, 3}); err != nil {
		t.Fatal(err)
	}
	if got := retries(t, dir); got != (Counters{3, 3}) {
		t.Errorf("after reopening and saving: %+v, want a newer record than before the reopening", got)
	}
	d.Close()
	if fi, err := os.Stat(filepath.Join(dir, CountersFile)); err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != countersSize {
		t.Errorf("counters file: %v, %v", fi, err)
	}
}

// A torn write damages one slot: the file reads as it was before that write.
func TestCountersTornWrite(t *testing.T) {
	dir, d := newCard(t)
	d.SaveCounters(7, Counters{2, 3}) // seq 2, slot 1 (Save wrote seq 1 to slot 0)
	d.SaveCounters(7, Counters{1, 3}) // seq 3, slot 0
	d.Close()
	name := filepath.Join(dir, CountersFile)
	b, _ := os.ReadFile(name)
	b[10] ^= 0xFF // the newest record, seq 3 in slot 0
	os.WriteFile(name, b, 0o600)
	if got := retries(t, dir); got != (Counters{2, 3}) {
		t.Errorf("with the newest record torn: %+v, want the one before, {2 3}", got)
	}
	b[slotOffset+20] ^= 0x01 // and the other
	os.WriteFile(name, b, 0o600)
	if _, err := Read(dir); err == nil || !strings.Contains(err.Error(), "counters: no valid record") {
		t.Errorf("both records damaged: %v, want an error naming the file", err)
	}
	os.WriteFile(name, b[:100], 0o600)
	if _, err := Read(dir); err == nil || !strings.Contains(err.Error(), "100 bytes") {
		t.Errorf("truncated counters: %v", err)
	}
}

// Counters never exceed the document's maximum; those of another card are not this card's.
func TestCountersBelongToTheDocument(t *testing.T) {
	dir, d := newCard(t)
	defer d.Close()
	if err := d.SaveCounters(7, Counters{200, 3}); err != nil {
		t.Fatal(err)
	}
	if got := retries(t, dir); got.PIN != 3 {
		t.Errorf("PIN counter %d above the maximum 3 was taken", got.PIN)
	}
	if err := d.SaveCounters(8, Counters{0, 0}); err != nil {
		t.Fatal(err)
	}
	if got := retries(t, dir); got != (Counters{3, 3}) {
		t.Errorf("counters of serial 8 applied to card 7: %+v", got)
	}
	if err := d.SaveCounters(7, Counters{-1, 3}); err == nil {
		t.Error("a negative counter was written")
	}
}

// A version 1 directory has no counters file: the document's counters count.
func TestCountersAbsent(t *testing.T) {
	dir := t.TempDir()
	b, err := os.ReadFile("testdata/card.json")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, CardFile), b, 0o600)
	c, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if c.PIV.PIN.Retries != 3 {
		t.Errorf("PIN retries %d", c.PIV.PIN.Retries)
	}
}

func FuzzDecodeCounters(f *testing.F) {
	good := make([]byte, countersSize)
	copy(good, record{seq: 5, serial: 7, c: Counters{2, 3}}.marshal())
	copy(good[slotOffset:], record{seq: 6, serial: 7, c: Counters{1, 3}}.marshal())
	f.Add(good)
	f.Add(make([]byte, countersSize))
	f.Add([]byte("tlctr"))
	f.Fuzz(func(t *testing.T, b []byte) {
		seq, _, c, err := DecodeCounters(b)
		if err != nil {
			return
		}
		if seq == 0 || c.PIN < 0 || c.PIN > 255 || c.PUK < 0 || c.PUK > 255 {
			t.Fatalf("accepted seq %d counters %+v", seq, c)
		}
		// The newest valid record wins: re-encoding it gives one of the two slots.
		r0, ok0 := parseRecord(b[:recordLen])
		r1, ok1 := parseRecord(b[slotOffset : slotOffset+recordLen])
		if !(ok0 && r0.seq == seq) && !(ok1 && r1.seq == seq) {
			t.Fatalf("seq %d is in neither slot", seq)
		}
		if (ok0 && r0.seq > seq) || (ok1 && r1.seq > seq) {
			t.Fatalf("seq %d is not the newest", seq)
		}
	})
}
