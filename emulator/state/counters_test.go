package state

import (
	"bytes"
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

// Counters never exceed the document's maximum; those of another card are an error naming
// the file, not a reason to fall back on the document's.
func TestCountersBelongToTheDocument(t *testing.T) {
	dir, d := newCard(t)
	defer d.Close()
	if err := d.SaveCounters(7, Counters{200, 3}); err != nil {
		t.Fatal(err)
	}
	if got := retries(t, dir); got.PIN != 3 {
		t.Errorf("PIN counter %d above the maximum 3 was taken", got.PIN)
	}
	name := filepath.Join(dir, CountersFile)
	// What an interrupted card init --force of card 8 could leave beside card 7's document.
	os.WriteFile(name, marshalCounters(record{seq: 1, serial: 8, c: Counters{3, 3}}), 0o600)
	if _, err := Read(dir); err == nil || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "card 8, not of card 7") {
		t.Errorf("counters of card 8 beside card 7: %v, want an error naming the file and both cards", err)
	}
	// A record of another card beside this card's newest: not a file this package writes.
	b := marshalCounters(record{seq: 3, serial: 7, c: Counters{1, 3}})
	copy(b[slotOffset:], record{seq: 4, serial: 8, c: Counters{3, 3}}.marshal())
	os.WriteFile(name, b, 0o600)
	if _, err := Read(dir); err == nil || !strings.Contains(err.Error(), "not consecutive") {
		t.Errorf("records of two cards: %v", err)
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
	f.Add(goodCounters(countersSize, slotOffset))
	f.Add(goodCounters(legacyCountersSize, legacySlotOffset))
	f.Add(make([]byte, countersSize))
	f.Add([]byte("tlctr"))
	f.Fuzz(func(t *testing.T, b []byte) {
		seq, serial, c, err := DecodeCounters(b)
		if err != nil {
			return
		}
		if seq == 0 || c.PIN < 0 || c.PIN > 255 || c.PUK < 0 || c.PUK > 255 {
			t.Fatalf("accepted seq %d counters %+v", seq, c)
		}
		off := slotOffset
		if len(b) == legacyCountersSize {
			off = legacySlotOffset
		}
		// The newest valid record wins, from the slot its parity names; the other slot holds
		// nothing valid, or the save just before, of the same card.
		r0, ok0 := parseRecord(b[:recordLen], 0)
		r1, ok1 := parseRecord(b[off:off+recordLen], 1)
		best, other, okOther := r0, r1, ok1
		if slot(seq) == 1 {
			best, other, okOther = r1, r0, ok0
		}
		if !(ok0 && slot(seq) == 0 || ok1 && slot(seq) == 1) || best.seq != seq || best.serial != serial || best.c != c {
			t.Fatalf("seq %d is not the record in its slot", seq)
		}
		if okOther && (other.seq+1 != seq || other.serial != serial) {
			t.Fatalf("seq %d accepted beside record %d of card %d", seq, other.seq, other.serial)
		}
	})
}

func goodCounters(size, off int) []byte {
	b := make([]byte, size)
	copy(b, record{seq: 5, serial: 7, c: Counters{2, 3}}.marshal())
	copy(b[off:], record{seq: 6, serial: 7, c: Counters{1, 3}}.marshal())
	return b
}

// A schema 2 document without its counters file is an error naming the file: falling back on
// the document's counters could give tries back.
func TestSchemaTwoNeedsCounters(t *testing.T) {
	dir, d := newCard(t)
	d.Close()
	name := filepath.Join(dir, CountersFile)
	os.Remove(name)
	if _, err := Read(dir); err == nil || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "missing") {
		t.Errorf("schema 2 without counters: %v, want an error naming %s", err, name)
	}
	if _, _, err := Open(dir); err == nil {
		t.Error("Open accepted a schema 2 card without its counters")
	}
}

// The two slots lie in different 4 KiB blocks, so that a torn block holds one of them only.
func TestCountersSlotsInSeparateBlocks(t *testing.T) {
	dir, d := newCard(t)
	d.SaveCounters(7, Counters{2, 3})
	d.Close()
	b, err := os.ReadFile(filepath.Join(dir, CountersFile))
	if err != nil {
		t.Fatal(err)
	}
	first := bytes.Index(b, recordMagic[:])
	second := bytes.LastIndex(b, recordMagic[:])
	if first < 0 || first == second || first/4096 == second/4096 {
		t.Errorf("records at offsets %d and %d share a 4 KiB block", first, second)
	}
}

// A file of the first layout (slots 512 bytes apart) is read, and rewritten whole in the
// current one at the next save; a Create over any counters file does not read it.
func TestCountersLegacyLayout(t *testing.T) {
	dir, d := newCard(t)
	d.Close()
	name := filepath.Join(dir, CountersFile)
	legacy := make([]byte, legacyCountersSize)
	copy(legacy, record{seq: 9, serial: 7, c: Counters{1, 2}}.marshal())
	copy(legacy[legacySlotOffset:], record{seq: 10, serial: 7, c: Counters{2, 3}}.marshal())
	os.WriteFile(name, legacy, 0o600)
	d, c, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if c.PIV.PIN.Retries != 2 || c.PIV.PUK.Retries != 3 {
		t.Errorf("first layout read as %d %d, want 2 3 (seq 10)", c.PIV.PIN.Retries, c.PIV.PUK.Retries)
	}
	if err := d.SaveCounters(7, Counters{1, 3}); err != nil {
		t.Fatal(err)
	}
	d.Close()
	if fi, _ := os.Stat(name); fi.Size() != countersSize {
		t.Errorf("after a save the file has %d bytes, want the current layout's %d", fi.Size(), countersSize)
	}
	if got := retries(t, dir); got != (Counters{1, 3}) {
		t.Errorf("after the rewrite: %+v", got)
	}
}

// A schema 1 card is migrated by its first Save: counters file first, then the schema 2
// document. Until then SaveCounters refuses. A crash between the two steps leaves the schema 1
// document beside counters that can only lower its own.
func TestMigrationWritesCountersFirst(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "card")
	os.Mkdir(dir, 0o700)
	b, _ := os.ReadFile("testdata/card.json")
	doc := filepath.Join(dir, CardFile)
	os.WriteFile(doc, b, 0o600)
	d, c, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if !d.Migrating() {
		t.Fatal("a schema 1 card is not being migrated")
	}
	if err := d.SaveCounters(c.Serial, Counters{2, 3}); err == nil {
		t.Error("SaveCounters wrote counters beside a schema 1 document")
	}
	// The document cannot be replaced (a directory stands in its way): the step that fails
	// must be the second one.
	os.Rename(doc, doc+".saved")
	os.MkdirAll(filepath.Join(doc, "x"), 0o700)
	c.PIV.PIN.Retries = 2
	if err := d.Save(c); err == nil {
		t.Fatal("Save succeeded with a directory in the document's place")
	}
	if _, err := os.Stat(filepath.Join(dir, CountersFile)); err != nil {
		t.Fatalf("the counters were not written before the document: %v", err)
	}
	os.RemoveAll(doc)
	os.Rename(doc+".saved", doc)
	// What a crash there leaves: the schema 1 document with its 3 tries, counters saying 2.
	if got, err := Read(dir); err != nil || got.PIV.PIN.Retries != 2 {
		t.Errorf("schema 1 beside the migration's counters: %+v, %v, want 2 tries", got.PIV.PIN, err)
	}
	c.PIV.PIN.Retries = 2
	if err := d.Save(c); err != nil {
		t.Fatal(err)
	}
	if d.Migrating() {
		t.Error("still migrating after a Save")
	}
	if err := d.SaveCounters(c.Serial, Counters{1, 3}); err != nil {
		t.Errorf("SaveCounters after the migration: %v", err)
	}
	if got, err := Read(dir); err != nil || got.Schema != SchemaVersion || got.PIV.PIN.Retries != 1 {
		t.Errorf("after the migration: %+v, %v", got, err)
	}
}

// Beside a schema 1 document, counters (an older binary may have written the document after
// them) never raise the document's own.
func TestSchemaOneCountersOnlyLower(t *testing.T) {
	dir := t.TempDir()
	b, _ := os.ReadFile("testdata/card.json")
	b = bytes.Replace(b, []byte(`"retries": 3`), []byte(`"retries": 1`), 1)
	os.WriteFile(filepath.Join(dir, CardFile), b, 0o600)
	c, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, CountersFile), marshalCounters(record{seq: 1, serial: c.Serial, c: Counters{3, 3}}), 0o600)
	if c, err = Read(dir); err != nil || c.PIV.PIN.Retries != 1 {
		t.Errorf("schema 1 document with 1 try, counters with 3: %+v %v, want 1", c.PIV.PIN, err)
	}
}
